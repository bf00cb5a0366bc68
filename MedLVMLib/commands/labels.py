"""Label maps on the command line: structure names (--names) and the structure to track (--structure).

Names come from '5=liver,1=spleen' or a JSON file in any of the forms MedLVM meets:
    {"liver": 5, "spleen": 1}                     what the Slicer module writes
    {"1": "body", "6": "tumour"}                  a case folder's labels.json (`medlvm phantom`)
    {"<label file name>": either of the above}    one file for several label maps (the shared data set)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from MedLVMLib.errors import MedLVMError

TUMOUR_NAMES = ("tumour", "tumor", "gtv")


def parse_names(text: Optional[str], label_file: Path) -> dict[int, str]:
    """id -> name from --names (see the module docstring); {} when `text` is empty."""
    if not text:
        return {}
    path = Path(text)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise MedLVMError(f"--names '{path}' does not exist")
        return names_from_json(path, label_file)
    try:
        pairs = [item.split("=", 1) for item in str(text).split(",") if item.strip()]
        return {int(k): v.strip() for k, v in pairs}
    except ValueError:
        raise MedLVMError(f"--names: cannot read '{text}'; use 5=liver,1=spleen or a JSON file") from None


def names_from_json(path: Path, label_file: Path) -> dict[int, str]:
    """id -> name from a names file; MedLVMError naming the forms it accepts when it is none of them."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MedLVMError(f"--names '{path}' is not readable JSON ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get(label_file.name), dict):
        data = data[label_file.name]
    names = _id_to_name(data)
    if names is None:
        raise MedLVMError(f"--names '{path}': expected {{name: id}} or {{\"id\": name}} (a case folder's "
                          "labels.json), or either keyed by the label file's name")
    return names


def _id_to_name(data) -> Optional[dict[int, str]]:
    if not isinstance(data, dict) or not data:
        return None
    if all(isinstance(v, int) and not isinstance(v, bool) for v in data.values()):
        return {int(v): str(k) for k, v in data.items()}
    if all(isinstance(v, str) and str(k).strip().isdigit() for k, v in data.items()):
        return {int(k): v for k, v in data.items()}
    return None


def sidecar_names(label_file: Path) -> dict[int, str]:
    """Names from a labels.json beside the label file (a case folder), {} when there is none or it is unusable."""
    sidecar = Path(label_file).parent / "labels.json"
    if not sidecar.is_file():
        return {}
    try:
        return names_from_json(sidecar, Path(label_file))
    except MedLVMError:
        return {}


def structure_names(ids: list[int], names: dict[int, str]) -> dict[int, str]:
    """Every present id with its name ('label_<id>' when unnamed)."""
    return {int(i): str(names.get(int(i), f"label_{int(i)}")) for i in ids}


def choose_structure(names: dict[int, str], structure: Optional[str], source: str) -> tuple[int, str]:
    """(id, name) of the structure to track among `names` (the labels present).

    Args:
        structure: an id or a name (any case); None picks the tumour (a name starting tumour / tumor /
            gtv), else the only structure, else refuses: tracking the body by accident is worse than asking.
        source: how to name the label map in messages, e.g. "--labels 'gtv.nrrd'".
    """
    present = ", ".join(f"{i} {n}" for i, n in sorted(names.items()))
    if structure is not None:
        key = structure.strip()
        for label_id, name in sorted(names.items()):
            if key == str(label_id) or key.lower() == name.lower():
                return label_id, name
        raise MedLVMError(f"--structure '{structure}' is not in {source} (labels present: {present}); give one of "
                          "these ids or names")
    tumours = [(i, n) for i, n in sorted(names.items()) if n.lower().startswith(TUMOUR_NAMES)]
    if tumours:
        return tumours[0]
    if len(names) == 1:
        return next(iter(names.items()))
    raise MedLVMError(f"{source} holds {len(names)} structures ({present}) and none is named tumour; choose "
                      "the one to track with --structure (an id or a name), or name them with --names")
