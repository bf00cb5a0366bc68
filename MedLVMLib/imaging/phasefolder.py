"""A 4D CT as a folder with one volume per phase (.nrrd, .nii.gz, .mha, ...).

Reading orders the files by the phase number in their names ("phase_50", "50%", "P50", "ct_05"), or by the
`phases.json` sidecar that `write_phases` puts beside them (file names, index values and labels, so a folder
written here reads back exactly). Written names sort in phase order: phase_000.nrrd, phase_010.nrrd, ...
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import numpy as np

from MedLVMLib.errors import InputError
from MedLVMLib.imaging.volume import VOLUME_SUFFIXES, Geometry, Phases, check_same_geometry, to_image, volume_suffix
from MedLVMLib.imaging.volume_io import read_volume
from MedLVMLib.progress import Progress

FOLDER_INDEX = "phases.json"  # optional sidecar of a phase folder: file names in order, index values, labels
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_PHASE_PATTERNS = (_PERCENT, re.compile(r"(?:phase|ph|p|t)[\s_\-]*(\d+(?:\.\d+)?)", re.I),
                   re.compile(r"(\d+(?:\.\d+)?)(?!.*\d)"))


def phase_number(name: str) -> tuple[Optional[float], bool]:
    """Phase number in a file name or description and whether it was written as a percentage.

    Tried in order: "50%", "phase_50" / "P50" / "T50", the last number ("ct_05"). (None, False) if none.
    """
    for pattern in _PHASE_PATTERNS:
        match = pattern.search(name)
        if match:
            return float(match.group(1)), pattern is _PERCENT
    return None, False


def index_from_numbers(numbers: list[float], percent: bool) -> list[float]:
    """Phase numbers -> percent of the cycle. Ordinals 0..n-1 (e.g. "ct_0".."ct_9") become 0, 10, ... %."""
    n = len(numbers)
    ordinal = not percent and all(float(v).is_integer() for v in numbers) and max(numbers) < n
    return [100.0 * v / n for v in numbers] if ordinal else [float(v) for v in numbers]


def image_files(folder: Path) -> list[Path]:
    files = [f for f in sorted(folder.iterdir()) if f.is_file() and not f.name.startswith(".")]
    return [f for f in files if volume_suffix(f) in VOLUME_SUFFIXES and not f.name.lower().endswith(".raw")]


def order_folder(folder: Path, files: list[Path]) -> tuple[list[Path], list[float], Optional[list[str]], str]:
    """(files in phase order, index values, labels or None, the rule used)."""
    sidecar = folder / FOLDER_INDEX
    if sidecar.exists():
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        ordered = [folder / name for name in meta["files"]]
        missing = [str(f) for f in ordered if not f.exists()]
        if missing:
            raise InputError(f"'{sidecar}' lists missing files: {', '.join(missing)}")
        return ordered, [float(v) for v in meta["index_values"]], meta.get("labels"), f"listed in {FOLDER_INDEX}"
    numbered = []
    for f in files:
        number, percent = phase_number(f.name[: -len(volume_suffix(f))])
        if number is None:
            raise InputError(f"'{f}': no phase number in the file name (expected e.g. 'phase_50.nii.gz', "
                             "'CT_50%.nrrd', 'P50.mha' or 'ct_05.nii.gz')")
        numbered.append((number, percent, f))
    numbered.sort(key=lambda item: item[0])
    numbers = [item[0] for item in numbered]
    if len(set(numbers)) != len(numbers):
        dup = sorted({v for v in numbers if numbers.count(v) > 1})
        raise InputError(f"'{folder}': several files have the same phase number {dup[0]:g}; keep one per phase")
    values = index_from_numbers(numbers, any(item[1] for item in numbered))
    return [item[2] for item in numbered], values, None, "phase number in the file names"


def _header(path: Path) -> tuple[tuple, Geometry]:
    """(array shape [Z, Y, X], geometry) from the image header only: cheap checks before loading voxels."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(f"'{path}' is not a readable image (truncated, corrupt or not an image file)") from None
    if reader.GetDimension() != 3:
        raise InputError(f"'{path}' is a {reader.GetDimension()}D image; each phase must be one 3D volume")
    direction = tuple(float(v) for v in reader.GetDirection())
    geometry = Geometry(tuple(reader.GetSpacing()), tuple(reader.GetOrigin()), direction)
    return tuple(reader.GetSize())[::-1], geometry


def read_phase_folder(folder: Path, progress: Progress) -> Phases:
    """Read a folder with one 3D volume per phase (grids are checked from the headers before any voxel is read)."""
    ordered, values, labels, rule = order_folder(folder, image_files(folder))
    check_same_geometry([(f.name,) + _header(f) for f in ordered])
    progress.stage("reading phases", len(ordered))
    first = read_volume(ordered[0])
    array = np.empty((len(ordered),) + first.array.shape, dtype=np.float32)  # (P, Z, Y, X)
    array[0] = first.array
    progress.advance()
    for p, f in enumerate(ordered[1:], start=1):
        array[p] = read_volume(f).array
        progress.advance()
    info = {"path": str(folder), "format": "folder", "files": [f.name for f in ordered], "order_rule": rule}
    return Phases(array, first.geometry, labels=labels or [], index_values=values, source_info=info)


def phase_file_name(value: float, suffix: str = ".nrrd") -> str:
    """'phase_050.nrrd' for 50 %: names that sort in phase order."""
    return f"phase_{int(value):03d}{suffix}" if float(value).is_integer() else f"phase_{value:05.1f}{suffix}"


def write_phase_folder(phases: Phases, folder: Path, suffix: str, storage: np.dtype, progress: Progress,
                       compress: bool = True) -> None:
    """Write one volume per phase into the new folder `folder`, plus the phases.json sidecar."""
    import SimpleITK as sitk

    names = [phase_file_name(v, suffix) for v in phases.index_values]
    if len(set(names)) != len(names):
        raise InputError(f"phase index values {phases.index_values} give duplicate file names")
    folder.mkdir(parents=True)
    progress.stage("writing phases", phases.n_phases)
    for name, volume in zip(names, phases.array):
        sitk.WriteImage(to_image(volume.astype(storage, copy=False), phases.geometry), str(folder / name), compress)
        progress.advance()
    meta = {"files": names, "index_values": list(phases.index_values), "labels": list(phases.labels),
            "index_name": phases.index_name, "index_unit": phases.index_unit}
    (folder / FOLDER_INDEX).write_text(json.dumps(meta, indent=1))
