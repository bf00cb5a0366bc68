"""NRRD volume sequences (.seq.nrrd): the file 3D Slicer's vtkMRMLVolumeSequenceStorageNode reads and writes.

One 4D NRRD: three domain axes (i, j, k = x, y, z) and one "list" axis holding the sequence items.
Slicer >= 5 writes the list axis last (each item contiguous), older files have it first; both are read.
Sequence metadata are NRRD key/value pairs: "axis N index type:=numeric", "axis N index values:=0 10 20",
"axis N item I <attribute>:=<value>"; the index name and unit are the list axis' `labels` and `units`.
Written without SimpleITK (which does not keep these fields) in plain numpy + zlib.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from MedLVMLib.errors import InputError
from MedLVMLib.imaging.volume import Geometry

PathLike = Union[str, Path]

_NRRD_TYPES = {
    "signed char": "i1", "int8": "i1", "int8_t": "i1", "uchar": "u1", "unsigned char": "u1", "uint8": "u1",
    "uint8_t": "u1", "short": "i2", "short int": "i2", "signed short": "i2", "signed short int": "i2",
    "int16": "i2", "int16_t": "i2", "ushort": "u2", "unsigned short": "u2", "unsigned short int": "u2",
    "uint16": "u2", "uint16_t": "u2", "int": "i4", "signed int": "i4", "int32": "i4", "int32_t": "i4",
    "uint": "u4", "unsigned int": "u4", "uint32": "u4", "uint32_t": "u4", "longlong": "i8", "long long": "i8",
    "int64": "i8", "int64_t": "i8", "ulonglong": "u8", "unsigned long long": "u8", "uint64": "u8",
    "uint64_t": "u8", "float": "f4", "double": "f8",
}
_NRRD_TYPE_NAMES = {"i1": "int8", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int", "u4": "uint",
                    "i8": "longlong", "u8": "ulonglong", "f4": "float", "f8": "double"}
LABEL_ATTRIBUTE = "MedLVM.Label"  # per-item attribute holding a phase label that differs from "<value><unit>"


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


def _parse_vector(text: str) -> Optional[list[float]]:
    text = text.strip()
    if text == "none":
        return None
    return [float(v) for v in text.strip("()").split(",")]


def _split_quoted(text: str) -> list[str]:
    return re.findall(r'"([^"]*)"', text) if '"' in text else text.split()


def _read_nrrd_header(path: Path) -> tuple[dict, dict, bytes]:
    """(fields, custom key/values, raw data bytes after the header)."""
    with open(path, "rb") as f:
        magic = f.readline()
        if not magic.startswith(b"NRRD000"):
            raise InputError(f"'{path}' is not a NRRD file (no NRRD magic line)")
        fields, custom = {}, {}
        for raw in iter(f.readline, b""):
            line = raw.decode("latin-1").rstrip("\r\n")
            if not line:
                break
            if line.startswith("#"):
                continue
            if ":=" in line:
                key, value = line.split(":=", 1)
                custom[key] = value
            elif ": " in line:
                key, value = line.split(": ", 1)
                fields[key.strip().lower()] = value.strip()
            else:
                raise InputError(f"'{path}': malformed NRRD header line {line!r}")
        data = f.read()
    return fields, custom, data


def _decode_nrrd_data(path: Path, fields: dict, data: bytes, sizes: list[int]) -> np.ndarray:
    type_name = fields.get("type", "").lower()
    if type_name not in _NRRD_TYPES:
        raise InputError(f"'{path}': unsupported NRRD voxel type {type_name!r}")
    if "data file" in fields or "datafile" in fields:
        raise InputError(f"'{path}': detached NRRD data files are not supported; save as one .seq.nrrd file")
    dtype = np.dtype(_NRRD_TYPES[type_name]).newbyteorder("<" if fields.get("endian", "little") == "little" else ">")
    encoding = fields.get("encoding", "raw").lower()
    if encoding in ("gzip", "gz"):
        try:
            data = zlib.decompress(data, wbits=47)
        except zlib.error as exc:
            raise InputError(f"'{path}' is truncated or corrupt (gzip data: {exc})") from None
    elif encoding not in ("raw",):
        raise InputError(f"'{path}': unsupported NRRD encoding {encoding!r} (raw and gzip are supported)")
    count = int(np.prod(sizes))
    if len(data) < count * dtype.itemsize:
        raise InputError(f"'{path}' is truncated: {len(data)} bytes of voxel data, {count * dtype.itemsize} expected")
    view = np.frombuffer(data, dtype=dtype, count=count).reshape(sizes[::-1])  # read-only, no copy yet
    return view if dtype.isnative else view.astype(dtype.newbyteorder("="))


def _nrrd_geometry(path: Path, fields: dict, domain_axes: list[int]) -> Geometry:
    space = fields.get("space", "left-posterior-superior").lower()
    if space not in ("left-posterior-superior", "lps", "right-anterior-superior", "ras"):
        raise InputError(f"'{path}': unsupported NRRD space {space!r}")
    flip = np.array([-1.0, -1.0, 1.0]) if space in ("right-anterior-superior", "ras") else np.ones(3)
    vectors = re.findall(r"\([^)]*\)|none", fields.get("space directions", ""))
    if len(vectors) < max(domain_axes) + 1:
        columns = [np.eye(3)[i] for i in range(3)]
    else:
        columns = [np.asarray(_parse_vector(vectors[a])) * flip for a in domain_axes]
    spacing = [float(np.linalg.norm(c)) for c in columns]
    if min(spacing) <= 0:
        raise InputError(f"'{path}': zero voxel spacing in 'space directions'")
    direction = np.stack([c / s for c, s in zip(columns, spacing)], axis=1)  # columns = axis directions
    origin = np.asarray(_parse_vector(fields.get("space origin", "(0,0,0)"))) * flip
    return Geometry(tuple(spacing), tuple(float(v) for v in origin), tuple(float(v) for v in direction.ravel()))


def read_sequence_array(path: PathLike, dtype: Optional[np.dtype] = None) -> SequenceArray:
    """Read a 4D .seq.nrrd (either list-axis position). Raises InputError when not 4D.

    Args:
        dtype: convert the voxels to this type (in one pass); default: keep the file's type.
    Returns:
        SequenceArray with a writable, C-contiguous array [P, Z, Y, X].
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"'{path}' does not exist or is not a file")
    fields, custom, data = _read_nrrd_header(path)
    sizes = [int(v) for v in fields.get("sizes", "").split()]
    if len(sizes) != 4:
        raise InputError(f"'{path}' is a {len(sizes)}D image (sizes {sizes}); a volume sequence is a 4D NRRD "
                         "(x, y, z and a list axis of phases)")
    kinds = fields.get("kinds", "domain domain domain list").split()
    list_axes = [a for a, kind in enumerate(kinds) if kind.lower() not in ("domain", "space")]
    list_axis = list_axes[0] if list_axes else 3
    domain_axes = [a for a in range(4) if a != list_axis]
    array = _decode_nrrd_data(path, fields, data, sizes)
    array = np.moveaxis(array, 3 - list_axis, 0)  # (P, Z, Y, X): numpy axes are NRRD axes reversed
    array = np.array(array, dtype=dtype or array.dtype, order="C")  # one copy: writable, contiguous
    n = array.shape[0]
    index_type = custom.get(f"axis {list_axis} index type", "numeric").strip()
    raw_values = custom.get(f"axis {list_axis} index values", "").split()
    if len(raw_values) != n:
        raw_values = [str(i) for i in range(n)]
    values = [float(v) for v in raw_values] if index_type == "numeric" else raw_values
    labels = _split_quoted(fields.get("labels", ""))
    units = _split_quoted(fields.get("units", ""))
    attributes: dict = {}
    for key, value in custom.items():
        match = re.match(rf"axis {list_axis} item (\d+) (.+)$", key)
        if match:
            attributes.setdefault(int(match.group(1)), {})[match.group(2)] = value
    return SequenceArray(
        array=array, geometry=_nrrd_geometry(path, fields, domain_axes), index_values=values,
        index_name=labels[list_axis] if len(labels) == 4 and labels[list_axis] else "phase",
        index_unit=units[list_axis] if len(units) == 4 else "", index_type=index_type, item_attributes=attributes,
        node_class=custom.get("DataNodeClassName", "vtkMRMLScalarVolumeNode").strip(),
    )


