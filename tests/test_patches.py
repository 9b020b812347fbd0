"""A3: patch grid, grayscale, contrast and top-k against an independent GLCM computation."""

import numpy as np
import pytest
import torch

from gcage_fast.scoring.patches import PATCH, contrast_sums, grayscale, pad_to_patch, select


def torchvision_gray(rgb: np.ndarray) -> np.ndarray:
    """torchvision's rgb_to_grayscale on a uint8 tensor: float32 weighted sum, cast back to uint8."""
    t = torch.from_numpy(rgb).permute(2, 0, 1)
    r, g, b = t.unbind(dim=-3)
    return (0.2989 * r + 0.587 * g + 0.114 * b).to(t.dtype).numpy()


def glcm(patch: np.ndarray, distance: int = 5) -> tuple[float, int, int]:
    """GLCM contrast the long way: 256x256 co-occurrence counts at (distance, angle 0), symmetric, normed.

    Returns (float contrast, exact numerator, exact denominator) of sum P(i,j) (i-j)^2.
    """
    a = patch[:, :-distance].ravel().astype(np.int64)
    b = patch[:, distance:].ravel().astype(np.int64)
    m = np.zeros((256, 256), dtype=np.int64)
    np.add.at(m, (a, b), 1)
    m = m + m.T
    i, j = np.indices(m.shape)
    p = m / m.sum()
    return float((p * (i - j) ** 2).sum()), int((m * (i - j) ** 2).sum()), int(m.sum())


def independent_selection(rgb: np.ndarray, top_k: int):
    gray = torchvision_gray(rgb)
    h, w = gray.shape
    num_x, num_y = w // PATCH, h // PATCH
    entries = []
    for i in range(num_x):
        for j in range(num_y):
            k = i * num_y + j
            c, num, den = glcm(gray[j * PATCH:(j + 1) * PATCH, i * PATCH:(i + 1) * PATCH])
            entries.append((k, c, num, den, (i * PATCH, j * PATCH)))
    # exact order: compare num/den by cross-multiplication via Python fractions of integers
    from fractions import Fraction

    order = sorted(entries, key=lambda e: (-Fraction(e[2], e[3]), e[0]))[:top_k]
    return order, len(entries)


def test_grayscale_is_torchvision_truncating():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(512, 1024, 3), dtype=np.uint8)
    rgb[0, :8] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [1, 2, 3], [254, 253, 252],
                  [128, 128, 128]]
    np.testing.assert_array_equal(grayscale(rgb), torchvision_gray(rgb))


@pytest.mark.parametrize("seed,size", [(0, (448, 672)), (1, (700, 500)), (2, (300, 1500)), (3, (1000, 231)),
                                       (4, (224, 224))])
def test_selection_matches_independent_glcm(seed, size):
    rng = np.random.default_rng(seed)
    h, w = size
    # mix of noise levels so contrasts differ across patches
    rgb = (rng.random((h, w, 3)) * rng.uniform(5, 255, size=(h, 1, 1))).astype(np.uint8)
    for top_k in (1, 5, 1000):
        sel = select(rgb, top_k)
        order, n_total = independent_selection(rgb, top_k)
        assert sel.n_total == n_total
        assert sel.indices.tolist() == [e[0] for e in order]
        assert [tuple(b) for b in sel.boxes.tolist()] == [e[4] for e in order]
        for c_ours, e in zip(sel.contrast, order):
            assert abs(c_ours - e[1]) <= 1e-9 * e[1]


def test_grid_is_column_major_and_drops_remainders():
    # 3 columns x 2 rows of patches plus remainders; patch (i, j) holds a stripe of amplitude v(i, j) at period 10
    h, w = 2 * PATCH + 50, 3 * PATCH + 70
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    amp = {(0, 0): 10, (0, 1): 60, (1, 0): 30, (1, 1): 90, (2, 0): 50, (2, 1): 20}
    cols = (np.arange(PATCH) // 5) % 2
    for (i, j), v in amp.items():
        rgb[j * PATCH:(j + 1) * PATCH, i * PATCH:(i + 1) * PATCH] = (cols * v)[None, :, None]
    rng = np.random.default_rng(0)
    rgb[2 * PATCH:, :] = rng.integers(0, 256, size=(50, w, 3))  # huge contrast in the dropped bottom strip
    rgb[:, 3 * PATCH:] = rng.integers(0, 256, size=(h, 70, 3))  # and in the dropped right strip
    sel = select(rgb, 6)
    expected = sorted(amp, key=lambda ij: -amp[ij])
    assert sel.indices.tolist() == [i * 2 + j for i, j in expected]  # k = i * num_y + j
    assert [tuple(b) for b in sel.boxes.tolist()] == [(i * PATCH, j * PATCH) for i, j in expected]
    gray_amp = {ij: int(torchvision_gray(np.full((1, 1, 3), v, np.uint8))[0, 0]) for ij, v in amp.items()}
    np.testing.assert_allclose(sel.contrast, [gray_amp[ij] ** 2 for ij in expected])


def test_ties_break_by_lower_index():
    tile = np.random.default_rng(7).integers(0, 256, size=(PATCH, PATCH, 3), dtype=np.uint8)
    rgb = np.tile(tile, (3, 4, 1))  # 12 identical patches
    sel = select(rgb, 5)
    assert sel.indices.tolist() == [0, 1, 2, 3, 4]
    assert len(set(sel.contrast.tolist())) == 1


def test_contrast_sums_are_exact_for_extreme_values():
    rgb = np.zeros((PATCH, PATCH, 3), dtype=np.uint8)
    rgb[:, ::10] = 255  # many 255-steps; the per-patch sum overflows int32
    sums = contrast_sums(grayscale(rgb))
    _, num, den = glcm(grayscale(rgb))
    assert sums.dtype == np.int64
    assert sums[0] * den == num * (PATCH * (PATCH - 5))


@pytest.mark.parametrize("shape,padded,expected", [((100, 150), True, (224, 224)), ((224, 500), False, (224, 500)),
                                                   ((300, 100), True, (300, 224)), ((1, 1), True, (224, 224))])
def test_small_images_are_edge_padded(shape, padded, expected):
    rgb = np.random.default_rng(0).integers(0, 256, size=shape + (3,), dtype=np.uint8)
    out, was_padded = pad_to_patch(rgb)
    assert was_padded is padded and out.shape[:2] == expected
    np.testing.assert_array_equal(out[: shape[0], : shape[1]], rgb)
    if padded:
        assert (out[-1, -1] == rgb[-1, -1]).all()  # edge replicate
