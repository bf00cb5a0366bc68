"""The model's working grid and the warp of a native image by a field on a coarser grid."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from MedLVMLib.errors import MedLVMError
from MedLVMLib.imaging import frames, registration, resample
from MedLVMLib.imaging.volume import Geometry

FLIPPED = Geometry(spacing=(0.8, 1.1, 2.5), origin=(10.0, -5.0, 3.0), direction=(1, 0, 0, 0, -1, 0, 0, 0, 1))


def smooth_image(shape=(20, 30, 40), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (ndimage.gaussian_filter(rng.normal(size=shape), 2) * 3000).astype(np.float32)


def smooth_field(shape, seed=1, mm=6.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=tuple(shape) + (3,)), (3, 3, 3, 0))
    return (field / np.abs(field).max() * mm).astype(np.float32)


def corners_mm(grid: resample.Grid) -> np.ndarray:
    """Physical positions of the outer voxel edges (the field of view) along the three index axes."""
    spacing = np.asarray(grid.geometry.spacing)
    direction = np.asarray(grid.geometry.direction).reshape(3, 3)
    size = np.asarray(grid.shape[::-1], dtype=float)
    lower = np.asarray(grid.geometry.origin) - direction @ (spacing / 2)
    return np.stack([lower, lower + direction @ (spacing * size)])


@pytest.mark.parametrize("axis, expected", [("coronal", (64, 64, 64)), ("sagittal", (64, 64, 64)),
                                             ("axial", (76, 64, 64))])
def test_working_grid_of_a_clinical_ct(axis, expected):
    # 99 x 256 x 256 voxels of 3 x 0.98 x 0.98 mm (z, y, x): in-plane 64 voxels of 4.6 / 3.9 mm, and slices
    # no finer than the finest of those (3.9 mm: 251 mm / 3.9 = 64 coronal slices, 297 mm / 3.9 = 76 axial)
    native = resample.Grid((99, 256, 256), Geometry(spacing=(0.98, 0.98, 3.0)))
    grid = resample.working_grid(native, axis, 64)
    assert grid.shape == expected
    np.testing.assert_allclose(corners_mm(grid), corners_mm(native), atol=1e-6)  # same field of view


def test_a_grid_already_at_the_model_resolution_is_kept():
    native = resample.Grid((48, 64, 64), Geometry(spacing=(1.5, 1.5, 2.0)))
    for axis in ("coronal", "sagittal", "axial"):
        assert resample.working_grid(native, axis, 64).shape == native.shape


def test_grid_over_keeps_the_field_of_view_with_flipped_axes():
    native = resample.Grid((20, 30, 40), FLIPPED)
    np.testing.assert_allclose(corners_mm(resample.grid_over(native, (7, 11, 13))), corners_mm(native), atol=1e-6)


def test_resampled_volume_gives_the_frames_the_model_would_have_made():
    volume = smooth_image((30, 50, 70))
    on_grid = resample.resample(volume, (16, 25, 16))  # in-plane (z, x) to 16 x 16, coronal slices 50 -> 25
    native_frames = frames.resize_frames(np.ascontiguousarray(frames.to_frames(volume, "coronal")), (16, 16))
    grid_frames = frames.to_frames(on_grid, "coronal")
    # the two differ only by the slice axis, which we compare by resampling the native frames along it
    along = ndimage.zoom(native_frames, (25 / 50, 1, 1), order=1, mode="nearest", grid_mode=True, prefilter=False)
    np.testing.assert_allclose(grid_frames, along, atol=1e-2)


def test_warp_on_the_same_grid_matches_registration_warp_inside():
    image, native = smooth_image(), resample.Grid((20, 30, 40), FLIPPED)
    field = smooth_field(native.shape)
    expected = registration.warp(image, field, FLIPPED, order=1)
    got = resample.warp_with_field(image, field, native, native)
    inner = (slice(3, -3),) * 3  # outside points: edge clamping differs from ITK's nearest-voxel extrapolation
    np.testing.assert_allclose(got[inner], expected[inner], atol=0.05)
    assert np.abs(got - image).max() > 100  # the field really moved the image


def test_a_coarse_field_is_interpolated_at_every_native_voxel():
    image, native = smooth_image(), resample.Grid((20, 30, 40), FLIPPED)
    coarse = resample.grid_over(native, (8, 10, 12))
    field = smooth_field(coarse.shape, mm=4.0)
    upsampled = np.stack([resample.resample(field[..., c], native.shape) for c in range(3)], axis=-1)
    expected = registration.warp(image, upsampled, FLIPPED, order=1)
    got = resample.warp_with_field(image, field, native, coarse)
    inner = (slice(3, -3),) * 3
    np.testing.assert_allclose(got[inner], expected[inner], atol=0.05)


def test_warp_in_slabs_equals_one_slab(monkeypatch):
    image, native = smooth_image(), resample.Grid((20, 30, 40), FLIPPED)
    field = smooth_field(native.shape)
    whole = resample.warp_with_field(image, field, native, native)
    monkeypatch.setattr(resample, "WARP_CHUNK_VOXELS", 30 * 40 * 3)  # 3 slices a slab
    np.testing.assert_array_equal(resample.warp_with_field(image, field, native, native), whole)


def test_warp_stays_within_the_image_values():
    image = np.where(smooth_image() > 0, 40.0, -1000.0).astype(np.float32)
    native = resample.Grid(image.shape, FLIPPED)
    out = resample.warp_with_field(image, smooth_field(image.shape, mm=9.0), native, native)
    assert out.min() >= -1000.0 and out.max() <= 40.0


def test_mismatched_shapes_are_refused():
    image, native = smooth_image(), resample.Grid((20, 30, 40), FLIPPED)
    with pytest.raises(MedLVMError, match="field"):
        resample.warp_with_field(image, np.zeros((20, 30, 40, 2), np.float32), native, native)
    with pytest.raises(MedLVMError, match="grid"):
        resample.warp_with_field(image[:5], np.zeros((20, 30, 40, 3), np.float32), native, native)
    with pytest.raises(MedLVMError, match="axis"):
        resample.working_grid(native, "oblique", 64)
