"""Evaluation metrics for masks (DSC, HD95, centroid error) and HU images (MAE, RMSE, PSNR, SSIM).

Conventions used by every function here:
- Arrays are numpy volumes in SimpleITK order [Z, Y, X] (2D [Y, X] also works).
- `spacing` is in ITK (x, y, z) order, like `imaging.volume.Geometry.spacing`, i.e. the REVERSE of the array
  axis order. A `imaging.volume.Geometry` may be passed wherever a spacing is accepted.
- Masks are anything whose non-zero voxels are the structure (bool, uint8, labels == k).
- Image metrics are in HU. PSNR and SSIM clip both images to a stated HU window first; the window is
  part of the metric's definition and must be reported with it (default (-1000, 1000) HU).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
from scipy import ndimage

from MedLVMLib.errors import MedLVMError
from MedLVMLib.imaging.volume import Geometry

SpacingLike = Union[Geometry, Sequence[float], None]
DEFAULT_HU_WINDOW = (-1000.0, 1000.0)


def array_spacing(spacing: SpacingLike, ndim: int) -> np.ndarray:
    """Voxel size per ARRAY axis ([Z, Y, X] order) from an ITK-order spacing or a Geometry."""
    if spacing is None:
        return np.ones(ndim)
    if isinstance(spacing, Geometry):
        spacing = spacing.spacing
    values = np.asarray(spacing, dtype=float)
    if values.shape != (ndim,) or np.any(values <= 0):
        raise MedLVMError(f"spacing {tuple(values)} must be {ndim} positive sizes in ITK (x, y, z) order")
    return values[::-1]


def _check_pair(a: np.ndarray, b: np.ndarray, name: str = "a, b") -> None:
    if np.shape(a) != np.shape(b):
        raise MedLVMError(f"{name}: shapes differ ({np.shape(a)} vs {np.shape(b)}); resample onto one grid first")


# ----------------------------------------------------------------------------------------------- masks


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice similarity coefficient 2|A∩B| / (|A|+|B|) of two masks.

    Two empty masks agree perfectly: DSC = 1.0 (so a structure that is correctly absent is not penalised).
    """
    _check_pair(a, b)
    a, b = np.asarray(a) != 0, np.asarray(b) != 0
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return float(2.0 * np.logical_and(a, b).sum() / total)


def surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a mask: voxels of the mask with a face-neighbour outside it (or outside the array)."""
    mask = np.asarray(mask) != 0
    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1), border_value=0)
    return mask & ~eroded


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: SpacingLike = None) -> np.ndarray:
    """Distances in mm from every surface voxel of `a` to the nearest surface voxel of `b` (both non-empty)."""
    sampling = array_spacing(spacing, np.ndim(a))
    surface_a, surface_b = surface(a), surface(b)
    distance_to_b = ndimage.distance_transform_edt(~surface_b, sampling=sampling)
    return distance_to_b[surface_a]


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Slices of the smallest box holding a non-empty `mask`, grown by `margin` voxels within the array. With a
    margin of 1, the surfaces and surface distances of masks inside the box are those of the whole array."""
    where = np.argwhere(mask)
    low, high = where.min(axis=0) - margin, where.max(axis=0) + margin + 1
    return tuple(slice(max(0, int(lo)), min(n, int(hi))) for lo, hi, n in zip(low, high, mask.shape))


def hd95(a: np.ndarray, b: np.ndarray, spacing: SpacingLike = None) -> float:
    """95th percentile Hausdorff distance in mm.

    The 95th percentile of the pooled symmetric surface distances (A's surface to B's and B's to A's),
    surfaces being the mask voxels with a face-neighbour outside the mask. If either mask is empty the
    distance is undefined and the result is NaN (callers report it as missing, never as 0).
    """
    _check_pair(a, b)
    if not np.any(a) or not np.any(b):
        return float("nan")
    box = _bounding_box(np.logical_or(a, b), margin=1)  # same distances, far smaller distance transforms
    a, b = np.asarray(a)[box], np.asarray(b)[box]
    distances = np.concatenate([surface_distances(a, b, spacing), surface_distances(b, a, spacing)])
    return float(np.percentile(distances, 95))


def _to_geometry(geometry_or_spacing: SpacingLike, ndim: int) -> Geometry:
    if isinstance(geometry_or_spacing, Geometry):
        return geometry_or_spacing
    if ndim != 3:
        raise MedLVMError("physical centroids need a 3D mask [Z, Y, X]")
    return Geometry(spacing=tuple(float(s) for s in array_spacing(geometry_or_spacing, 3)[::-1]))


