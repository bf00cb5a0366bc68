"""Deformable image registration on CPU (SimpleITK demons), warping and label propagation.

Arrays are numpy in SimpleITK order: 3D [Z, Y, X] (2D [Y, X] works too). Grids are described by a
`imaging.volume.Geometry` (or a bare spacing in ITK (x, y, z) order); fixed and moving images share one grid.

A displacement field ("field") is a float32 array [Z, Y, X, 3] (2D: [Y, X, 2]) in millimetres whose last
axis holds the PHYSICAL (x, y, z) components, i.e. ITK's displacement-field convention. It maps a point
p of the fixed image to the corresponding point p + u(p) of the moving image, so
`warp(moving, register(fixed, moving))` looks like `fixed` (a "pull" / backward field).

Registration: fast symmetric-forces demons (or diffeomorphic demons) run coarse to fine over a pyramid
(default shrink factors 4, 2, 1, Gaussian-smoothed before shrinking), each level starting from the field
of the previous one, with Gaussian regularisation of the field (`smoothing_sigma`, voxels of that level).
A 64^3 pair takes about 2-3 s on one CPU core.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import SimpleITK as sitk

from MedLVMLib.errors import MedLVMError
from MedLVMLib.imaging.volume import Geometry
from MedLVMLib.progress import Progress

GridLike = Union[Geometry, Sequence[float], None]
Field = np.ndarray  # float32 [Z, Y, X, 3] (x, y, z components, mm); 2D: [Y, X, 2]

DEMONS = {
    "symmetric": sitk.FastSymmetricForcesDemonsRegistrationFilter,
    "diffeomorphic": sitk.DiffeomorphicDemonsRegistrationFilter,
}
INTERPOLATORS = {0: sitk.sitkNearestNeighbor, 1: sitk.sitkLinear, 3: sitk.sitkBSpline}
HU_CLIP = (-1024.0, 2000.0)  # metal and dense bone above 2000 HU would dominate the demons forces


def to_sitk(array: np.ndarray, grid: GridLike = None, is_vector: bool = False) -> sitk.Image:
    """A SimpleITK image of `array` on `grid` (Geometry, ITK-order spacing or None for unit spacing)."""
    image = sitk.GetImageFromArray(array, isVector=is_vector)
    ndim = image.GetDimension()
    if isinstance(grid, Geometry):
        if ndim != 3:
            raise MedLVMError(f"a volumes.Geometry describes a 3D grid; got a {ndim}D array (pass a spacing)")
        image.SetSpacing(tuple(float(s) for s in grid.spacing))
        image.SetOrigin(tuple(float(o) for o in grid.origin))
        image.SetDirection(tuple(float(d) for d in grid.direction))
    elif grid is not None:
        spacing = tuple(float(s) for s in grid)
        if len(spacing) != ndim or min(spacing) <= 0:
            raise MedLVMError(f"spacing {spacing} must be {ndim} positive sizes in ITK (x, y, z) order")
        image.SetSpacing(spacing)
    return image


def _check_images(fixed: np.ndarray, moving: np.ndarray) -> None:
    if np.shape(fixed) != np.shape(moving):
        raise MedLVMError(f"fixed and moving images differ in shape: {np.shape(fixed)} vs {np.shape(moving)}")
    if np.ndim(fixed) not in (2, 3):
        raise MedLVMError(f"registration needs 2D or 3D arrays, got shape {np.shape(fixed)}")


def _shrink_factors(image: sitk.Image, level: int) -> list[int]:
    """Per-axis shrink for one pyramid level: coarser along fine axes, never below 8 voxels."""
    return _factors(np.array(image.GetSpacing(), float), np.array(image.GetSize()), level)


def _factors(spacing: np.ndarray, size: np.ndarray, level: int) -> list[int]:
    """Shrink factors (ITK axis order) of one pyramid level for a grid of `size` voxels of `spacing`."""
    factors = np.maximum(1, np.round(level * spacing.min() / spacing)).astype(int)
    return [int(max(1, min(f, s // 8))) for f, s in zip(factors, size)]


def capped_levels(shape: Sequence[int], spacing: Sequence[float], max_voxels: int,
                  levels: Sequence[int] = (4, 2, 1)) -> tuple[int, ...]:
    """`levels` doubled until the finest level's grid holds at most `max_voxels` voxels.

    For large grids (a 256 x 256 CT of 100+ slices) whose registration at full resolution is too slow for an
    evaluation: `register` with these levels stops at a coarser level and resamples the field to the full grid.
    Small grids keep `levels` unchanged. `shape` in array order (z, y, x), `spacing` in ITK order (x, y, z).
    """
    if max_voxels < 1:
        raise MedLVMError(f"max_voxels must be at least 1, got {max_voxels}")
    size = np.array(shape[::-1], int)
    spacing = np.asarray(spacing, float)
    levels = tuple(int(level) for level in levels)
    while True:
        factors = _factors(spacing, size, min(levels))
        if np.prod(np.ceil(size / np.array(factors))) <= max_voxels:
            return levels
        doubled = tuple(2 * level for level in levels)
        if _factors(spacing, size, min(doubled)) == factors:
            return levels  # every axis is at its 8-voxel floor: the grid cannot shrink further
        levels = doubled


def _pyramid_level(image: sitk.Image, factors: list[int]) -> sitk.Image:
    if max(factors) == 1:
        return image
    sigmas = [0.5 * f * s for f, s in zip(factors, image.GetSpacing())]
    return sitk.Shrink(sitk.SmoothingRecursiveGaussian(image, sigmas), factors)


def register(
    fixed: np.ndarray,
    moving: np.ndarray,
    geometry: GridLike = None,
    iterations: int = 50,
    smoothing_sigma: float = 1.5,
    levels: Sequence[int] = (4, 2, 1),
    method: str = "symmetric",
) -> Field:
    """Deformable registration of `moving` onto `fixed` (same grid, HU or any intensity).

    Args:
        fixed, moving: [Z, Y, X] (or [Y, X]) arrays on the grid `geometry`.
        iterations: demons iterations per pyramid level.
        smoothing_sigma: Gaussian regularisation of the field, in voxels of each level.
        levels: pyramid shrink factors, coarse to fine (1 = full resolution).
        method: "symmetric" (fast symmetric forces) or "diffeomorphic" demons.
    Returns:
        Field float32 [Z, Y, X, 3] in mm, (x, y, z) components: fixed point p ↔ moving point p + u(p).
    """
    _check_images(fixed, moving)
    if method not in DEMONS:
        raise MedLVMError(f"unknown registration method {method!r}; choose one of {sorted(DEMONS)}")
    fixed_image = to_sitk(np.clip(np.asarray(fixed, np.float32), *HU_CLIP), geometry)
    moving_image = to_sitk(np.clip(np.asarray(moving, np.float32), *HU_CLIP), geometry)
    field = None
    for level in levels:
        factors = _shrink_factors(fixed_image, int(level))
        fixed_level = _pyramid_level(fixed_image, factors)
        moving_level = _pyramid_level(moving_image, factors)
        demons = DEMONS[method]()
        demons.SetNumberOfIterations(int(iterations))
        demons.SetStandardDeviations(float(smoothing_sigma))
        if field is None:
            field = demons.Execute(fixed_level, moving_level)
        else:
            initial = sitk.Resample(field, fixed_level, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
            field = demons.Execute(fixed_level, moving_level, initial)
    if field.GetSize() != fixed_image.GetSize():
        field = sitk.Resample(field, fixed_image, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
    return sitk.GetArrayFromImage(field).astype(np.float32)


def _check_field(image: np.ndarray, field: np.ndarray) -> None:
    ndim = np.ndim(image)
    if np.shape(field) != tuple(np.shape(image)) + (ndim,):
        raise MedLVMError(f"field of shape {np.shape(field)} does not fit an image of shape {np.shape(image)}")


def warp(
    image: np.ndarray,
    field: Field,
    geometry: GridLike = None,
    order: int = 1,
    default_value: Optional[float] = None,
) -> np.ndarray:
    """Resample `image` through `field`: out(p) = image(p + u(p)), on the same grid.

    order: 0 nearest neighbour (labels), 1 linear, 3 cubic B-spline. Points that map outside the image
    take the nearest edge value, or `default_value` when one is given. Output dtype = input dtype.
    """
    if order not in INTERPOLATORS:
        raise MedLVMError(f"order must be one of {sorted(INTERPOLATORS)}, got {order}")
    _check_field(image, field)
    array = np.asarray(image)
    source = to_sitk(array.astype(np.float32) if order else array, geometry)
    displacement = to_sitk(np.asarray(field, np.float64), geometry, is_vector=True)
    transform = sitk.DisplacementFieldTransform(displacement)
    extrapolate = default_value is None
    value = 0.0 if default_value is None else float(default_value)
    warped = sitk.Resample(source, source, transform, INTERPOLATORS[order], value, source.GetPixelID(), extrapolate)
    return sitk.GetArrayFromImage(warped).astype(array.dtype, copy=False)


def warp_labels(labels: np.ndarray, field: Field, geometry: GridLike = None, mode: str = "per-label") -> np.ndarray:
    """Warp a label map through `field`.

    mode "per-label" warps each label's indicator (background included) with linear interpolation and
    keeps the most likely label per voxel (smoother boundaries); "nearest" warps the map itself with
    nearest-neighbour interpolation (fast for many labels).
    """
    labels = np.asarray(labels)
    if mode == "nearest":
        return warp(labels, field, geometry, order=0, default_value=0)
    if mode != "per-label":
        raise MedLVMError(f"unknown label warp mode {mode!r}; choose 'per-label' or 'nearest'")
    values = np.unique(labels)
    if 0 not in values:
        values = np.concatenate([[0], values])
    best = np.full(labels.shape, -1.0, np.float32)
    out = np.zeros_like(labels)
    for value in values:
        probability = warp((labels == value).astype(np.float32), field, geometry, order=1)
        better = probability > best
        out[better], best[better] = value, probability[better]
    return out


def propagate_labels(
    labels_moving: np.ndarray,
    moving_image: np.ndarray,
    fixed_image: np.ndarray,
    geometry: GridLike = None,
    mode: str = "per-label",
    progress: Optional[Progress] = None,
    **register_kw,
) -> np.ndarray:
    """Carry labels drawn on `moving_image` onto `fixed_image` by deformable registration.

    This is also the motion evaluation's protocol for masks on a predicted phase: the last observed
    phase's labels propagated by registering that phase (moving) to the predicted image (fixed).
    Returns a label map on the fixed grid with the dtype of `labels_moving`.
    """
    if np.shape(labels_moving) != np.shape(moving_image):
        raise MedLVMError(f"labels {np.shape(labels_moving)} and image {np.shape(moving_image)} differ in shape")
    field = register(fixed_image, moving_image, geometry, **register_kw)
    if progress is not None:
        progress.advance()
    return warp_labels(labels_moving, field, geometry, mode)
