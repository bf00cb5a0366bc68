"""4D CT in memory: `Phases` (float32 HU [P, Z, Y, X] + one geometry + phase labels) `Volume`, the geometry
and the checks every reader applies (I/O: `imaging.volume_io`, `imaging.phases_io`).

Array axis order follows SimpleITK's `GetArrayFromImage`: [Z, Y, X] per volume, so
`geometry.spacing`, `origin` and `direction` are in ITK (x, y, z) order and LPS coordinates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from MedLVMLib.errors import InputError

PathLike = Union[str, Path]
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of one 3D volume, in ITK order (x, y, z), LPS millimetres."""

    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # row-major 3x3

    def is_close(self, other: Geometry, tol: float = 1e-4) -> bool:
        return (
            np.allclose(self.spacing, other.spacing, atol=tol)
            and np.allclose(self.origin, other.origin, atol=tol * 100)
            and np.allclose(self.direction, other.direction, atol=tol)
        )


@dataclass
class Phases:
    """A 4D CT: P volumes on one grid.

    array:  float32 HU, shape [P, Z, Y, X]
    geometry: the grid shared by every phase
    labels: one display label per phase, e.g. "0%", "10%", ...
    index_values: numeric index per phase (percent of the breathing cycle by default)
    index_name / index_unit: what the index means (Slicer sequence index name and unit)
    source_info: provenance filled by `read_phases` (path, format, the rule that ordered the phases, warnings)
    """

    array: np.ndarray
    geometry: Geometry = field(default_factory=Geometry)
    labels: list[str] = field(default_factory=list)
    index_values: Optional[list[float]] = None
    index_name: str = "phase"
    index_unit: str = "%"
    source_info: dict = field(default_factory=dict)  # where it came from: path, format, order rule, warnings

    def __post_init__(self) -> None:
        if self.array.ndim != 4:
            raise ValueError(f"Phases.array must be [P, Z, Y, X], got shape {self.array.shape}")
        n = self.array.shape[0]
        if self.index_values is None:
            self.index_values = [100.0 * p / n for p in range(n)]
        if not self.labels:
            self.labels = [f"{v:g}%" for v in self.index_values]
        if len(self.labels) != n or len(self.index_values) != n:
            raise ValueError(f"{n} phases but {len(self.labels)} labels and {len(self.index_values)} index values")

    @property
    def n_phases(self) -> int:
        return int(self.array.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """Per-phase volume shape (Z, Y, X)."""
        return tuple(int(s) for s in self.array.shape[1:])  # type: ignore[return-value]

    def select(self, indices: list[int]) -> Phases:
        """A new Phases with the given phases (copy of the array)."""
        return Phases(
            array=self.array[indices].copy(),
            geometry=self.geometry,
            labels=[self.labels[i] for i in indices],
            index_values=[self.index_values[i] for i in indices],
            index_name=self.index_name,
            index_unit=self.index_unit,
            source_info=dict(self.source_info),
        )


def continue_index(phases: Phases, n_future: int, n_total: Optional[int] = None) -> tuple[list[str], list[float]]:
    """Labels and index values for `n_future` phases that follow `phases` in the breathing cycle.

    The step is the spacing of the input's index values (100 / n_total percent when n_total is given,
    e.g. 10 % for a 10-phase 4D CT), so predicted phases sort after the input: 50%, 60%, ...
    """
    values = list(phases.index_values or [])
    if n_total is not None:
        step = 100.0 / n_total
    elif len(values) >= 2:
        step = values[-1] - values[-2]
    else:
        step = 10.0
    start = values[-1] if values else -step
    new_values = [start + step * (i + 1) for i in range(n_future)]
    unit = phases.index_unit
    return [f"{v:g}{unit}" for v in new_values], new_values


# ----------------------------------------------------------------------------------------------------------------
# 3D volumes

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass
class Volume:
    """One 3D image: array [Z, Y, X] (float32 HU, or an integer label map) on `geometry`."""

    array: np.ndarray
    geometry: Geometry = field(default_factory=Geometry)


def volume_suffix(path: PathLike) -> str:
    """The image suffix of `path` ('.nii.gz', '.seq.nrrd', '.nrrd', ...), '' if not an image name."""
    name = Path(path).name.lower()
    for suffix in (".seq.nrrd",) + VOLUME_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return ""


def geometry_of(image) -> Geometry:
    """Geometry of a 3D or 4D SimpleITK image (the first three axes)."""
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)[:3, :3]
    return Geometry(
        spacing=tuple(float(v) for v in image.GetSpacing()[:3]),
        origin=tuple(float(v) for v in image.GetOrigin()[:3]),
        direction=tuple(float(v) for v in direction.ravel()),
    )


