"""Segmentation / contour propagation baselines.

Slice propagation: a CT [Z, Y, X] with labels drawn on a few slices along `axis` ("axial" = array axis 0,
"coronal" = 1, "sagittal" = 2, or the array axis number); every other slice gets labels from the nearest
labelled slice (ties go to the lower slice index), either
- "nearest-slice": copied as they are, or
- "registration": carried slice by slice, each step a 2D demons registration of the next slice (fixed) to
  the current one (moving) and a warp of the current labels; the chain starts at the nearest labelled
  slice. Neither method ever stops a structure: labels continue to the end of the volume.
Labels present on unlabelled slices of the input are ignored; labelled slices are returned unchanged.

Phase propagation: labels drawn on one phase of a 4D CT carried to every other phase by 3D registration
(`registration.propagate_labels`), the deformable-registration workflow of radiotherapy clinics.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import numpy as np

from MedLVMLib.errors import MedLVMError
from MedLVMLib.imaging import registration
from MedLVMLib.imaging.volume import Geometry, Phases
from MedLVMLib.progress import Progress, ensure

AXIS_NAMES = {"axial": 0, "coronal": 1, "sagittal": 2}
AxisLike = Union[str, int]


def axis_index(axis: AxisLike) -> int:
    """Array axis ([Z, Y, X]) of a slicing direction name or number."""
    if isinstance(axis, str):
        if axis not in AXIS_NAMES:
            raise MedLVMError(f"axis must be one of {sorted(AXIS_NAMES)} or 0, 1, 2; got {axis!r}")
        return AXIS_NAMES[axis]
    if int(axis) not in (0, 1, 2):
        raise MedLVMError(f"axis must be one of {sorted(AXIS_NAMES)} or 0, 1, 2; got {axis!r}")
    return int(axis)


def _check(image: np.ndarray, labels: np.ndarray, labelled_slices: Sequence[int], axis: int) -> list[int]:
    if np.ndim(image) != 3:
        raise MedLVMError(f"image must be a volume [Z, Y, X], got shape {np.shape(image)}")
    if np.shape(labels) != np.shape(image):
        raise MedLVMError(f"labels of shape {np.shape(labels)} do not match the image grid {np.shape(image)}")
    n = np.shape(image)[axis]
    slices = sorted({int(s) for s in labelled_slices})
    if not slices or slices[0] < 0 or slices[-1] >= n:
        raise MedLVMError(f"labelled_slices {list(labelled_slices)} must be non-empty indices in [0, {n - 1}]")
    if not any(np.take(labels, s, axis=axis).any() for s in slices):
        raise MedLVMError("the labelled slices contain no label: draw the structure on at least one slice")
    return slices


def nearest_source(n: int, labelled: Sequence[int]) -> np.ndarray:
    """For each slice 0..n-1, the nearest labelled slice (ties to the lower index)."""
    labelled = np.asarray(sorted(labelled))
    distance = np.abs(np.arange(n)[:, None] - labelled[None, :])  # (n, n_labelled)
    return labelled[np.argmin(distance, axis=1)]


def nearest_slice(
    image: np.ndarray, labels_sparse: np.ndarray, labelled_slices: Sequence[int], axis: AxisLike = "axial", **kw
) -> np.ndarray:
    """Every slice gets the labels of the nearest labelled slice. Returns a label map like `labels_sparse`."""
    axis = axis_index(axis)
    slices = _check(image, labels_sparse, labelled_slices, axis)
    source = nearest_source(np.shape(image)[axis], slices)
    return np.take(np.asarray(labels_sparse), source, axis=axis)


def slice_spacing(geometry: Optional[Geometry], axis: int) -> Optional[tuple[float, float]]:
    """ITK-order spacing (columns, rows) of the 2D slices perpendicular to array axis `axis`."""
    if geometry is None:
        return None
    spacing_zyx = list(geometry.spacing[::-1])
    del spacing_zyx[axis]
    return (float(spacing_zyx[1]), float(spacing_zyx[0]))


def registration_propagation(
    image: np.ndarray,
    labels_sparse: np.ndarray,
    labelled_slices: Sequence[int],
    axis: AxisLike = "axial",
    geometry: Optional[Geometry] = None,
    mode: str = "per-label",
    progress: Optional[Progress] = None,
    **register_kw,
) -> np.ndarray:
    """Labels chained slice to slice by 2D deformable registration from the nearest labelled slice."""
    axis = axis_index(axis)
    slices = _check(image, labels_sparse, labelled_slices, axis)
    n = np.shape(image)[axis]
    source = nearest_source(n, slices)
    spacing = slice_spacing(geometry, axis)
    volume = np.moveaxis(np.asarray(image, dtype=np.float32), axis, 0)  # (n, H, W)
    out = np.moveaxis(np.asarray(labels_sparse).copy(), axis, 0)
    progress = ensure(progress)
    progress.stage("propagating labels between slices", n - len(slices))
    for start in slices:
        for step in (-1, 1):
            current = start + step
            while 0 <= current < n and source[current] == start:
                field = registration.register(volume[current], volume[current - step], spacing, **register_kw)
                out[current] = registration.warp_labels(out[current - step], field, spacing, mode)
                progress.advance()
                current += step
    return np.moveaxis(out, 0, axis)


def propagate_phases(
    phases: Phases,
    labels: np.ndarray,
    source_phase: int = 0,
    mode: str = "per-label",
    progress: Optional[Progress] = None,
    **register_kw,
) -> np.ndarray:
    """Labels drawn on phase `source_phase` carried to every phase by 3D registration: [P, Z, Y, X]."""
    if np.shape(labels) != phases.shape:
        raise MedLVMError(f"labels of shape {np.shape(labels)} do not match the phase grid {phases.shape}")
    if not 0 <= source_phase < phases.n_phases:
        raise MedLVMError(f"source_phase {source_phase} is not one of the {phases.n_phases} phases")
    if not np.any(labels):
        raise MedLVMError("the labels are empty: draw at least one structure on the source phase")
    progress = ensure(progress)
    progress.stage("propagating labels between phases", phases.n_phases - 1)
    out = np.empty((phases.n_phases,) + phases.shape, dtype=np.asarray(labels).dtype)
    moving = phases.array[source_phase]
    for p in range(phases.n_phases):
        if p == source_phase:
            out[p] = labels
            continue
        out[p] = registration.propagate_labels(
            labels, moving, phases.array[p], phases.geometry, mode=mode, progress=progress, **register_kw
        )
    return out


SEGMENT_BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "nearest-slice": nearest_slice,
    "registration": registration_propagation,
}
