"""Thick slices as slabs of thin ones: block means along array axes (thin -> thick), and interpolation from
slab centres back onto thin-slice centres (thick -> thin). Used to make and to undo thick-slice blur."""

from __future__ import annotations

import numpy as np


def slab_average(volume: np.ndarray, factor: int, axes: tuple) -> np.ndarray:
    """Thin -> thick: mean over blocks of `factor` along each array axis in `axes` (trailing rest dropped)."""
    out = np.asarray(volume, np.float32)
    for a in axes:
        n = out.shape[a] // factor
        out = np.take(out, np.arange(n * factor), axis=a)
        shape = out.shape[:a] + (n, factor) + out.shape[a + 1:]
        out = out.reshape(shape).mean(axis=a + 1)
    return out


def interpolate(volume: np.ndarray, factor: int, axes: tuple, order: int = 1) -> np.ndarray:
    """Thick -> thin by interpolation: slab centres onto thin-slice centres (edges: nearest value)."""
    from scipy import ndimage

    out = np.asarray(volume, np.float32)
    for a in axes:
        n = out.shape[a]
        coords = (np.arange(n * factor) + 0.5) / factor - 0.5  # thin centres in thick-index units
        coords = np.clip(coords, 0, n - 1)
        moved = np.moveaxis(out, a, 0)
        grid = np.meshgrid(coords, *[np.arange(s) for s in moved.shape[1:]], indexing="ij")
        result = ndimage.map_coordinates(moved, grid, order=order, mode="nearest", prefilter=order > 1)
        out = np.moveaxis(result.astype(np.float32), 0, a)
    return out
