"""DICOM 4D CT: one series per phase, or all phases in one series; phases ordered from the headers.

Reading groups files by SeriesInstanceUID (a series whose slice positions repeat is split by its temporal
tags) and orders the phases by the first rule that tells every phase apart:
  1. a percentage in SeriesDescription ("CT 50%", "Gated, 40.0%B"): also gives the index values;
  2. TemporalPositionIndex (0020,9128) or TemporalPositionIdentifier (0020,0100);
  3. acquisition order: AcquisitionTime / SeriesTime, then SeriesNumber (last resort).
The rule used is logged and stored in `Phases.source_info["order_rule"]`.
Headers are read with pydicom, pixels with SimpleITK (GDCM applies the rescale slope/intercept).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from MedLVMLib.errors import InputError
from MedLVMLib.imaging.volume import Phases, Volume, check_same_geometry, geometry_of
from MedLVMLib.progress import Progress, ensure

logger = logging.getLogger(__name__)
SPACING_TOLERANCE = 0.01  # of the slice spacing: rounding in ImagePositionPatient, not a missing slice
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_TAGS = ["SeriesInstanceUID", "SeriesDescription", "SeriesNumber", "SeriesTime", "AcquisitionTime",
         "TemporalPositionIndex", "TemporalPositionIdentifier", "AcquisitionNumber", "ImagePositionPatient",
         "ImageOrientationPatient", "InstanceNumber"]


@dataclass
class _Series:
    """The files of one phase and the header values used to order it."""

    key: str
    files: list = field(default_factory=list)  # (position along the slice normal, path)
    description: str = ""
    temporal: Optional[float] = None
    time: str = ""
    number: int = 0


def is_dicom_file(path: Path) -> bool:
    """A .dcm/.dicom/.ima name, or the 'DICM' magic at byte 128."""
    if path.suffix.lower() in (".dcm", ".dicom", ".ima"):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _header(path: Path):
    import pydicom

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=_TAGS)
    except Exception as exc:  # pydicom raises several types for broken files
        if path.suffix.lower() == ".dcm":
            raise InputError(f"'{path}' is not a readable DICOM file (truncated or corrupt): {exc}") from None
        return None


def _slice_position(ds) -> float:
    orientation = [float(v) for v in getattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 1, 0])]
    normal = np.cross(orientation[:3], orientation[3:])
    return float(np.dot(normal, [float(v) for v in getattr(ds, "ImagePositionPatient", [0, 0, 0])]))


def _temporal(ds) -> Optional[float]:
    for tag in ("TemporalPositionIndex", "TemporalPositionIdentifier"):
        value = getattr(ds, tag, None)
        if value not in (None, ""):
            return float(value)
    return None


def _scan(folder: Path) -> dict:
    """Series UID -> list of headers (with `.path` set)."""
    series: dict = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        ds = _header(path)
        if ds is None or "SeriesInstanceUID" not in ds:
            continue
        ds.path = path
        series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    if not series:
        raise InputError(f"no DICOM image series found in '{folder}'")
    return series


def _split_repeated(uid: str, headers: list) -> dict:
    """One series holding every phase (repeated slice positions): split it by a temporal tag."""
    positions = [round(_slice_position(ds), 3) for ds in headers]
    if len(set(positions)) == len(positions):
        return {uid: headers}
    for key in (_temporal, lambda ds: getattr(ds, "AcquisitionNumber", None)):
        values = [key(ds) for ds in headers]
        if None not in values and len(set(values)) > 1:
            groups: dict = {}
            for value, ds in zip(values, headers):
                groups.setdefault(f"{uid}/{value}", []).append(ds)
            return groups
    raise InputError(f"DICOM series {uid} ('{headers[0].path.parent}') repeats slice positions but has no "
                     "TemporalPositionIndex/Identifier or AcquisitionNumber to separate its phases")


def _make_series(key: str, headers: list) -> _Series:
    first = headers[0]
    return _Series(
        key=key, files=sorted((_slice_position(ds), ds.path) for ds in headers),
        description=str(getattr(first, "SeriesDescription", "")), temporal=_temporal(first),
        time=str(getattr(first, "AcquisitionTime", "") or getattr(first, "SeriesTime", "")),
        number=int(getattr(first, "SeriesNumber", 0) or 0),
    )


def group_series(folder: Path) -> list[_Series]:
    """Every phase series in `folder` (recursively), unordered."""
    groups: dict = {}
    for uid, headers in _scan(folder).items():
        groups.update(_split_repeated(uid, headers))
    return [_make_series(key, headers) for key, headers in groups.items()]


def order_series(series: list[_Series]) -> tuple[list[_Series], list[float], str]:
    """(series in phase order, index values in %, the rule used)."""
    n = len(series)
    percents = [_PERCENT.search(s.description) for s in series]
    if all(percents) and len({float(m.group(1)) for m in percents}) == n:
        pairs = sorted(zip([float(m.group(1)) for m in percents], range(n)))
        return [series[i] for _, i in pairs], [v for v, _ in pairs], "percentage in SeriesDescription"
    temporal = [s.temporal for s in series]
    if None not in temporal and len(set(temporal)) == n:
        ordered = sorted(series, key=lambda s: s.temporal)
        return ordered, [100.0 * i / n for i in range(n)], "TemporalPositionIndex/Identifier"
    ordered = sorted(series, key=lambda s: (s.time, s.number))
    return ordered, [100.0 * i / n for i in range(n)], "acquisition order (AcquisitionTime, then SeriesNumber)"


def _spacing_problem(positions: np.ndarray) -> str:
    """Why sorted slice positions (mm along the slice normal) are not evenly spaced, or ""."""
    steps = np.diff(positions)
    if len(steps) < 2:
        return ""
    expected = float(np.sort(steps)[(len(steps) - 1) // 2])  # the lower median: a gap cannot set it
    worst = int(np.argmax(np.abs(steps - expected)))
    if abs(steps[worst] - expected) <= max(SPACING_TOLERANCE * expected, 0.01):
        return ""
    a, b, step = (f"{round(float(v), 3):g}" for v in (positions[worst], positions[worst + 1], steps[worst]))
    if steps[worst] > expected:
        return f"a gap of {step} mm between slices at {a} and {b} mm, where the others are {expected:g} mm apart " \
               "(a missing slice?)"
    return f"slices at {a} and {b} mm are {step} mm apart, where the others are {expected:g} mm apart " \
           "(an extra or repeated slice?)"


def check_slice_spacing(series: _Series) -> None:
    """Refuse a series whose slices are not evenly spaced: reading it as a regular grid would misplace them."""
    name = series.description or series.key
    if len(series.files) < 2:
        raise InputError(f"DICOM series '{name}' has one slice; a 3D CT is needed")
    problem = _spacing_problem(np.asarray([position for position, _ in series.files]))
    if problem:
        raise InputError(f"DICOM series '{name}' in '{series.files[0][1].parent}' is not evenly spaced: {problem}; "
                         "MedLVM does not resample: export the series with every slice, or resample it first")


def _read_series(series: _Series) -> Volume:
    import SimpleITK as sitk

    check_slice_spacing(series)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(path) for _, path in series.files])
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"DICOM series in '{series.files[0][1].parent}' cannot be read: "
                         f"{str(exc).strip().splitlines()[-1]}") from None
    return Volume(sitk.GetArrayFromImage(image).astype(np.float32, copy=False), geometry_of(image))


def read_dicom_volume(folder: Path) -> Volume:
    """A DICOM folder with exactly one series as a 3D volume."""
    series = group_series(Path(folder))
    if len(series) != 1:
        raise InputError(f"'{folder}' holds {len(series)} DICOM series; a single volume needs exactly one")
    return _read_series(series[0])


def read_dicom_phases(folder: Path, progress: Optional[Progress] = None) -> Phases:
    """A DICOM 4D CT folder as Phases (see the module docstring for the ordering rules)."""
    progress = ensure(progress)
    ordered, values, rule = order_series(group_series(Path(folder)))
    message = f"DICOM '{folder}': {len(ordered)} phase series ordered by {rule}"
    logger.info(message)
    progress.log(message)
    for series in ordered:  # every series before reading any pixels
        check_slice_spacing(series)
    progress.stage("reading DICOM phases", len(ordered))
    volumes = []
    for series in ordered:
        volumes.append(_read_series(series))
        progress.advance()
    names = [s.description or s.key for s in ordered]
    check_same_geometry([(name, v.array.shape, v.geometry) for name, v in zip(names, volumes)])
    info = {"path": str(folder), "format": "dicom", "order_rule": rule, "series": names}
    return Phases(np.stack([v.array for v in volumes]), volumes[0].geometry, index_values=values, source_info=info)


def write_dicom_phases(phases: Phases, folder: Path, progress: Optional[Progress] = None, description: str = "4DCT",
                       phase_in_description: bool = True, temporal_tags: bool = True,
                       single_series: bool = False) -> None:
    """Write int16 CT slices into `folder`, one series per phase (or one series holding all phases).

    SeriesDescription is "<description> <label>" (e.g. "4DCT 50%") when `phase_in_description`;
    TemporalPositionIndex/Identifier = phase number + 1 when `temporal_tags`; AcquisitionTime grows with
    the phase number. Slices are named phase_PPP_KKKK.dcm.
    """
    import pydicom.uid
    import SimpleITK as sitk

    progress = ensure(progress)
    folder.mkdir(parents=True, exist_ok=True)
    study, shared_series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    progress.stage("writing DICOM", phases.n_phases)
    for p, volume in enumerate(np.clip(np.round(phases.array), -32768, 32767).astype(np.int16)):
        tags = {"0008|0060": "CT", "0010|0010": "MedLVM^Phantom", "0010|0020": "MEDLVM", "0020|000d": study,
                "0020|000e": shared_series if single_series else pydicom.uid.generate_uid(),
                "0008|103e": f"{description} {phases.labels[p]}" if phase_in_description else description,
                "0020|0011": "1" if single_series else str(phases.n_phases - p),  # reversed: must not decide
                "0008|0032": f"{100000 + 7 * p:06d}", "0018|0050": f"{phases.geometry.spacing[2]:.6f}",
                "0028|1052": "0", "0028|1053": "1", "0020|0012": str(p + 1)}
        if temporal_tags:
            tags.update({"0020|9128": str(p + 1), "0020|0100": str(p + 1)})
        _write_slices(writer, volume, phases.geometry, tags, folder, f"phase_{p:03d}")
        progress.advance()


def _write_slices(writer, volume: np.ndarray, geometry, tags: dict, folder: Path, stem: str) -> None:
    import pydicom.uid
    import SimpleITK as sitk

    d = np.asarray(geometry.direction).reshape(3, 3)
    orientation = "\\".join(f"{v:.6f}" for v in np.concatenate([d[:, 0], d[:, 1]]))
    for k in range(volume.shape[0]):
        position = np.asarray(geometry.origin) + k * geometry.spacing[2] * d[:, 2]
        image = sitk.GetImageFromArray(volume[k])
        image.SetSpacing(geometry.spacing[:2])
        slice_tags = {**tags, "0020|0037": orientation, "0020|0032": "\\".join(f"{v:.6f}" for v in position),
                      "0020|0013": str(k + 1), "0008|0018": pydicom.uid.generate_uid()}
        for tag, value in slice_tags.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{stem}_{k:04d}.dcm"))
        writer.Execute(image)
