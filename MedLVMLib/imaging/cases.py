"""A case = a 4D CT with optional ground truth (labels per phase, motion fields), stored as one folder.

Folder layout (a dataset is a folder of case folders):
  ct.seq.nrrd        the 4D CT (Slicer volume sequence, int16 HU when the values are integers)
  labels.seq.nrrd    uint8 label map per phase (optional; opens in Slicer as a label map sequence)
  labels.json        {"1": "body", "2": "lungs", ...}
  dvf.npz            "dvf": float32 [P, Z, Y, X, 3] mm, LPS (x, y, z) components (optional);
                     pull fields: phase_p(x) = reference(x + dvf[p](x)), see MedLVMLib.synthetic.breathing
  case.json          format version, free-form metadata (seed, breathing parameters, source, ...)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from MedLVMLib.errors import InputError
from MedLVMLib.imaging.phases_io import read_phases, write_sequence_file
from MedLVMLib.imaging.volume import Phases
from MedLVMLib.outputs import atomic_path

FORMAT_VERSION = 1
LABEL_NAMES = {1: "body", 2: "lungs", 3: "heart", 4: "liver", 5: "bone", 6: "tumour"}
PathLike = Union[str, Path]


@dataclass
class Case:
    """One 4D CT with its ground truth.

    phases: the CT (float32 HU [P, Z, Y, X])
    labels: uint8 [P, Z, Y, X] label map per phase, or None
    label_names: id -> structure name
    dvf: float32 [P, Z, Y, X, 3] pull displacement fields in mm, or None
    meta: JSON-serialisable facts (seed, breathing parameters, source file, ...)
    """

    phases: Phases
    labels: Optional[np.ndarray] = None
    label_names: dict = field(default_factory=lambda: dict(LABEL_NAMES))
    dvf: Optional[np.ndarray] = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        grid = self.phases.array.shape
        if self.labels is not None and self.labels.shape != grid:
            raise ValueError(f"labels shape {self.labels.shape} differs from the CT's {grid}")
        if self.dvf is not None and self.dvf.shape != grid + (3,):
            raise ValueError(f"dvf shape {self.dvf.shape} must be {grid + (3,)}")

    def mask(self, name: str) -> np.ndarray:
        """Boolean [P, Z, Y, X] mask of the structure called `name`."""
        ids = [i for i, n in self.label_names.items() if n == name]
        if self.labels is None or not ids:
            raise KeyError(f"no label named {name!r} (labels: {sorted(self.label_names.values())})")
        return self.labels == ids[0]


def save_case(case: Case, folder: PathLike, overwrite: bool = False) -> Path:
    """Write `case` to a new folder atomically (see the module docstring for the layout)."""
    folder = Path(folder)
    with atomic_path(folder, overwrite) as tmp:
        tmp.mkdir(parents=True)
        write_sequence_file(case.phases, tmp / "ct.seq.nrrd")
        if case.labels is not None:
            labels = Phases(
                case.labels.astype(np.float32),
                case.phases.geometry,
                list(case.phases.labels),
                list(case.phases.index_values),
                case.phases.index_name,
                case.phases.index_unit,
            )
            write_sequence_file(labels, tmp / "labels.seq.nrrd", np.dtype(np.uint8), "vtkMRMLLabelMapVolumeNode")
        (tmp / "labels.json").write_text(json.dumps({str(k): v for k, v in sorted(case.label_names.items())}))
        if case.dvf is not None:
            np.savez_compressed(tmp / "dvf.npz", dvf=case.dvf.astype(np.float32))
        meta = {"format_version": FORMAT_VERSION, "meta": case.meta}
        (tmp / "case.json").write_text(json.dumps(meta, indent=1, default=_json_default))
    return folder


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def load_case(folder: PathLike) -> Case:
    """Read a case folder written by `save_case`."""
    from MedLVMLib.imaging.seqnrrd import read_sequence_array

    folder = Path(folder)
    if not (folder / "ct.seq.nrrd").is_file():
        raise InputError(f"'{folder}' is not a case folder: no ct.seq.nrrd in it")
    phases = read_phases(folder / "ct.seq.nrrd", n_phases=1)
    labels = None
    if (folder / "labels.seq.nrrd").is_file():
        labels = read_sequence_array(folder / "labels.seq.nrrd").array.astype(np.uint8)
    names_file = folder / "labels.json"
    names = (
        {int(k): v for k, v in json.loads(names_file.read_text(encoding="utf-8")).items()}
        if names_file.exists()
        else {}
    )
    dvf = None
    if (folder / "dvf.npz").is_file():
        with np.load(folder / "dvf.npz") as data:
            dvf = data["dvf"].astype(np.float32)
    meta_file = folder / "case.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8")).get("meta", {}) if meta_file.exists() else {}
    try:
        return Case(phases, labels, names, dvf, meta)
    except ValueError as exc:
        raise InputError(f"case folder '{folder}': {exc}") from None


def list_cases(folder: PathLike) -> list[Path]:
    """The case folders (those holding ct.seq.nrrd) directly inside `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"dataset folder '{folder}' does not exist")
    return sorted(p for p in folder.iterdir() if p.is_dir() and (p / "ct.seq.nrrd").is_file())
