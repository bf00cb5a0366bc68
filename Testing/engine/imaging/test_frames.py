"""MedLVMLib.imaging.frames: windowing, slicing, resizing and tiling round trips."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from MedLVMLib.imaging.frames import (
    AXES,
    from_frames,
    resize_frames,
    tile_frames,
    to_frames,
    untile_frames,
    unwindow,
    window,
)


def smooth_frames(n=2, h=48, w=80, seed=0) -> np.ndarray:
    return ndimage.gaussian_filter(np.random.default_rng(seed).random((n, h, w)), (0, 3, 3)).astype(np.float32)


def test_window_maps_the_range_to_0_1_and_clips():
    hu = np.array([-2000.0, -1000.0, 0.0, 1000.0, 3000.0])
    assert np.allclose(window(hu, -1000, 1000), [0.0, 0.0, 0.5, 1.0, 1.0])
    assert window(hu).dtype == np.float32


def test_unwindow_inverts_window_inside_the_window():
    hu = np.linspace(-160.0, 240.0, 101, dtype=np.float32)
    assert np.allclose(unwindow(window(hu, -160, 240), -160, 240), hu, atol=1e-3)


@pytest.mark.parametrize("lo, hi", [(0, 0), (10, -10)])
def test_window_needs_lo_below_hi(lo, hi):
    with pytest.raises(ValueError, match="lo < hi"):
        window(np.zeros(3), lo, hi)


@pytest.mark.parametrize("axis, frame_shape", [("axial", (6, 7)), ("coronal", (5, 7)), ("sagittal", (5, 6))])
def test_to_frames_round_trip_is_exact(axis, frame_shape):
    volume = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    frames = to_frames(volume, axis)
    assert frames.shape[1:] == frame_shape
    assert np.array_equal(from_frames(frames, axis), volume)


@pytest.mark.parametrize("axis", ["coronal", "sagittal"])
def test_coronal_and_sagittal_frames_put_superior_on_top(axis):
    volume = np.zeros((5, 6, 7), dtype=np.float32)
    volume[-1] = 1.0  # the most superior slice (largest z index)
    frames = to_frames(volume, axis)
    assert frames[:, 0].min() == 1.0 and frames[:, 1:].max() == 0.0


def test_axial_frames_keep_rows_anterior_to_posterior():
    volume = np.zeros((2, 6, 7), dtype=np.float32)
    volume[:, 0] = 1.0  # y index 0 = most anterior in LPS
    assert to_frames(volume, "axial")[:, 0].min() == 1.0


def test_unknown_axis():
    with pytest.raises(ValueError, match="axis must be one of"):
        to_frames(np.zeros((2, 2, 2)), "oblique")


@pytest.mark.parametrize("size, max_error", [((256, 256), 0.005), ((96, 160), 0.005), ((24, 40), 0.02)])
def test_resize_round_trip_has_a_bounded_error(size, max_error):
    """Smooth frames (value range ~0.2) up- or down-sampled and back: errors stay a few % of the range."""
    frames = smooth_frames()
    back = resize_frames(resize_frames(frames, size), frames.shape[1:])
    assert back.shape == frames.shape
    assert np.abs(back - frames).max() < max_error
    assert np.abs(back - frames).mean() < max_error / 4


def test_resize_nearest_keeps_label_values():
    labels = np.zeros((1, 40, 40), dtype=np.uint8)
    labels[0, 10:30, 5:20] = 3
    labels[0, 12:18, 25:35] = 6
    out = resize_frames(labels, (256, 256), order=0)
    assert set(np.unique(out)) == {0, 3, 6}
    assert np.array_equal(resize_frames(out, (40, 40), order=0), labels)


def test_resize_to_the_same_size_is_a_copy():
    frames = smooth_frames()
    out = resize_frames(frames, frames.shape[1:])
    assert np.array_equal(out, frames) and out is not frames


@pytest.mark.parametrize("shape, tile, overlap", [((50, 70), 32, 8), ((64, 64), 32, 0), ((20, 30), 32, 8),
                                                  ((512, 512), 256, 32)])
def test_untile_of_unchanged_tiles_is_exact(shape, tile, overlap):
    frames = np.random.default_rng(1).random((2,) + shape).astype(np.float32)
    tiles = tile_frames(frames, tile, overlap)
    assert tiles.tiles.shape[2:] == (tile, tile)
    assert np.allclose(untile_frames(tiles.tiles, tiles.layout), frames, atol=1e-6)


def test_tiles_cover_every_pixel_and_blend_seams():
    frames = np.zeros((1, 64, 96), dtype=np.float32)
    tiles = tile_frames(frames, 32, 8)
    edited = tiles.tiles + np.arange(tiles.tiles.shape[1], dtype=np.float32)[None, :, None, None]
    out = untile_frames(edited, tiles.layout)
    assert out.min() >= 0 and out.max() <= tiles.tiles.shape[1] - 1
    assert len(np.unique(out)) > tiles.tiles.shape[1]  # overlaps hold blends, not hard seams


def test_tile_overlap_must_be_smaller_than_the_tile():
    with pytest.raises(ValueError, match="overlap"):
        tile_frames(np.zeros((1, 8, 8)), 8, 8)


def test_axes_constant():
    assert AXES == ("axial", "coronal", "sagittal")
