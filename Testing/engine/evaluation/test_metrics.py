"""Metrics against hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from MedLVMLib.errors import MedLVMError
from MedLVMLib.evaluation import metrics
from MedLVMLib.imaging.volume import Geometry


def cube(shape=(20, 20, 20), start=(5, 5, 5), size=6) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    z, y, x = start
    mask[z : z + size, y : y + size, x : x + size] = 1
    return mask


@pytest.mark.parametrize(
    "shift, expected",
    [
        ((0, 0, 0), 1.0),
        ((0, 0, 1), 2 * 5 / 12),  # 6x6x5 overlap of two 6^3 cubes: 2*180/432
        ((0, 0, 3), 2 * 3 / 12),
        ((1, 1, 0), 2 * 25 / 72),
        ((0, 0, 6), 0.0),
    ],
)
def test_dice_of_shifted_cube(shift, expected):
    a = cube()
    b = cube(start=tuple(5 + s for s in shift))
    assert metrics.dice(a, b) == pytest.approx(expected)


def test_dice_empty_masks():
    empty = np.zeros((4, 4, 4), bool)
    assert metrics.dice(empty, empty) == 1.0
    assert metrics.dice(empty, cube((4, 4, 4), (0, 0, 0), 2)) == 0.0


@pytest.mark.parametrize(
    "offset_zyx, spacing_xyz",
    [((0, 0, 3), (1.0, 1.0, 1.0)), ((2, 0, 0), (0.8, 0.8, 2.5)), ((1, 2, 3), (0.7, 1.1, 3.0))],
)
def test_hd95_single_voxels_is_their_distance(offset_zyx, spacing_xyz):
    a = np.zeros((8, 8, 8), bool)
    b = np.zeros_like(a)
    a[2, 2, 2] = True
    b[2 + offset_zyx[0], 2 + offset_zyx[1], 2 + offset_zyx[2]] = True
    expected = math.sqrt(sum((o * s) ** 2 for o, s in zip(offset_zyx, spacing_xyz[::-1])))
    assert metrics.hd95(a, b, spacing_xyz) == pytest.approx(expected)
    assert metrics.hd95(a, b, Geometry(spacing=spacing_xyz)) == pytest.approx(expected)


def test_hd95_matches_brute_force_on_shifted_cube():
    a = cube((16, 16, 16), (4, 4, 4), 6)
    b = cube((16, 16, 16), (6, 4, 5), 6)
    spacing = (0.9, 1.2, 2.0)  # x, y, z
    pts_a = np.argwhere(metrics.surface(a)) * np.array(spacing[::-1])
    pts_b = np.argwhere(metrics.surface(b)) * np.array(spacing[::-1])
    d = np.linalg.norm(pts_a[:, None] - pts_b[None], axis=-1)
    expected = np.percentile(np.concatenate([d.min(1), d.min(0)]), 95)
    assert metrics.hd95(a, b, spacing) == pytest.approx(expected)
    assert metrics.hd95(a, a, spacing) == 0.0


@pytest.mark.parametrize("corner", [(0, 0, 0), (10, 10, 10)])
def test_hd95_of_masks_at_the_array_edge_matches_brute_force(corner):
    # the bounding-box crop must keep the array edge's surface voxels and every distance
    a = cube((16, 16, 16), corner, 6)
    b = cube((16, 16, 16), tuple(max(0, c - 2) if c else c + 1 for c in corner), 5)
    spacing = (0.9, 1.2, 2.0)
    pts_a = np.argwhere(metrics.surface(a)) * np.array(spacing[::-1])
    pts_b = np.argwhere(metrics.surface(b)) * np.array(spacing[::-1])
    d = np.linalg.norm(pts_a[:, None] - pts_b[None], axis=-1)
    assert metrics.hd95(a, b, spacing) == pytest.approx(np.percentile(np.concatenate([d.min(1), d.min(0)]), 95))


def test_hd95_concentric_spheres_is_radius_difference():
    z, y, x = np.mgrid[:41, :41, :41] - 20.0
    r = np.sqrt(z**2 + y**2 + x**2)
    assert metrics.hd95(r <= 8, r <= 14) == pytest.approx(6.0, abs=1.0)


def test_hd95_empty_is_nan():
    assert math.isnan(metrics.hd95(np.zeros((5, 5, 5)), cube((5, 5, 5), (1, 1, 1), 2)))


def test_centroid_error_with_anisotropic_spacing_and_rotation():
    # direction: x axis of the index maps to -y physical, y index to +x: a 90 degree in-plane rotation
    geometry = Geometry(spacing=(0.5, 2.0, 3.0), origin=(10.0, -5.0, 7.0), direction=(0, 1, 0, -1, 0, 0, 0, 0, 1))
    a = cube((20, 20, 20), (2, 3, 4), 4)
    b = cube((20, 20, 20), (5, 3, 8), 4)  # shift dz=3 slices, dx=4 columns
    assert metrics.centroid_error_mm(a, b, geometry) == pytest.approx(math.hypot(3 * 3.0, 4 * 0.5))
    centre = metrics.centroid_mm(a, geometry)
    index_xyz = np.array([4 + 1.5, 3 + 1.5, 2 + 1.5])
    expected = np.array([10.0, -5.0, 7.0]) + np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]]) @ (index_xyz * [0.5, 2, 3])
    np.testing.assert_allclose(centre, expected)
    assert math.isnan(metrics.centroid_error_mm(a, np.zeros_like(a), geometry))


def test_mae_rmse_inside_mask():
    a = np.zeros((4, 4, 4), np.float32)
    b = a.copy()
    b[0] = 10.0  # 16 voxels off by 10
    b[1, 0, 0] = -30.0
    assert metrics.mae(a, b) == pytest.approx((16 * 10 + 30) / 64)
    assert metrics.rmse(a, b) == pytest.approx(math.sqrt((16 * 100 + 900) / 64))
    mask = np.zeros_like(a, bool)
    mask[1] = True
    assert metrics.mae(a, b, mask) == pytest.approx(30 / 16)
    assert metrics.rmse(a, b, mask) == pytest.approx(math.sqrt(900 / 16))


@pytest.mark.parametrize("error, window", [(10.0, (-1000, 1000)), (20.0, (-160, 240)), (1.0, (0, 100))])
def test_psnr_of_constant_error(error, window):
    a = np.full((6, 6, 6), 30.0)
    expected = 10 * math.log10((window[1] - window[0]) ** 2 / error**2)
    assert metrics.psnr(a, a + error, window) == pytest.approx(expected)
    assert metrics.psnr(a, a, window) == math.inf


def test_psnr_clips_to_window():
    a = np.full((3, 3, 3), 1500.0)
    assert metrics.psnr(a, a + 400.0, (-1000, 1000)) == math.inf  # both above the window


def test_ssim_identical_and_degraded():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1000, 1000, (10, 12, 12))
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    noisy = a + rng.normal(0, 300, a.shape)
    value = metrics.ssim(a, noisy)
    assert 0.0 < value < 0.9
    mask = np.zeros(a.shape, bool)
    mask[2:8] = True
    assert metrics.ssim(a, a, mask=mask) == pytest.approx(1.0)
    assert metrics.ssim(a[:4], a[:4]) == pytest.approx(1.0)  # short axis: smaller window


@pytest.mark.parametrize(
    "call",
    [
        lambda: metrics.dice(np.zeros((2, 2)), np.zeros((2, 3))),
        lambda: metrics.hd95(np.ones((2, 2, 2)), np.ones((2, 2, 2)), (1.0, 1.0)),
        lambda: metrics.psnr(np.zeros(3), np.zeros(3), (5, 5)),
        lambda: metrics.mae(np.zeros(3), np.zeros(3), np.ones(4)),
    ],
)
def test_bad_input_raises(call):
    with pytest.raises(MedLVMError):
        call()
