"""Reading and writing CT volumes and 4D CTs in every supported form: one dispatch for
.seq.nrrd, phase folders, DICOM and single volumes (the readers live beside it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Union

import numpy as np

from MedLVMLib.errors import InputError
from MedLVMLib.imaging.volume import (
    VOLUME_SUFFIXES,
    PathLike,
    Phases,
    check_finite,
    check_hu,
    geometry_of,
    volume_suffix,
)
from MedLVMLib.imaging.volume_io import sitk_read
from MedLVMLib.outputs import atomic_path
from MedLVMLib.progress import Progress, ensure

logger = logging.getLogger(__name__)



# ----------------------------------------------------------------------------------------------------------------
# 4D CT: read_phases / write_phases

SEQUENCE_FORMS = "a .seq.nrrd, a folder with one volume per phase (.nii.gz/.nrrd/.mha) or a DICOM folder"


def _read_folder(folder: Path, progress: Progress) -> Phases:
    entries = [f for f in folder.iterdir() if not f.name.startswith(".")]
    if not entries:
        raise InputError(f"folder '{folder}' is empty; a 4D CT is {SEQUENCE_FORMS}")
    if (folder / "ct.seq.nrrd").is_file():  # a case folder (MedLVMLib.imaging.cases)
        return _read_sequence_file(folder / "ct.seq.nrrd")
    from MedLVMLib.imaging.phasefolder import image_files, read_phase_folder

    if image_files(folder):
        return read_phase_folder(folder, progress)
    from MedLVMLib.imaging.dicom import is_dicom_file, read_dicom_phases

    if any(is_dicom_file(f) for f in folder.rglob("*") if f.is_file()):
        return read_dicom_phases(folder, progress)
    raise InputError(f"folder '{folder}' holds no volumes ({', '.join(VOLUME_SUFFIXES)}) and no DICOM files")


def _phases_from_sequence(seq, path: Path) -> Phases:
    """Phases from a SequenceArray: numeric index values as they are; text values ("50%") parsed if possible."""
    from MedLVMLib.imaging.phasefolder import phase_number
    from MedLVMLib.imaging.seqnrrd import LABEL_ATTRIBUTE

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
    from MedLVMLib.imaging.seqnrrd import read_sequence_array

    return _phases_from_sequence(read_sequence_array(path, dtype=np.float32), path)


def _read_4d_image(path: Path) -> Phases:
    import SimpleITK as sitk

    image = sitk_read(path)
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
    from MedLVMLib.imaging.seqnrrd import nrrd_dimension

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
            from MedLVMLib.imaging.dicom import write_dicom_phases

            write_dicom_phases(phases, tmp, progress=progress)
        else:
            from MedLVMLib.imaging.phasefolder import write_phase_folder

            write_phase_folder(phases, tmp, suffix, storage, progress, compress)
    return path


def write_sequence_file(phases: Phases, tmp: Path, storage: Union[np.dtype, str] = "auto",
                        node_class: str = "vtkMRMLScalarVolumeNode", compress: bool = True) -> None:
    """Write `phases` as a .seq.nrrd at `tmp` (not atomic: callers wrap it in `atomic_path`).

    `node_class` is the Slicer node type of the items (vtkMRMLLabelMapVolumeNode for label maps).
    """
    from MedLVMLib.imaging.seqnrrd import LABEL_ATTRIBUTE, SequenceArray, write_sequence_array

    attributes = {i: {LABEL_ATTRIBUTE: label} for i, (label, v) in enumerate(zip(phases.labels, phases.index_values))
                  if label != f"{v:g}{phases.index_unit}"}
    if isinstance(storage, str):
        storage = _storage_dtype(phases.array, storage)
    seq = SequenceArray(phases.array, phases.geometry, list(phases.index_values), phases.index_name,
                        phases.index_unit, "numeric", attributes, node_class)
    write_sequence_array(seq, tmp, compress_level=1 if compress else 0, dtype=storage)  # converted phase by phase
