"""Super-resolution baselines (nearest, linear, cubic B-spline interpolation) and the matching downsampler.

Volumes are [Z, Y, X] arrays on a `imaging.volume.Geometry`. `axis` picks what is resampled: "z" (through-plane:
thick slices to thin ones), "xy" (in-plane, alias "inplane") or "xyz".

Grid convention ("slab", the default): a low-resolution voxel is the average of `factor` fine voxels (a
thick slice is a slab of thin ones, which is what `downsample` makes). Upsampling by `factor` therefore
gives round(n * factor) voxels of spacing / factor along each resampled axis, and the first fine voxel
centre lies (factor - 1) / 2 fine spacings BEFORE the first coarse voxel centre (origin moved along the
direction cosines). So `upsample(downsample(x, f), f)` lands exactly on x's grid (when n is divisible by f)
and can be compared voxel by voxel with x. align="origin" instead keeps the origin at the first slice
centre and returns floor((n - 1) * factor) + 1 voxels, spanning first to last input centre (point samples).

Interpolation is SimpleITK resampling: nearest neighbour, linear, or cubic B-spline ("cubic"); points
just beyond the outer voxel centres take the nearest edge value.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np
import SimpleITK as sitk

from MedLVMLib.errors import MedLVMError
from MedLVMLib.imaging.volume import Geometry, Volume

AXES = {"z": (0,), "xy": (1, 2), "inplane": (1, 2), "xyz": (0, 1, 2)}  # array axes ([Z, Y, X] order)
INTERPOLATORS = {"nearest": sitk.sitkNearestNeighbor, "linear": sitk.sitkLinear, "cubic": sitk.sitkBSpline}
ALIGNMENTS = ("slab", "origin")


def _check(volume: np.ndarray, factor: float, axis: str) -> tuple[int, ...]:
    if np.ndim(volume) != 3:
        raise MedLVMError(f"super-resolution needs a volume [Z, Y, X], got shape {np.shape(volume)}")
    if not np.isfinite(factor) or factor < 1:
        raise MedLVMError(f"factor must be >= 1, got {factor}")
    if axis not in AXES:
        raise MedLVMError(f"axis must be one of {sorted(AXES)}, got {axis!r}")
    return AXES[axis]


def _physical(geometry: Geometry, index_zyx: np.ndarray) -> tuple[float, float, float]:
    """Physical LPS point of a continuous index given in array ([Z, Y, X]) order."""
    direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    point = np.asarray(geometry.origin) + direction @ (np.asarray(index_zyx)[::-1] * np.asarray(geometry.spacing))
    return tuple(float(v) for v in point)


def upsampled_grid(
    shape: tuple[int, int, int], geometry: Geometry, factor: float, axis: str = "z", align: str = "slab"
) -> tuple[tuple[int, int, int], Geometry]:
    """Shape [Z, Y, X] and geometry of `shape`/`geometry` upsampled by `factor` along `axis` (see module doc)."""
    axes = _check(np.empty((1, 1, 1)), factor, axis)
    if align not in ALIGNMENTS:
        raise MedLVMError(f"align must be one of {ALIGNMENTS}, got {align!r}")
    out_shape, start, spacing_zyx = list(shape), np.zeros(3), list(geometry.spacing[::-1])
    for a in axes:
        if align == "slab":
            out_shape[a] = int(round(shape[a] * factor))
            start[a] = -(factor - 1.0) / (2.0 * factor)  # in coarse voxels
        else:
            out_shape[a] = int(np.floor((shape[a] - 1) * factor + 1e-9)) + 1
        spacing_zyx[a] = spacing_zyx[a] / factor
    out = Geometry(
        spacing=tuple(float(s) for s in spacing_zyx[::-1]),
        origin=_physical(geometry, start),
        direction=geometry.direction,
    )
    return tuple(out_shape), out  # type: ignore[return-value]


def upsample(
    volume: np.ndarray,
    geometry: Geometry,
    factor: float,
    axis: str = "z",
    method: str = "linear",
    align: str = "slab",
) -> Volume:
    """Interpolate `volume` onto the grid `factor` times finer along `axis` ("z", "xy" or "xyz").

    method: "nearest", "linear" or "cubic" (B-spline). Returns a volumes.Volume (float32, new geometry).
    """
    _check(volume, factor, axis)
    if method not in INTERPOLATORS:
        raise MedLVMError(f"method must be one of {sorted(INTERPOLATORS)}, got {method!r}")
    shape, out_geometry = upsampled_grid(np.shape(volume), geometry, factor, axis, align)
    image = sitk.GetImageFromArray(np.asarray(volume, dtype=np.float32))
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    resampled = sitk.Resample(
        image,
        [int(s) for s in shape[::-1]],
        sitk.Transform(),
        INTERPOLATORS[method],
        out_geometry.origin,
        out_geometry.spacing,
        out_geometry.direction,
        0.0,
        sitk.sitkFloat32,
        True,  # nearest-neighbour extrapolation at the edges
    )
    return Volume(sitk.GetArrayFromImage(resampled), out_geometry)


def downsample(volume: np.ndarray, geometry: Geometry, factor: int, axis: str = "z") -> Volume:
    """Low-resolution input for evaluation: average every `factor` consecutive voxels along `axis`.

    Thick slices are slabs of thin ones (slab averaging); trailing voxels that do not fill a whole slab
    are dropped. The coarse voxel centre is the mean of its fine centres, so the origin moves by
    (factor - 1) / 2 fine spacings. Returns a volumes.Volume (float32).
    """
    axes = _check(volume, factor, axis)
    if int(factor) != factor:
        raise MedLVMError(f"downsample needs an integer factor (slab averaging), got {factor}")
    factor = int(factor)
    array = np.asarray(volume, dtype=np.float32)
    if min(array.shape[a] for a in axes) < factor:
        raise MedLVMError(f"volume of shape {array.shape} has fewer than {factor} voxels along axis {axis!r}")
    start, spacing_zyx = np.zeros(3), list(geometry.spacing[::-1])
    for a in axes:
        n = array.shape[a] // factor
        array = np.take(array, np.arange(n * factor), axis=a)
        array = array.reshape(array.shape[:a] + (n, factor) + array.shape[a + 1 :]).mean(axis=a + 1)
        start[a] = (factor - 1) / 2.0
        spacing_zyx[a] *= factor
    out = Geometry(
        spacing=tuple(float(s) for s in spacing_zyx[::-1]),
        origin=_physical(geometry, start),
        direction=geometry.direction,
    )
    return Volume(array.astype(np.float32), out)


SUPERRES_BASELINES: dict[str, Callable[..., Volume]] = {name: partial(upsample, method=name) for name in INTERPOLATORS}
