"""The format/size shortcut probe: its pixel traces, its classifier, and the format/size-only ablation."""

import io

import numpy as np
import pytest
from PIL import Image

import genimages as gen


def _jpeg(rgb, quality):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_traces_see_jpeg_blocks_and_upscaling():
    from gcage_fast.training.shortcuts import TRACE_FEATURES, trace_features

    rgb = gen.photo_like(224, 224, 3)
    plain, blocky = trace_features(rgb), trace_features(_jpeg(rgb, 60))
    assert len(plain) == len(TRACE_FEATURES)
    assert blocky[0] > plain[0] + 0.1 and blocky[1] > plain[1] + 0.1  # the 8×8 grid, both axes
    noise = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    up = np.asarray(Image.fromarray(noise[:112, :112]).resize((224, 224), Image.BICUBIC))
    assert trace_features(up)[3] < 0.5 * trace_features(noise)[3]  # upscaling empties the high frequencies


def test_file_features_read_the_format_from_the_content():
    from gcage_fast.training.shortcuts import FILE_FEATURES, file_features

    data = gen.encode(gen.photo_like(64, 32, 1), "PNG")
    f = dict(zip(FILE_FEATURES, file_features(data)))
    assert f["is_png"] == 1 and f["is_jpeg"] == 0 and f["log2_width"] == 6 and f["log2_height"] == 5
    assert f["bits_per_pixel"] == pytest.approx(8 * len(data) / (64 * 32))


def test_probe_separates_a_shortcut_and_not_noise():
    from gcage_fast.training.shortcuts import probe_auc

    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(150), np.ones(150)]
    shortcut = np.c_[y + 0.3 * rng.standard_normal(300), rng.standard_normal(300)]
    order = rng.permutation(300)
    tr, te = order[:200], order[200:]
    assert probe_auc(shortcut[tr], y[tr], shortcut[te], y[te])["roc_auc"] > 0.95
    noise = rng.standard_normal((300, 3))
    r = probe_auc(noise[tr], y[tr], noise[te], y[te])
    assert r["ci_low"] < 0.5 < r["ci_high"] and (r["n_train"], r["n_test"]) == (200, 100)


def test_format_size_pairs_differ_only_in_format_and_size(tmp_path):
    from gcage_fast.evaluation.datasets import load_labelled
    from gcage_fast.training.shortcuts import format_size_pairs

    root = gen.make_labelled_set(tmp_path / "d", n_per_class=3, seed=2, size=700)
    items = load_labelled(root).items
    pairs, splits = format_size_pairs(items, tmp_path / "pairs")
    assert len(pairs) == 2 * len(items) and splits[0::2] == splits[1::2]
    small, large = (Image.open(p.path) for p in pairs[:2])
    assert (small.format, large.format) == ("JPEG", "PNG") and [p.label for p in pairs[:2]] == [0, 1]
    assert max(small.size) == 512 and large.size == (700, 700)


def test_format_size_ablation_rows(tmp_path):
    from gcage_fast.evaluation.datasets import load_labelled
    from gcage_fast.training.shortcuts import format_size_ablation
    from gcage_fast.training.views import ViewRecipe

    root = gen.make_labelled_set(tmp_path / "d", n_per_class=12, seed=3, size=640)
    result = format_size_ablation(load_labelled(root).items, tmp_path / "work", {"views": ViewRecipe(views=2)},
                                  test_split="train")
    rows = result["rows"]
    assert result["images"] == 24 and set(rows) == {"file", "patches", "views"}
    assert rows["file"]["roc_auc"] == 1.0  # the two copies differ in format and size: the files give it away
    assert rows["patches"]["roc_auc"] > 0.9  # so do the unmodified patches (JPEG blocks, sharper small copies)
    assert rows["views"]["ci_low"] < 0.5 < rows["views"]["ci_high"]  # the views do not