def centroid_mm(mask: np.ndarray, geometry_or_spacing: SpacingLike = None) -> np.ndarray:
    """Centre of mass of a 3D mask [Z, Y, X] in physical LPS millimetres (x, y, z).

    physical = origin + direction @ (index * spacing), with the index in (x, y, z) order. With a bare
    spacing the origin is 0 and the direction identity. An empty mask gives [nan, nan, nan].
    """
    mask = np.asarray(mask) != 0
    geometry = _to_geometry(geometry_or_spacing, mask.ndim)
    if not mask.any():
        return np.full(3, np.nan)
    index_zyx = np.argwhere(mask).mean(axis=0)  # (3,) in array order
    index_xyz = index_zyx[::-1]
    direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    return np.asarray(geometry.origin, dtype=float) + direction @ (index_xyz * np.asarray(geometry.spacing))


def centroid_error_mm(a: np.ndarray, b: np.ndarray, geometry_or_spacing: SpacingLike = None) -> float:
    """Euclidean distance in mm between the centroids of two masks (NaN if either is empty)."""
    _check_pair(a, b)
    difference = centroid_mm(a, geometry_or_spacing) - centroid_mm(b, geometry_or_spacing)
    return float(np.linalg.norm(difference))


# ---------------------------------------------------------------------------------------------- images


def _masked_difference(a: np.ndarray, b: np.ndarray, mask: Optional[np.ndarray]) -> np.ndarray:
    _check_pair(a, b)
    difference = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if mask is None:
        return difference.ravel()
    _check_pair(a, mask, "image, mask")
    return difference[np.asarray(mask) != 0]


def mae(a: np.ndarray, b: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Mean absolute error in HU, over the whole volume or inside `mask` (NaN for an empty mask)."""
    difference = _masked_difference(a, b, mask)
    return float(np.abs(difference).mean()) if difference.size else float("nan")


def rmse(a: np.ndarray, b: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Root mean square error in HU, over the whole volume or inside `mask` (NaN for an empty mask)."""
    difference = _masked_difference(a, b, mask)
    return float(np.sqrt(np.mean(difference**2))) if difference.size else float("nan")


def _check_window(hu_window: Sequence[float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in hu_window)
    if not hi > lo:
        raise MedLVMError(f"hu_window {tuple(hu_window)} must be (lo, hi) with hi > lo")
    return lo, hi


def psnr(
    a: np.ndarray,
    b: np.ndarray,
    hu_window: Sequence[float] = DEFAULT_HU_WINDOW,
    mask: Optional[np.ndarray] = None,
) -> float:
    """Peak signal-to-noise ratio in dB after clipping both images to `hu_window` (default -1000..1000 HU).

    PSNR = 10 log10((hi - lo)^2 / MSE), the MSE taken over the volume or inside `mask`. Identical
    images give +inf.
    """
    lo, hi = _check_window(hu_window)
    difference = _masked_difference(np.clip(a, lo, hi), np.clip(b, lo, hi), mask)
    if difference.size == 0:
        return float("nan")
    mse = float(np.mean(difference**2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10((hi - lo) ** 2 / mse))


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    hu_window: Sequence[float] = DEFAULT_HU_WINDOW,
    mask: Optional[np.ndarray] = None,
) -> float:
    """Structural similarity after clipping both images to `hu_window` (default -1000..1000 HU).

    skimage.metrics.structural_similarity in 2D or 3D with its default uniform 7-voxel window (smaller and
    odd when an axis is shorter than 7) and data_range = hi - lo. With `mask`, the mean of the SSIM map
    inside the mask. Identical images give 1.0.
    """
    from skimage.metrics import structural_similarity

    lo, hi = _check_window(hu_window)
    _check_pair(a, b)
    win_size = min(7, min(np.shape(a)))
    win_size -= 1 - win_size % 2
    if win_size < 3:
        raise MedLVMError(f"ssim needs every axis of at least 3 voxels, got shape {np.shape(a)}")
    a_w = np.clip(np.asarray(a, dtype=np.float64), lo, hi)
    b_w = np.clip(np.asarray(b, dtype=np.float64), lo, hi)
    if mask is None:
        return float(structural_similarity(a_w, b_w, data_range=hi - lo, win_size=win_size))
    _check_pair(a, mask, "image, mask")
    _, ssim_map = structural_similarity(a_w, b_w, data_range=hi - lo, win_size=win_size, full=True)
    inside = np.asarray(mask) != 0
    return float(ssim_map[inside].mean()) if inside.any() else float("nan")
