"""Volumes <-> 2D frames for the image model: HU windowing, slicing, resizing, tiling (numpy + scipy only).

Orientation of the frames (for an axis-aligned volume [Z, Y, X] in LPS, i.e. identity direction), chosen
so that frames look like the radiological views a clinician reads:
  axial     frame z    = vol[z]          rows: anterior -> posterior, columns: patient right -> left
  coronal   frame y    = vol[::-1, y, :] rows: superior -> inferior,  columns: patient right -> left
  sagittal  frame x    = vol[::-1, :, x] rows: superior -> inferior,  columns: anterior -> posterior
Coronal and sagittal frames flip Z so that superior is at the top of the image. `from_frames` undoes
exactly what `to_frames` does, so the round trip is exact.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

AXES = ("axial", "coronal", "sagittal")


def window(hu: np.ndarray, lo: float = -1000.0, hi: float = 1000.0) -> np.ndarray:
    """HU -> [0, 1] (float32): `lo` -> 0, `hi` -> 1, values outside clipped."""
    if hi <= lo:
        raise ValueError(f"window needs lo < hi, got lo={lo}, hi={hi}")
    scaled = (np.asarray(hu, dtype=np.float32) - np.float32(lo)) / np.float32(hi - lo)
    return np.clip(scaled, 0.0, 1.0)


def unwindow(x: np.ndarray, lo: float = -1000.0, hi: float = 1000.0) -> np.ndarray:
    """[0, 1] -> HU (float32); inverse of `window` inside the window."""
    if hi <= lo:
        raise ValueError(f"unwindow needs lo < hi, got lo={lo}, hi={hi}")
    return np.asarray(x, dtype=np.float32) * np.float32(hi - lo) + np.float32(lo)


def _check_axis(axis: str) -> None:
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")


def to_frames(volume: np.ndarray, axis: str = "axial") -> np.ndarray:
    """A volume [Z, Y, X] as 2D frames [N, H, W] along `axis` (see the module docstring for orientation).

    Returns a view of `volume` (no copy; use np.ascontiguousarray before handing it to torch).
    """
    _check_axis(axis)
    if volume.ndim != 3:
        raise ValueError(f"to_frames needs a [Z, Y, X] volume, got shape {volume.shape}")
    if axis == "axial":
        return volume  # (Z, Y, X)
    if axis == "coronal":
        return volume[::-1].transpose(1, 0, 2)  # (Y, Z, X), Z flipped: superior at the top
    return volume[::-1].transpose(2, 0, 1)  # (X, Z, Y), Z flipped


def from_frames(frames: np.ndarray, axis: str = "axial") -> np.ndarray:
    """Frames [N, H, W] from `to_frames(volume, axis)` back to the volume [Z, Y, X] (exact inverse)."""
    _check_axis(axis)
    if frames.ndim != 3:
        raise ValueError(f"from_frames needs [N, H, W] frames, got shape {frames.shape}")
    if axis == "axial":
        return frames
    if axis == "coronal":
        return frames.transpose(1, 0, 2)[::-1]  # (Y, Z, X) -> (Z, Y, X)
    return frames.transpose(1, 2, 0)[::-1]  # (X, Z, Y) -> (Z, Y, X)


def resize_frames(frames: np.ndarray, size: tuple[int, int], order: int = 1) -> np.ndarray:
    """Resample frames [N, H, W] to [N, h, w] (pixel areas aligned: corners of the image stay corners).

    Args:
        order: spline order (0 nearest, for masks; 1 linear; 3 cubic).
    """
    from scipy import ndimage

    if frames.ndim != 3:
        raise ValueError(f"resize_frames needs [N, H, W] frames, got shape {frames.shape}")
    h, w = int(size[0]), int(size[1])
    if (h, w) == frames.shape[1:]:
        return frames.copy()
    factors = (1.0, h / frames.shape[1], w / frames.shape[2])
    out = ndimage.zoom(frames, factors, order=order, mode="nearest", grid_mode=True, prefilter=order > 1)
    assert out.shape[1:] == (h, w), out.shape
    return out


class TileLayout(NamedTuple):
    """Where tiles of one frame size sit: top-left corners (row, col) of `tile` x `tile` squares."""

    height: int
    width: int
    tile: int
    overlap: int
    positions: list


class Tiles(NamedTuple):
    tiles: np.ndarray  # (N, T, tile, tile)
    layout: TileLayout


def volume_frames(volume_hu: np.ndarray, lo: float, hi: float, axis: str, size: int) -> np.ndarray:
    """HU volume [Z, Y, X] -> float32 frames [N, size, size] in [0, 1]: the HU window lo..hi mapped to 0..1,
    sliced along `axis`, resized linearly to size x size (the frames a model or a learned baseline sees)."""
    frames = to_frames(window(volume_hu, lo, hi), axis)
    if frames.shape[1:] != (size, size):
        frames = resize_frames(np.ascontiguousarray(frames), (size, size), order=1)
    return np.clip(frames, 0.0, 1.0).astype(np.float32, copy=False)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def tile_frames(frames: np.ndarray, tile: int = 256, overlap: int = 32) -> Tiles:
    """Cut frames [N, H, W] into overlapping tile x tile squares (frames smaller than a tile are edge-padded).

    Returns:
        Tiles(tiles [N, T, tile, tile], layout) for `untile_frames`.
    """
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got overlap={overlap}, tile={tile}")
    n, height, width = frames.shape
    pad = ((0, 0), (0, max(0, tile - height)), (0, max(0, tile - width)))
    padded = np.pad(frames, pad, mode="edge") if any(p[1] for p in pad) else frames
    positions = [(r, c) for r in _starts(height, tile, overlap) for c in _starts(width, tile, overlap)]
    tiles = np.stack([padded[:, r:r + tile, c:c + tile] for r, c in positions], axis=1)  # (N, T, tile, tile)
    return Tiles(tiles, TileLayout(height, width, tile, overlap, positions))


def _blend_weights(tile: int, overlap: int) -> np.ndarray:
    """(tile, tile) weights: 1 in the middle, linear ramps over the overlap at the edges (never 0)."""
    ramp = np.minimum(np.arange(1, tile + 1), np.arange(tile, 0, -1)).astype(np.float64)
    ramp = np.minimum(ramp / (overlap + 1), 1.0)
    return np.outer(ramp, ramp)


def untile_frames(tiles: np.ndarray, layout: TileLayout) -> np.ndarray:
    """Tiles [N, T, tile, tile] back to frames [N, H, W], overlaps blended linearly (exact for unchanged tiles)."""
    n = tiles.shape[0]
    tile = layout.tile
    height, width = max(layout.height, tile), max(layout.width, tile)
    total = np.zeros((n, height, width), dtype=np.float64)
    weight = np.zeros((height, width), dtype=np.float64)
    w = _blend_weights(tile, layout.overlap)
    for t, (r, c) in enumerate(layout.positions):
        total[:, r:r + tile, c:c + tile] += tiles[:, t] * w
        weight[r:r + tile, c:c + tile] += w
    out = total / weight
    return out[:, : layout.height, : layout.width].astype(tiles.dtype, copy=False)