def to_image(array: np.ndarray, geometry: Geometry):
    """A SimpleITK image of `array` [Z, Y, X] on `geometry`."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return image


# ----------------------------------------------------------------------------------------------------------------
# checks shared by the readers

def check_finite(array: np.ndarray, source: object) -> None:
    """InputError when `array` holds NaN or infinite voxels."""
    if not np.issubdtype(array.dtype, np.floating) or np.isfinite(np.sum(array, dtype=np.float64)):
        return  # a NaN or inf voxel makes the sum NaN or inf; the sum needs no array-sized temporary
    if not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise InputError(f"'{source}' has {bad} NaN or infinite voxels; fix or mask them before using it as CT")


def check_hu(array: np.ndarray, source: object, strict: bool = True) -> list[str]:
    """Check that intensities look like Hounsfield units.

    An image whose whole range fits in [-2, 2] (e.g. normalised to [0, 1]) cannot be CT in HU: InputError
    when `strict`, else a warning. No voxel below -500 HU (no air, no lung) or none above 100 HU (no soft
    tissue or bone) is suspicious but possible (a cropped region): a warning. Returns the warnings.
    """
    lo, hi = float(np.min(array)), float(np.max(array))
    warnings = []
    if lo >= -2.0 and hi <= 2.0:
        message = (f"'{source}': intensities span only [{lo:g}, {hi:g}]; this looks like a normalised image, "
                   "not CT in Hounsfield units (air -1000, water 0, bone > 300)")
        if strict:
            raise InputError(message + "; pass HU values (or check_hu=False to accept it as is)")
        warnings.append(message)
    elif lo > -500.0 or hi < 100.0:
        warnings.append(f"'{source}': intensities span [{lo:g}, {hi:g}] HU with no air/lung (< -500) or no tissue "
                        "(> 100); check that the values are Hounsfield units (rescale slope/intercept applied)")
    for message in warnings:
        logger.warning(message)
    return warnings


def check_same_geometry(items: list[tuple[str, tuple, Geometry]]) -> None:
    """InputError naming the first item whose size, spacing, origin or direction differs from the first one."""
    name0, shape0, geo0 = items[0]
    for name, shape, geo in items[1:]:
        if tuple(shape) != tuple(shape0):
            problem = f"size {tuple(shape)[::-1]} differs from {tuple(shape0)[::-1]}"
        elif not np.allclose(geo.spacing, geo0.spacing, atol=1e-4):
            problem = f"spacing {geo.spacing} differs from {geo0.spacing}"
        elif not np.allclose(geo.origin, geo0.origin, atol=1e-2):
            problem = f"origin {geo.origin} differs from {geo0.origin}"
        elif not np.allclose(geo.direction, geo0.direction, atol=1e-4):
            problem = f"direction {geo.direction} differs from {geo0.direction}"
        else:
            continue
        raise InputError(f"phase '{name}': {problem} of phase '{name0}'; every phase of a 4D CT must share "
                         "one grid (resample the phases onto one grid first)")


MAX_LABELS = 256  # distinct values in a label map (background included): what a uint8 map can hold


def check_label_map(array: np.ndarray, source: object) -> None:
    """InputError when `array` cannot be a label map (0 = background, 1, 2, ... per structure): non-integer,
    negative or non-finite values, or more distinct values than any label map has (a CT given as labels)."""
    hint = "; give a label map (0 = background, one whole number per structure), not a CT"
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise InputError(f"'{source}' is not a label map: it has NaN or infinite voxels{hint}")
    if np.issubdtype(array.dtype, np.floating) and np.any(array != np.round(array)):
        raise InputError(f"'{source}' is not a label map: it has non-integer voxel values{hint}")
    lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if lo < 0:
        raise InputError(f"'{source}' is not a label map: it has negative values (down to {lo:g}){hint}")
    if hi >= MAX_LABELS and len(np.unique(array)) > MAX_LABELS:  # only then can there be that many values
        raise InputError(f"'{source}' is not a label map: it has {len(np.unique(array))} distinct values "
                         f"(a label map has at most {MAX_LABELS}){hint}")
