"""NRRD volume sequences (.seq.nrrd): the file 3D Slicer's vtkMRMLVolumeSequenceStorageNode reads and writes.

One 4D NRRD: three domain axes (i, j, k = x, y, z) and one "list" axis holding the sequence items.
Slicer >= 5 writes the list axis last (each item contiguous), older files have it first; both are read.
Sequence metadata are NRRD key/value pairs: "axis N index type:=numeric", "axis N index values:=0 10 20",
"axis N item I <attribute>:=<value>"; the index name and unit are the list axis' `labels` and `units`.
The NRRD codec is pynrrd, which keeps these `key:=value` fields (SimpleITK drops them); this module maps
them to and from `SequenceArray` and turns every malformed or truncated file into an InputError.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import nrrd
import numpy as np

from MedLVMLib.errors import InputError
from MedLVMLib.imaging.volume import Geometry

PathLike = Union[str, Path]
LABEL_ATTRIBUTE = "MedLVM.Label"  # per-item attribute holding a phase label that differs from "<value><unit>"
_LPS_SPACES = ("left-posterior-superior", "lps")
_RAS_SPACES = ("right-anterior-superior", "ras")


@dataclass
class SequenceArray:
    """A .seq.nrrd in memory, any voxel type: array [P, Z, Y, X], one geometry, index and item attributes."""

    array: np.ndarray
    geometry: Geometry
    index_values: list
    index_name: str = "phase"
    index_unit: str = "%"
    index_type: str = "numeric"
    item_attributes: dict = field(default_factory=dict)  # {item number: {name: value}}
    node_class: str = "vtkMRMLScalarVolumeNode"  # Slicer node class of the items (vtkMRMLLabelMapVolumeNode: labels)


def _read(path: Path) -> tuple[np.ndarray, dict]:
    """(data in C order, header) of a NRRD file; InputError naming the file for anything malformed."""
    if not path.is_file():
        raise InputError(f"'{path}' does not exist or is not a file")
    with open(path, "rb") as f:
        if not f.read(7) == b"NRRD000":
            raise InputError(f"'{path}' is not a NRRD file (no NRRD magic line)")
    try:
        return nrrd.read(str(path), index_order="C")
    except (zlib.error, EOFError) as exc:
        raise InputError(f"'{path}' is truncated or corrupt (compressed data: {exc})") from None
    except nrrd.NRRDError as exc:
        text = str(exc)
        if "size of the data" in text.lower() or "data does not equal" in text.lower():
            raise InputError(f"'{path}' is truncated: {text}") from None
        raise InputError(f"'{path}': malformed NRRD header ({text})") from None
    except (ValueError, TypeError, KeyError) as exc:  # pynrrd's parsers on a bad field value
        raise InputError(f"'{path}' is truncated or malformed ({type(exc).__name__}: {exc})") from None


def _geometry(path: Path, header: dict, domain_axes: list[int]) -> Geometry:
    space = str(header.get("space", "left-posterior-superior")).lower()
    if space not in _LPS_SPACES + _RAS_SPACES:
        raise InputError(f"'{path}': unsupported NRRD space {space!r}")
    flip = np.array([-1.0, -1.0, 1.0]) if space in _RAS_SPACES else np.ones(3)
    directions = header.get("space directions")
    if directions is None or len(directions) <= max(domain_axes):
        columns = [np.eye(3)[i] for i in range(3)]
    else:
        columns = [np.asarray(directions[a], float) * flip for a in domain_axes]
    if any(not np.all(np.isfinite(c)) for c in columns):
        raise InputError(f"'{path}': a domain axis has no 'space directions' vector")
    spacing = [float(np.linalg.norm(c)) for c in columns]
    if min(spacing) <= 0:
        raise InputError(f"'{path}': zero voxel spacing in 'space directions'")
    direction = np.stack([c / s for c, s in zip(columns, spacing)], axis=1)  # columns = axis directions
    origin = np.asarray(header.get("space origin", np.zeros(3)), float) * flip
    return Geometry(tuple(spacing), tuple(float(v) for v in origin), tuple(float(v) for v in direction.ravel()))


def read_sequence_array(path: PathLike, dtype: Optional[np.dtype] = None) -> SequenceArray:
    """Read a 4D .seq.nrrd (either list-axis position). Raises InputError when not 4D.

    Args:
        dtype: convert the voxels to this type (in one pass); default: keep the file's type.
    Returns:
        SequenceArray with a writable, C-contiguous array [P, Z, Y, X].
    """
    path = Path(path)
    if nrrd_dimension(path) != 4:
        sizes = list(nrrd.read_header(str(path)).get("sizes", []))
        raise InputError(f"'{path}' is a {len(sizes)}D image (sizes {sizes}); a volume sequence is a 4D NRRD "
                         "(x, y, z and a list axis of phases)")
    data, header = _read(path)
    kinds = [str(k).lower() for k in header.get("kinds", ["domain", "domain", "domain", "list"])]
    list_axes = [a for a, kind in enumerate(kinds) if kind not in ("domain", "space")]
    list_axis = list_axes[0] if list_axes else 3
    domain_axes = [a for a in range(4) if a != list_axis]
    array = np.moveaxis(data, 3 - list_axis, 0)  # (P, Z, Y, X): numpy axes are NRRD axes reversed
    target = np.dtype(dtype) if dtype is not None else array.dtype.newbyteorder("=")
    array = np.array(array, dtype=target, order="C")  # one copy: writable, contiguous, native byte order
    n = array.shape[0]
    index_type = str(header.get(f"axis {list_axis} index type", "numeric")).strip()
    raw_values = str(header.get(f"axis {list_axis} index values", "")).split()
    if len(raw_values) != n:
        raw_values = [str(i) for i in range(n)]
    values = [float(v) for v in raw_values] if index_type == "numeric" else raw_values
    labels, units = list(header.get("labels", [])), list(header.get("units", []))
    attributes: dict = {}
    for key, value in header.items():
        match = re.match(rf"axis {list_axis} item (\d+) (.+)$", key)
        if match:
            attributes.setdefault(int(match.group(1)), {})[match.group(2)] = str(value)
    return SequenceArray(
        array=array, geometry=_geometry(path, header, domain_axes), index_values=values,
        index_name=labels[list_axis] if len(labels) == 4 and labels[list_axis] else "phase",
        index_unit=units[list_axis] if len(units) == 4 else "", index_type=index_type, item_attributes=attributes,
        node_class=str(header.get("DataNodeClassName", "vtkMRMLScalarVolumeNode")).strip(),
    )


def write_sequence_array(seq: SequenceArray, path: Path, compress_level: int = 1,
                         dtype: Optional[np.dtype] = None) -> None:
    """Write `seq` as a Slicer volume sequence (.seq.nrrd, list axis last, gzip). Not atomic: see write_phases.

    Args:
        compress_level: zlib level 1-9 (1: fast, files ~10 % larger than 9), 0 for raw.
        dtype: voxel type in the file (default: the array's).
    """
    array = seq.array
    if array.ndim != 4:
        raise InputError(f"a volume sequence needs a [P, Z, Y, X] array, got {array.shape}")
    file_dtype = np.dtype(dtype or array.dtype).newbyteorder("<")
    if file_dtype.kind not in "iuf" or file_dtype.itemsize > 8 or file_dtype == np.float16:
        raise InputError(f"voxel type {file_dtype} cannot be written to NRRD")
    d = np.asarray(seq.geometry.direction, dtype=float).reshape(3, 3)
    directions = np.vstack([d[:, i] * seq.geometry.spacing[i] for i in range(3)] + [np.full(3, np.nan)])
    values = " ".join(f"{v:.10g}" if seq.index_type == "numeric" else str(v) for v in seq.index_values)
    header = {
        "space": "left-posterior-superior",
        "space directions": directions,
        "kinds": ["domain", "domain", "domain", "list"],
        "labels": ["", "", "", seq.index_name],
        "units": ["", "", "", seq.index_unit],
        "encoding": "gzip" if compress_level > 0 else "raw",
        "space origin": np.asarray(seq.geometry.origin, float),
        "DataNodeClassName": seq.node_class,
        "axis 3 index type": seq.index_type,
        "axis 3 index values": values,
    }
    for item, attributes in sorted(seq.item_attributes.items()):
        header.update({f"axis 3 item {item} {name}": str(value) for name, value in attributes.items()})
    data = np.ascontiguousarray(array, dtype=file_dtype)
    nrrd.write(str(path), data, header, compression_level=max(int(compress_level), 1), index_order="C")


def nrrd_dimension(path: PathLike) -> int:
    """The `dimension` field of a NRRD header (reads the header only)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"'{path}' does not exist or is not a file")
    try:
        header = nrrd.read_header(str(path))
    except nrrd.NRRDError as exc:
        text = str(exc)
        if "magic" in text.lower():
            raise InputError(f"'{path}' is not a NRRD file (no NRRD magic line)") from None
        raise InputError(f"'{path}': malformed NRRD header ({text})") from None
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InputError(f"'{path}': malformed NRRD header ({exc})") from None
    if "dimension" not in header:
        raise InputError(f"'{path}': NRRD header has no dimension field")
    return int(header["dimension"])
