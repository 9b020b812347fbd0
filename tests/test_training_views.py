"""The shortcut-free view protocol, pooled datasets with sources, balanced weights and the frozen-trunk path."""

import numpy as np
import pytest

import genimages as gen
from helpers import run_cli


def test_view_is_one_patch_and_seeded():
    from gcage_fast.training.views import ViewRecipe, make_view

    rgb = np.random.default_rng(0).integers(0, 256, (301, 517, 3), dtype=np.uint8)
    recipe = ViewRecipe()
    a = [make_view(rgb, recipe, np.random.default_rng(5)) for _ in range(2)]
    assert a[0][0].shape == (224, 224, 3) and a[0][0].dtype == np.uint8
    assert np.array_equal(a[0][0], a[1][0]) and a[0][1] == a[1][1]
    metas = [make_view(rgb, recipe, np.random.default_rng(s))[1] for s in range(40)]
    assert all(q == 0 or 65 <= q <= 100 for _, q, _ in metas)
    assert {q == 0 for _, q, _ in metas} == {True, False}
    assert min(f for f, _, _ in metas) >= 224 / 301 - 1e-6  # never below one patch


@pytest.mark.parametrize("kw, message", [
    ({"scale": (2.0, 1.0)}, "scale range must satisfy 0 < low <= high, got (2.0, 1.0)"),
    ({"jpeg_quality": (0, 90)}, "JPEG quality range must lie in 1..100, got (0, 90)"),
])
def test_recipe_rejects_bad_ranges(kw, message):
    from gcage_fast.training.views import ViewRecipe

    with pytest.raises(ValueError) as exc:
        ViewRecipe(**kw)
    assert str(exc.value) == message


def test_scan_patches_repeat_the_last_for_small_images():
    from gcage_fast.training.views import scan_patches

    rgb = np.zeros((230, 240, 3), np.uint8)
    assert scan_patches(rgb, 5, "floor").shape == (5, 224, 224, 3)


def test_balanced_weights_golden():
    from gcage_fast.training.frozen import balanced_weights

    w = balanced_weights(np.array([0, 0, 0, 1, 1, 1, 1]), [["a", "a", "b", "x", "x", "x", "y"]])
    assert np.allclose(w, [0.875, 0.875, 1.75, 7 / 12, 7 / 12, 7 / 12, 1.75])


def test_pool_prefixes_relpaths_and_names_sources(tmp_path):
    from gcage_fast.errors import InputError
    from gcage_fast.evaluation.datasets import load_pool

    a = gen.make_labelled_set(tmp_path / "one", n_per_class=2, seed=1)
    b = gen.make_labelled_set(tmp_path / "two", n_per_class=2, seed=2)
    ds = load_pool([a, b])
    assert len(ds.items) == 8
    assert {i.source for i in ds.items} == {"one", "two"}
    assert all(i.relpath.split("/")[0] in ("one", "two") for i in ds.items)
    (tmp_path / "x").mkdir()
    c = gen.make_labelled_set(tmp_path / "x" / "one", n_per_class=1, seed=3)
    with pytest.raises(InputError, match="two datasets share a folder name"):
        load_pool([a, c])


def test_view_cache_is_per_image_and_skips_broken_files(tmp_path):
    from gcage_fast.evaluation.datasets import load_labelled
    from gcage_fast.training.views import ViewCache, ViewRecipe

    root = gen.make_labelled_set(tmp_path / "d", n_per_class=3, seed=4)
    (root / "real" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    items = load_labelled(root).items
    recipe = ViewRecipe(views=2)
    kw = dict(recipe=recipe, top_k=5, grid="cover", seed=0, workers=0)
    first = ViewCache.build(items, [i.label for i in items], tmp_path / "c", **kw)
    again = ViewCache.build(items, [i.label for i in items], tmp_path / "c", **kw)
    assert len(first) == 2 * (len(items) - 1) and first.meta.shape == (len(first), 3)
    assert np.array_equal(first.patches, again.patches) and np.array_equal(first.image, again.image)
    assert len(list(first.store.glob("*.err"))) == 1


def test_train_base_cli_checks_protocol_options(tmp_path):
    root = gen.make_labelled_set(tmp_path / "d", n_per_class=4, seed=5)
    out = tmp_path / "m"
    bad = run_cli("train-base", root, "-o", out, "--freeze-trunk", check=False)
    assert bad.returncode != 0 and "--freeze-trunk keeps the trunk as it starts: give --pretrained or --init" in bad.stderr
    bad = run_cli("train-base", root, "-o", out, "--views", "2", "--blur", "0.1", check=False)
    assert bad.returncode == 2 and "with --views use --rescale, --reencode" in bad.stderr
    bad = run_cli("train-base", root, "-o", out, "--hold-out", "nowhere", "--workers", "0", check=False)
    assert bad.returncode != 0 and "--hold-out 'nowhere' is not a source of" in bad.stderr


def test_frozen_trunk_training_on_views(tmp_path):
    root = gen.make_labelled_set(tmp_path / "d", n_per_class=12, seed=6)
    common = ["--workers", "0", "--threads", "2", "--quiet", "--views", "2", "--balance", "source-generator"]
    run_cli("train-base", root, "-o", tmp_path / "init", "--width", "8", "--hidden", "16", "--epochs", "1",
            "--workers", "0", "--threads", "2", "--quiet", "--max-images", "8")
    run_cli("train-base", root, "-o", tmp_path / "frozen", "--init", tmp_path / "init", "--freeze-trunk",
            "--width", "8", "--hidden", "16", "--epochs", "2", "--lr", "1e-3", *common)
    from safetensors.numpy import load_file

    a, b = (load_file(str(tmp_path / d / "base.safetensors")) for d in ("init", "frozen"))
    trunk = [k for k in a if not k.startswith("mlp.")]
    assert trunk and all(np.array_equal(a[k], b[k]) for k in trunk)  # the trunk did not move
    assert any(not np.array_equal(a[k], b[k]) for k in a if k.startswith("mlp."))
    assert list((tmp_path / "frozen" / "cache").glob("views-*-f*"))
