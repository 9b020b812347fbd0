"""``--grid floor|cover``: the patch grid's geometry and order (gcage_fast.scoring.patches), the selection on real
arrays (host and device path), and a scan end to end: border patches in the rows, n_patches_total, run.json and
the refused resume with another grid."""

import importlib.util
import io
import json

import numpy as np
import pytest
from PIL import Image

from gcage_fast.config import ScanConfig
from gcage_fast.errors import ConfigError
from gcage_fast.scoring.patches import (DISTANCE, PATCH, contrast_sums, grayscale, grid_boxes, grid_origins,
                                        grid_shape, select)
from helpers import read_rows, run_cli

P = PATCH
SIZES = (224, 225, 447, 448, 449, 1000, 2239, 4000)


def _covered(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Per axis, which coordinates some patch covers (the grid is a product, so a pixel (x, y) is covered iff
    its x is covered by a column and its y by a row)."""
    cx, cy = np.zeros(width, bool), np.zeros(height, bool)
    for x, y in boxes:
        cx[x:x + P] = True
        cy[y:y + P] = True
    return cx, cy


@pytest.mark.parametrize("width", SIZES)
@pytest.mark.parametrize("height", SIZES)
def test_cover_covers_every_pixel_and_floor_drops_the_remainders(width, height):
    cover = grid_boxes(height, width, grid="cover")
    num_x, num_y = grid_shape(height, width, grid="cover")
    assert cover.shape == (num_x * num_y, 2) and cover.dtype == np.int32
    assert num_x == width // P + (width % P != 0) and num_y == height // P + (height % P != 0)
    assert (cover >= 0).all() and (cover[:, 0] + P <= width).all() and (cover[:, 1] + P <= height).all()
    cx, cy = _covered(cover, width, height)
    assert cx.all() and cy.all()
    assert (cover[:, 0].max() + P == width) and (cover[:, 1].max() + P == height)  # a patch at each far edge

    floor = grid_boxes(height, width)
    assert grid_shape(height, width) == (width // P, height // P)
    fx, fy = _covered(floor, width, height)
    assert fx.sum() == width // P * P and fy.sum() == height // P * P  # the remainders stay uncovered
    assert not fx[width // P * P:].any() and not fy[height // P * P:].any()
    # cover is the floor grid plus the border column/row: every floor box is in it
    assert {tuple(b) for b in floor} <= {tuple(b) for b in cover}


@pytest.mark.parametrize("width,height", [(224, 224), (449, 1000), (2239, 447), (4000, 225)])
def test_column_major_order_and_floor_boxes_as_before(width, height):
    xs, ys = grid_origins(height, width, grid="cover")
    boxes = grid_boxes(height, width, grid="cover")
    num_y = len(ys)
    for k, (x, y) in enumerate(boxes):
        assert (x, y) == (xs[k // num_y], ys[k % num_y])  # k = i * num_y + j over the extended grid
    assert xs == sorted(xs) and ys == sorted(ys)
    np.testing.assert_array_equal(boxes, grid_boxes(height, width, grid="cover"))
    # floor: exactly SuSy's x = P*i, y = P*j with k = i * num_y + j, as it always was
    fy = height // P
    k = np.arange((width // P) * fy)
    legacy = np.stack([(k // fy) * P, (k % fy) * P], axis=1).astype(np.int32)
    np.testing.assert_array_equal(grid_boxes(height, width), legacy)


def _brute_sum(gray: np.ndarray, x: int, y: int) -> int:
    g = gray[y:y + P, x:x + P].astype(np.int64)
    d = g[:, DISTANCE:] - g[:, :-DISTANCE]
    return int((d * d).sum())


def _legacy_select(rgb: np.ndarray, top_k: int):
    """The floor selection as it was before ``--grid`` (the reference the floor path must equal)."""
    gray = grayscale(rgb)
    num_x, num_y = rgb.shape[1] // P, rgb.shape[0] // P
    sums = np.zeros((num_x, num_y), dtype=np.int64)
    for j in range(num_y):
        strip = gray[j * P:(j + 1) * P, : num_x * P].astype(np.int32).reshape(P, num_x, P)
        d = strip[:, :, DISTANCE:] - strip[:, :, :-DISTANCE]
        sums[:, j] = (d * d).sum(axis=(0, 2), dtype=np.int64)
    sums = sums.reshape(-1)
    order = np.lexsort((np.arange(len(sums)), -sums))[:top_k]
    boxes = np.stack([(order // num_y) * P, (order % num_y) * P], axis=1).astype(np.int32)
    return order, boxes, sums[order].astype(np.float64) / float(P * (P - DISTANCE)), len(sums)


@pytest.mark.parametrize("height,width", [(225, 447), (449, 300), (500, 700), (448, 672)])
def test_select_on_real_arrays(height, width):
    rng = np.random.default_rng(height * 10_000 + width)
    rgb = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    rgb[:, width - 40:] = rng.integers(0, 256, size=(height, 40, 3), dtype=np.uint8) // 4 * 4
    gray = grayscale(rgb)
    boxes = grid_boxes(height, width, grid="cover")
    sums = contrast_sums(gray, grid="cover")
    assert sums.tolist() == [_brute_sum(gray, x, y) for x, y in boxes]
    sel = select(rgb, 1000, grid="cover")
    assert sel.n_total == len(boxes) == int(np.prod(grid_shape(height, width, grid="cover")))
    assert sorted(sel.indices.tolist()) == list(range(len(boxes)))
    np.testing.assert_array_equal(sel.boxes, boxes[sel.indices])
    assert sel.boxes.dtype == np.int32
    exp = sorted(range(len(sums)), key=lambda k: (-sums[k], k))
    assert sel.indices.tolist() == exp
    again = select(rgb, 3, grid="cover")
    np.testing.assert_array_equal(again.boxes, select(rgb, 3, grid="cover").boxes)
    np.testing.assert_array_equal(again.boxes, sel.boxes[:3])
    # floor: identical to the selection before --grid existed
    order, lboxes, lcontrast, n = _legacy_select(rgb, 5)
    floor = select(rgb, 5)
    assert floor.indices.tolist() == order.tolist() and floor.n_total == n
    np.testing.assert_array_equal(floor.boxes, lboxes)
    np.testing.assert_array_equal(floor.contrast, lcontrast)
    assert floor.boxes.dtype == lboxes.dtype


def test_ties_go_to_the_lower_k_under_cover():
    flat = np.full((300, 500, 3), 77, dtype=np.uint8)
    sel = select(flat, 100, grid="cover")
    assert sel.indices.tolist() == list(range(sel.n_total)) and sel.n_total == 3 * 2
    assert sel.boxes.tolist() == [[0, 0], [0, 76], [224, 0], [224, 76], [276, 0], [276, 76]]


def test_bad_grid_is_refused():
    with pytest.raises(ConfigError) as exc:
        ScanConfig(inputs=("x",), output="o", grid="x").validate()
    assert str(exc.value) == "unknown --grid 'x'; choose floor or cover"
    with pytest.raises(ValueError):
        grid_boxes(300, 300, grid="ceil")
    ScanConfig(inputs=("x",), output="o", grid="cover").validate()


def test_device_path_selects_the_cover_grid(tiny_model_dir):
    pytest.importorskip("torch")
    from gcage_fast.engine.torch_runner import TorchRunner
    from gcage_fast.export.graphs import BASE_INPUT, HEAD_INPUT, HEAD_OUTPUTS, base_graph, base_output_names, head_graph
    from gcage_fast.models.registry import load_model
    from gcage_fast.scoring.device import DeviceScorer

    model = load_model(str(tiny_model_dir))
    cam = model.spec.cam
    base = TorchRunner(base_graph(model, cam.method, cam.target, cam.layer), BASE_INPUT, base_output_names(False))
    head = TorchRunner(head_graph(model), HEAD_INPUT, HEAD_OUTPUTS)
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in [(300, 460, 3), (224, 448, 3), (449, 230, 3)]]
    images[0][:, :P] = 9  # a flat column: ties to the lower k
    with base, head:
        for grid in ("cover", "floor"):
            dev = DeviceScorer(model.spec, base, head, 0.5, batch_size=4, kernel_impl="reference", top_k=4,
                               grid=grid)
            for res, rgb in zip(dev.run(images), images):
                ref = select(rgb, 4, grid=grid)
                np.testing.assert_array_equal(res.selection.boxes, ref.boxes)
                np.testing.assert_array_equal(res.selection.indices, ref.indices)
                np.testing.assert_array_equal(res.selection.contrast, ref.contrast)
                assert res.selection.n_total == ref.n_total


# ------------------------------------------------------------------------------------------ the CLI, end to end
def _png(width: int, height: int, seed: int, border: bool) -> bytes:
    """A flat grey image; with ``border``, noise in the right remainder (x >= 224), which only cover sees."""
    rgb = np.full((height, width, 3), 120, dtype=np.uint8)
    if border:
        rng = np.random.default_rng(seed)
        rgb[:, P:] = rng.integers(0, 256, size=(height, width - P, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture()
def src(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    (d / "a_border.png").write_bytes(_png(300, 260, 1, True))  # cover: 2 x 2 patches, floor 1 x 1
    (d / "b_exact.png").write_bytes(_png(448, 224, 2, False))  # a multiple of 224: both grids 2 x 1
    (d / "c_border.png").write_bytes(_png(250, 230, 3, True))
    return d


def _by_name(rows):
    return {r["path"].rsplit("/", 1)[-1]: r for r in rows}


def test_scan_with_cover_reaches_the_edge_and_resume_with_another_grid_is_refused(src, tmp_path, tiny_model_dir):
    out = tmp_path / "cover"
    args = ["scan", src, "-o", out, "--model", tiny_model_dir, "--workers", "0", "--shard-size", "1", "--top-k", "2",
            "--grid", "cover", "--quiet"]
    killed = run_cli(*args, env={"GCAGE_FAULT_AT": "image:1"}, check=False)
    assert killed.returncode == -9
    refused = run_cli(*[a for a in args if a not in ("--grid", "cover")], "--resume", check=False)
    assert refused.returncode == 1
    assert "cannot resume with different settings (grid: was 'cover', now None)" in refused.stderr
    run_cli(*args, "--resume")
    run_cli("verify", out)
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["grid"] == "cover" and info["fingerprint"]["grid"] == "cover"

    rows = _by_name(read_rows(out, ["path", "status", "width", "height", "n_patches_total", "patches"]))
    assert {r["status"] for r in rows.values()} == {"ok"}
    a, b, c = rows["a_border.png"], rows["b_exact.png"], rows["c_border.png"]
    assert (a["n_patches_total"], b["n_patches_total"], c["n_patches_total"]) == (4, 2, 4)
    # the noisy border only lies in the shifted column: the top patch sits at the right edge
    assert a["patches"][0]["x"] + P == a["width"] == 300
    assert c["patches"][0]["x"] + P == c["width"] == 250
    for r in rows.values():
        for p in r["patches"]:
            assert p["x"] + P <= r["width"] and p["y"] + P <= r["height"]

    # the device path (named kernels, here on CPU tensors) selects the same cover patches
    if importlib.util.find_spec("torch") is not None:
        dev = tmp_path / "device"
        run_cli("scan", src, "-o", dev, "--model", tiny_model_dir, "--workers", "0", "--top-k", "2", "--grid", "cover",
                "--kernel-impl", "reference", "--quiet")
        drows = _by_name(read_rows(dev, ["path", "n_patches_total", "patches"]))
        for name, r in rows.items():
            assert drows[name]["n_patches_total"] == r["n_patches_total"]
            assert [(p["x"], p["y"]) for p in drows[name]["patches"]] == [(p["x"], p["y"]) for p in r["patches"]]

    floor = tmp_path / "floor"
    run_cli("scan", src, "-o", floor, "--model", tiny_model_dir, "--workers", "0", "--top-k", "2", "--quiet")
    frows = _by_name(read_rows(floor, ["path", "n_patches_total", "patches"]))
    assert [frows[n]["n_patches_total"] for n in sorted(frows)] == [1, 2, 1]
    assert all(p["x"] % P == 0 and p["y"] % P == 0 for r in frows.values() for p in r["patches"])
    finfo = json.loads((floor / "run.json").read_text())
    assert finfo["config"]["grid"] == "floor" and "grid" not in finfo["fingerprint"]
    # a floor run resumed with --grid cover is refused as well
    res = run_cli("scan", src, "-o", floor, "--model", tiny_model_dir, "--workers", "0", "--top-k", "2",
                  "--grid", "cover", "--resume", "--quiet", check=False)
    assert res.returncode == 1
    assert "cannot resume with different settings (grid: was None, now 'cover')" in res.stderr


def test_cli_bad_grid_and_help(src, tmp_path, tiny_model_dir):
    res = run_cli("scan", src, "-o", tmp_path / "o", "--model", tiny_model_dir, "--grid", "x", check=False)
    assert res.returncode == 1 and res.stderr.strip() == "Error: unknown --grid 'x'; choose floor or cover"
    assert not (tmp_path / "o").exists()
    data = tmp_path / "data"
    (data / "ai").mkdir(parents=True)
    (data / "real").mkdir()
    res = run_cli("eval", data, "--model", tiny_model_dir, "--grid", "x", check=False)
    assert res.returncode == 1 and res.stderr.strip() == "Error: unknown --grid 'x'; choose floor or cover"
    for cmd in ("scan", "eval"):
        text = " ".join(run_cli(cmd, "--help").stdout.split())
        assert "--grid floor|cover" in text and "every pixel is in some patch" in text