def _fmt(values) -> str:
    return "(" + ",".join(f"{float(v):.17g}" for v in values) + ")"


def write_sequence_array(seq: SequenceArray, path: Path, compress_level: int = 1,
                         dtype: Optional[np.dtype] = None) -> None:
    """Write `seq` as a Slicer volume sequence (.seq.nrrd, list axis last, gzip). Not atomic: see write_phases.

    Args:
        compress_level: zlib level 1-9 (1: fast, files ~10 % larger than 9), 0 for raw.
        dtype: voxel type in the file (default: the array's); items are converted one at a time.
    """
    array = seq.array
    if array.ndim != 4:
        raise InputError(f"a volume sequence needs a [P, Z, Y, X] array, got {array.shape}")
    file_dtype = np.dtype(dtype or array.dtype).newbyteorder("<")
    code = file_dtype.str[1:]
    if code not in _NRRD_TYPE_NAMES:
        raise InputError(f"voxel type {array.dtype} cannot be written to NRRD")
    d = np.asarray(seq.geometry.direction, dtype=float).reshape(3, 3)
    spacing = seq.geometry.spacing
    directions = " ".join(_fmt(d[:, i] * spacing[i]) for i in range(3))
    values = " ".join(f"{v:.10g}" if seq.index_type == "numeric" else str(v) for v in seq.index_values)
    lines = [
        "NRRD0004", "# Complete NRRD file format specification at:",
        "# http://teem.sourceforge.net/nrrd/format.html", f"type: {_NRRD_TYPE_NAMES[code]}", "dimension: 4",
        "space: left-posterior-superior", "sizes: " + " ".join(str(s) for s in array.shape[:0:-1]) + f" {len(array)}",
        f"space directions: {directions} none", "kinds: domain domain domain list",
        f'labels: "" "" "" "{seq.index_name}"', f'units: "" "" "" "{seq.index_unit}"', "endian: little",
        "encoding: " + ("gzip" if compress_level > 0 else "raw"), f"space origin: {_fmt(seq.geometry.origin)}",
        f"DataNodeClassName:={seq.node_class}", f"axis 3 index type:={seq.index_type}",
        f"axis 3 index values:={values}",
    ]
    for item, attributes in sorted(seq.item_attributes.items()):
        lines += [f"axis 3 item {item} {name}:={value}" for name, value in attributes.items()]
    with open(path, "wb") as f:
        f.write(("\n".join(lines) + "\n\n").encode("latin-1"))
        packer = zlib.compressobj(compress_level, zlib.DEFLATED, 31) if compress_level > 0 else None
        for item in array:  # one phase at a time keeps the memory peak low
            chunk = np.ascontiguousarray(item, dtype=file_dtype).tobytes()
            f.write(packer.compress(chunk) if packer else chunk)
        if packer:
            f.write(packer.flush())


def nrrd_dimension(path: PathLike) -> int:
    """The `dimension` field of a NRRD header (reads the header only)."""
    with open(path, "rb") as f:
        if not f.readline().startswith(b"NRRD000"):
            raise InputError(f"'{path}' is not a NRRD file (no NRRD magic line)")
        for raw in iter(f.readline, b""):
            line = raw.decode("latin-1").strip()
            if not line:
                break
            if line.lower().startswith("dimension:"):
                return int(line.split(":", 1)[1])
    raise InputError(f"'{path}': NRRD header has no dimension field")
