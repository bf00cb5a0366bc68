"""4D CT in memory: `Phases` (float32 HU [P, Z, Y, X] + one geometry + phase labels) and its I/O.

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
from MedLVMLib.outputs import atomic_path
from MedLVMLib.progress import Progress, ensure

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]


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


def _sitk_read(path: Path):
    import SimpleITK as sitk

    if not path.exists():
        raise InputError(f"'{path}' does not exist")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise InputError(f"'{path}' is not a readable image (truncated, corrupt or not an image file): "
                         f"{first}") from None


def read_volume(path: PathLike, labels: bool = False) -> Volume:
    """Read one 3D image (.nii.gz, .nii, .nrrd, .mha, .mhd, or a DICOM folder with one series).

    Args:
        labels: keep the integer voxel type (a label map) instead of converting to float32 HU.
    Returns:
        Volume with array [Z, Y, X].
    """
    import SimpleITK as sitk

    path = Path(path)
    if path.is_dir():
        from MedLVMLib.dicom import read_dicom_volume

        volume = read_dicom_volume(path)
        return Volume(volume.array.astype(np.int32), volume.geometry) if labels else volume
    image = _sitk_read(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"'{path}' has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                         "expected a scalar CT")
    if image.GetDimension() != 3 or min(image.GetSize()) < 1:
        raise InputError(f"'{path}' is a {image.GetDimension()}D image of size {image.GetSize()}; expected a 3D volume")
    array = sitk.GetArrayFromImage(image)
    if labels:
        if not np.issubdtype(array.dtype, np.integer):
            if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
                raise InputError(f"'{path}' is not a label map: it has non-integer voxel values")
            array = array.astype(np.int32)
        if array.min() >= 0 and array.max() <= 255:
            array = array.astype(np.uint8)
    else:
        array = array.astype(np.float32, copy=False)
        check_finite(array, path)
    return Volume(array, geometry_of(image))


def write_volume(volume: Union[Volume, np.ndarray], path: PathLike, geometry: Optional[Geometry] = None,
                 overwrite: bool = False, compress: bool = True) -> Path:
    """Write a 3D volume; the format follows the suffix (.nii.gz, .nrrd, .mha, ...). Written atomically."""
    import SimpleITK as sitk

    if isinstance(volume, np.ndarray):
        volume = Volume(volume, geometry or Geometry())
    if volume.array.ndim != 3:
        raise InputError(f"write_volume needs a [Z, Y, X] array, got shape {volume.array.shape}")
    if not volume_suffix(path) or volume_suffix(path) == ".seq.nrrd":
        raise InputError(f"'{path}': unknown volume format; use one of {', '.join(VOLUME_SUFFIXES)}")
    with atomic_path(path, overwrite) as tmp:
        sitk.WriteImage(to_image(volume.array, volume.geometry), str(tmp), compress)
    return Path(path)


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



# ----------------------------------------------------------------------------------------------------------------
# 4D CT: read_phases / write_phases

SEQUENCE_FORMS = "a .seq.nrrd, a folder with one volume per phase (.nii.gz/.nrrd/.mha) or a DICOM folder"


def _read_folder(folder: Path, progress: Progress) -> Phases:
    entries = [f for f in folder.iterdir() if not f.name.startswith(".")]
    if not entries:
        raise InputError(f"folder '{folder}' is empty; a 4D CT is {SEQUENCE_FORMS}")
    if (folder / "ct.seq.nrrd").is_file():  # a case folder (MedLVMLib.cases)
        return _read_sequence_file(folder / "ct.seq.nrrd")
    from MedLVMLib.phasefolder import image_files, read_phase_folder

    if image_files(folder):
        return read_phase_folder(folder, progress)
    from MedLVMLib.dicom import is_dicom_file, read_dicom_phases

    if any(is_dicom_file(f) for f in folder.rglob("*") if f.is_file()):
        return read_dicom_phases(folder, progress)
    raise InputError(f"folder '{folder}' holds no volumes ({', '.join(VOLUME_SUFFIXES)}) and no DICOM files")


def _phases_from_sequence(seq, path: Path) -> Phases:
    """Phases from a SequenceArray: numeric index values as they are; text values ("50%") parsed if possible."""
    from MedLVMLib.phasefolder import phase_number
    from MedLVMLib.seqnrrd import LABEL_ATTRIBUTE

    n = len(seq.array)
    if seq.index_type == "numeric":
        values, unit = [float(v) for v in seq.index_values], seq.index_unit
        labels = [seq.item_attributes.get(i, {}).get(LABEL_ATTRIBUTE) or f"{v:g}{unit}" for i, v in enumerate(values)]
    else:
        numbers = [phase_number(str(v))[0] for v in seq.index_values]
        values = [float(v) for v in numbers] if None not in numbers else [100.0 * i / n for i in range(n)]
        unit, labels = "%", [str(v) for v in seq.index_values]
    info = {"path": str(path), "format": "seq.nrrd", "order_rule": "sequence item order"}
    array = seq.array.astype(np.float32, copy=False)
    return Phases(array, seq.geometry, labels, values, seq.index_name or "phase", unit, source_info=info)


def _read_sequence_file(path: Path) -> Phases:
    from MedLVMLib.seqnrrd import read_sequence_array

    return _phases_from_sequence(read_sequence_array(path, dtype=np.float32), path)


def _read_4d_image(path: Path) -> Phases:
    import SimpleITK as sitk

    image = _sitk_read(path)
    if image.GetDimension() == 3:
        raise InputError(f"'{path}' is a single 3D volume, but a 4D CT is needed: give {SEQUENCE_FORMS}")
    if image.GetDimension() != 4:
        raise InputError(f"'{path}' is a {image.GetDimension()}D image; a 4D CT is needed: {SEQUENCE_FORMS}")
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)  # (P, Z, Y, X)
    return Phases(array, geometry_of(image), source_info={"path": str(path), "format": "4D image",
                                                          "order_rule": "4th image axis"})


def read_phases(path: PathLike, n_phases: Optional[int] = None, check_hu_values: bool = True,
                progress: Optional[Progress] = None) -> Phases:
    """Read a 4D CT: .seq.nrrd, a folder with one volume per phase, a DICOM folder, a case folder, a 4D image.

    Args:
        n_phases: the number of phases needed; fewer is an InputError (more are kept). Default: at least 2.
        check_hu_values: reject normalised images (all values in [-2, 2]) and warn on other non-HU ranges.
    Returns:
        Phases (float32 HU [P, Z, Y, X]); `source_info` says where they came from and how they were ordered.
    """
    progress = ensure(progress)
    path = Path(path)
    if not path.exists():
        raise InputError(f"'{path}' does not exist")
    if path.is_dir():
        phases = _read_folder(path, progress)
    elif volume_suffix(path) in (".seq.nrrd", ".nrrd", ".nhdr"):
        phases = _read_nrrd_any(path)
    elif volume_suffix(path):
        phases = _read_4d_image(path)
    else:
        raise InputError(f"'{path}': unknown file type; a 4D CT is {SEQUENCE_FORMS}")
    _validate_phases(phases, path, n_phases, check_hu_values, progress)
    return phases


def _read_nrrd_any(path: Path) -> Phases:
    from MedLVMLib.seqnrrd import nrrd_dimension

    if nrrd_dimension(path) == 3:
        raise InputError(f"'{path}' is a single 3D volume, but a 4D CT is needed: give {SEQUENCE_FORMS}")
    return _read_sequence_file(path)


def _validate_phases(phases: Phases, path: Path, n_phases: Optional[int], check_hu_values: bool,
                     progress: Progress) -> None:
    needed = 2 if n_phases is None else n_phases
    if phases.n_phases < needed:
        raise InputError(f"'{path}' has {phases.n_phases} phase(s) but {needed} are needed")
    check_finite(phases.array, path)
    warnings = check_hu(phases.array, path, strict=True) if check_hu_values else []
    phases.source_info["warnings"] = warnings
    progress.log(f"read {phases.n_phases} phases {phases.shape} from '{path}' "
                 f"(order: {phases.source_info.get('order_rule')})")
    for message in warnings:
        progress.log("warning: " + message)


def _storage_dtype(array: np.ndarray, dtype: str) -> np.dtype:
    if dtype != "auto":
        return np.dtype(dtype)
    if np.issubdtype(array.dtype, np.integer):
        return array.dtype
    if array.min() < -32768 or array.max() > 32767:
        return np.dtype(np.float32)
    integral = all(np.array_equal(item, np.round(item)) for item in array)  # per phase: small temporaries
    return np.dtype(np.int16) if integral else np.dtype(np.float32)


def write_phases(phases: Phases, path: PathLike, overwrite: bool = False, suffix: str = ".nrrd",
                 dtype: str = "auto", compress: bool = True, progress: Optional[Progress] = None) -> Path:
    """Write a 4D CT atomically: `path` ending in .seq.nrrd (a Slicer volume sequence) or a folder.

    Args:
        suffix: file type of the per-phase volumes in a folder (".nrrd", ".nii.gz", ".mha") or "dicom"
            (one DICOM series per phase).
        dtype: "auto" (int16 when every voxel is an integer HU, else float32), "int16" or "float32".
        compress: gzip the voxels (NRRD/NIfTI/MHA); False writes raw data, several times faster (temp files).
    """
    progress = ensure(progress)
    path = Path(path)
    check_finite(phases.array, "phases to write")
    kind = volume_suffix(path)
    if kind and kind != ".seq.nrrd":
        raise InputError(f"'{path}': a 4D CT is written as a .seq.nrrd file or a folder, not as '{kind}'")
    if not kind and suffix != "dicom" and suffix not in VOLUME_SUFFIXES:
        raise InputError(f"unknown phase file type '{suffix}'; use one of {', '.join(VOLUME_SUFFIXES)} or dicom")
    storage = _storage_dtype(phases.array, dtype)
    with atomic_path(path, overwrite) as tmp:
        if kind == ".seq.nrrd":
            write_sequence_file(phases, tmp, storage, compress=compress)
        elif suffix == "dicom":
            from MedLVMLib.dicom import write_dicom_phases

            write_dicom_phases(phases, tmp, progress=progress)
        else:
            from MedLVMLib.phasefolder import write_phase_folder

            write_phase_folder(phases, tmp, suffix, storage, progress, compress)
    return path


def write_sequence_file(phases: Phases, tmp: Path, storage: Union[np.dtype, str] = "auto",
                        node_class: str = "vtkMRMLScalarVolumeNode", compress: bool = True) -> None:
    """Write `phases` as a .seq.nrrd at `tmp` (not atomic: callers wrap it in `atomic_path`).

    `node_class` is the Slicer node type of the items (vtkMRMLLabelMapVolumeNode for label maps).
    """
    from MedLVMLib.seqnrrd import LABEL_ATTRIBUTE, SequenceArray, write_sequence_array

    attributes = {i: {LABEL_ATTRIBUTE: label} for i, (label, v) in enumerate(zip(phases.labels, phases.index_values))
                  if label != f"{v:g}{phases.index_unit}"}
    if isinstance(storage, str):
        storage = _storage_dtype(phases.array, storage)
    seq = SequenceArray(phases.array, phases.geometry, list(phases.index_values), phases.index_name,
                        phases.index_unit, "numeric", attributes, node_class)
    write_sequence_array(seq, tmp, compress_level=1 if compress else 0, dtype=storage)  # converted phase by phase
