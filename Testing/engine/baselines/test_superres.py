"""Interpolation baselines and slab downsampling: grids, exact cases, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from MedLVMLib.baselines import superres
from MedLVMLib.errors import MedLVMError
from MedLVMLib.evaluation import metrics
from MedLVMLib.imaging.volume import Geometry

ROTATED = Geometry(spacing=(0.7, 0.9, 1.25), origin=(-30.0, 12.0, 40.0), direction=(0, -1, 0, 1, 0, 0, 0, 0, 1))


@pytest.mark.parametrize("factor", [2, 3, 4])
@pytest.mark.parametrize("axis", ["z", "xy", "xyz"])
def test_upsample_of_downsample_lands_on_the_original_grid(factor, axis):
    volume = np.random.default_rng(0).normal(size=(12, 12, 12)).astype(np.float32)
    low = superres.downsample(volume, ROTATED, factor, axis)
    high = superres.upsample(low.array, low.geometry, factor, axis, method="nearest")
    assert high.array.shape == volume.shape
    assert high.geometry.is_close(ROTATED)
    # nearest neighbour repeats each slab mean over the voxels it averaged
    axes = superres.AXES[axis]
    expected = low.array
    for a in axes:
        expected = np.repeat(expected, factor, axis=a)
    np.testing.assert_allclose(high.array, expected, atol=1e-5)


def test_downsample_averages_slabs_and_drops_the_rest():
    volume = np.arange(7, dtype=np.float32)[:, None, None] * np.ones((7, 2, 3), np.float32)
    geometry = Geometry(spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 10.0))
    low = superres.downsample(volume, geometry, 3, "z")
    np.testing.assert_allclose(low.array[:, 0, 0], [1.0, 4.0])
    assert low.geometry.spacing == (1.0, 1.0, 6.0)
    assert low.geometry.origin == pytest.approx((0.0, 0.0, 12.0))  # centre of slices 0-2


@pytest.mark.parametrize("method", ["linear", "cubic"])
def test_linear_and_cubic_reproduce_a_ramp_inside(method):
    z = np.arange(24, dtype=np.float32)
    volume = np.broadcast_to(5.0 * z[:, None, None], (24, 4, 4)).copy()  # linear in z
    low = superres.downsample(volume, ROTATED, 2, "z")
    high = superres.SUPERRES_BASELINES[method](low.array, low.geometry, 2, "z")
    inner = slice(2, -2) if method == "linear" else slice(6, -6)  # B-spline edges use mirrored data
    np.testing.assert_allclose(high.array[inner], volume[inner], atol=0.05 if method == "linear" else 0.2)


def test_interpolation_beats_nearest_on_a_smooth_volume():
    zz, yy, xx = np.indices((32, 16, 16))
    volume = (400 * np.sin(zz / 4.0) * np.cos(yy / 5.0)).astype(np.float32)
    low = superres.downsample(volume, Geometry(), 4, "z")
    errors = {
        name: metrics.mae(fn(low.array, low.geometry, 4, "z").array, volume)
        for name, fn in superres.SUPERRES_BASELINES.items()
    }
    assert errors["linear"] < errors["nearest"] and errors["cubic"] < errors["nearest"]


def test_origin_alignment_keeps_first_slice_centre():
    shape, geometry = superres.upsampled_grid((5, 8, 8), ROTATED, 2.5, "z", align="origin")
    assert shape == (11, 8, 8)
    assert geometry.origin == ROTATED.origin
    assert geometry.spacing == pytest.approx((0.7, 0.9, 0.5))
    out = superres.upsample(np.zeros((5, 8, 8)), ROTATED, 2.5, "z", align="origin")
    assert out.array.shape == (11, 8, 8)


@pytest.mark.parametrize(
    "call",
    [
        lambda: superres.upsample(np.zeros((4, 4, 4)), Geometry(), 0.5),
        lambda: superres.upsample(np.zeros((4, 4)), Geometry(), 2),
        lambda: superres.upsample(np.zeros((4, 4, 4)), Geometry(), 2, axis="y"),
        lambda: superres.upsample(np.zeros((4, 4, 4)), Geometry(), 2, method="lanczos"),
        lambda: superres.upsample(np.zeros((4, 4, 4)), Geometry(), 2, align="corner"),
        lambda: superres.downsample(np.zeros((4, 4, 4)), Geometry(), 1.5),
        lambda: superres.downsample(np.zeros((2, 4, 4)), Geometry(), 3),
    ],
)
def test_bad_input_raises(call):
    with pytest.raises(MedLVMError):
        call()
