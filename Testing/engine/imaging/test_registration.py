"""Demons registration, warping and label propagation on small synthetic shapes."""

from __future__ import annotations

import time

import numpy as np
import pytest

from MedLVMLib.errors import MedLVMError
from MedLVMLib.evaluation import metrics
from MedLVMLib.imaging import registration
from MedLVMLib.imaging.volume import Geometry

ROTATED = Geometry(spacing=(1.0, 1.0, 2.0), origin=(3.0, 4.0, 5.0), direction=(0, 1, 0, -1, 0, 0, 0, 0, 1))


def ball(shape, centre, radius) -> np.ndarray:
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) < radius**2


def hu(mask: np.ndarray) -> np.ndarray:
    return np.where(mask, 0.0, -1000.0).astype(np.float32)


def test_warp_with_constant_field_is_a_shift():
    image = np.arange(6 * 8 * 10, dtype=np.float32).reshape(6, 8, 10)
    field = np.zeros((6, 8, 10, 3), np.float32)
    field[..., 0] = 2.0  # +2 mm along x = 2 columns with unit spacing: out(p) = image(p + 2x)
    out = registration.warp(image, field)
    np.testing.assert_allclose(out[:, :, :8], image[:, :, 2:])
    np.testing.assert_allclose(out[:, :, 8:], image[:, :, 9:10].repeat(2, axis=2))  # edge extrapolation
    labels = (image > 200).astype(np.uint8)
    assert registration.warp(labels, field, order=0).dtype == np.uint8


def test_warp_respects_direction_and_spacing():
    image = np.zeros((8, 8, 8), np.float32)
    image[4, 4, 5] = 1.0
    field = np.zeros((8, 8, 8, 3), np.float32)
    field[..., 1] = -3.0  # physical -y; with ROTATED, index +x maps to physical -y (1 mm columns)
    out = registration.warp(image, field, ROTATED, order=0, default_value=0)
    assert out[4, 4, 5 - 3] == 1.0 and out.sum() == 1.0  # out(p) = image(p + 3 columns)


@pytest.mark.parametrize("method", ["symmetric", "diffeomorphic"])
def test_register_recovers_shift_of_a_ball(method):
    shape = (32, 40, 40)
    fixed, moving = ball(shape, (16, 20, 20), 8), ball(shape, (18, 20, 23), 8)
    start = time.perf_counter()
    field = registration.register(hu(fixed), hu(moving), ROTATED, method=method)
    assert time.perf_counter() - start < 20
    assert field.shape == shape + (3,) and field.dtype == np.float32
    # index shift (x=3 columns, z=2 slices) -> physical (0, -3, +4) mm with ROTATED
    np.testing.assert_allclose(field[16, 20, 20], [0.0, -3.0, 4.0], atol=1.2)
    warped = registration.warp(hu(moving), field, ROTATED)
    assert metrics.mae(warped, hu(fixed)) < 0.35 * metrics.mae(hu(moving), hu(fixed))


def test_capped_levels_coarsen_only_grids_over_the_cap():
    spacing = (1.0, 1.0, 2.0)  # x, y, z: the z axis shrinks half as fast
    assert registration.capped_levels((32, 40, 40), spacing, 10**6) == (4, 2, 1)
    levels = registration.capped_levels((100, 256, 256), spacing, 2_000_000)
    assert levels == (8, 4, 2)  # level 2 shrinks (x, y, z) by (2, 2, 1): 100 x 128 x 128 = 1.6 M voxels
    assert registration.capped_levels((100, 256, 256), spacing, 500_000) == (16, 8, 4)  # 50 x 64 x 64
    tiny = registration.capped_levels((16, 16, 16), spacing, 1)  # every axis at its 8-voxel floor
    assert min(tiny) >= 2 and registration._factors(np.array(spacing), np.array([16, 16, 16]), min(tiny)) == [2, 2, 2]
    with pytest.raises(MedLVMError, match="max_voxels"):
        registration.capped_levels((16, 16, 16), spacing, 0)


def test_register_stopping_at_a_coarse_level_still_recovers_the_shift():
    shape = (32, 40, 40)
    fixed, moving = ball(shape, (16, 20, 20), 8), ball(shape, (18, 20, 23), 8)
    levels = registration.capped_levels(shape, ROTATED.spacing, 10_000)
    assert min(levels) > 1
    field = registration.register(hu(fixed), hu(moving), ROTATED, levels=levels)
    assert field.shape == shape + (3,)  # resampled to the full grid
    np.testing.assert_allclose(field[16, 20, 20], [0.0, -3.0, 4.0], atol=1.5)


@pytest.mark.parametrize("mode", ["per-label", "nearest"])
def test_propagate_labels_follows_the_anatomy(mode):
    shape = (24, 32, 32)
    fixed, moving = ball(shape, (12, 16, 16), 7), ball(shape, (12, 19, 14), 7)
    labels = moving.astype(np.uint8) * 3
    out = registration.propagate_labels(labels, hu(moving), hu(fixed), (1.0, 1.0, 1.5), mode=mode)
    assert set(np.unique(out)) <= {0, 3}
    assert metrics.dice(out == 3, fixed) > 0.9 > metrics.dice(moving, fixed)


def test_register_2d():
    fixed, moving = ball((40, 40), (20, 20), 9), ball((40, 40), (23, 18), 9)
    field = registration.register(hu(fixed), hu(moving), (0.8, 0.8))
    assert field.shape == (40, 40, 2)
    warped = registration.warp(moving.astype(np.uint8), field, (0.8, 0.8), order=0)
    assert metrics.dice(warped, fixed) > 0.9


@pytest.mark.parametrize(
    "call",
    [
        lambda: registration.register(np.zeros((8, 8, 8)), np.zeros((8, 8, 9))),
        lambda: registration.register(np.zeros((8, 8, 8)), np.zeros((8, 8, 8)), method="bspline"),
        lambda: registration.warp(np.zeros((4, 4, 4)), np.zeros((4, 4, 4, 2))),
        lambda: registration.warp(np.zeros((4, 4, 4)), np.zeros((4, 4, 4, 3)), order=2),
        lambda: registration.warp(np.zeros((4, 4)), np.zeros((4, 4, 2)), ROTATED),
    ],
)
def test_bad_input_raises(call):
    with pytest.raises(MedLVMError):
        call()
