"""Outputs appear complete or not at all: write to a temporary sibling, rename when done."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union

from MedLVMLib.errors import MedLVMError

PathLike = Union[str, "os.PathLike[str]"]


def check_output_path(out: PathLike, overwrite: bool = False) -> Path:
    """Validate an output path before heavy work starts. Raises if it exists and overwrite is False."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise MedLVMError(f"output '{out}' already exists; choose another path or pass --overwrite")
    if not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(out: PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `out` (same suffixes, so writers pick the right format).

    On success the temporary file or folder is renamed to `out`; on any exception it is removed,
    so a failed or cancelled run leaves nothing half-written.
    """
    out = check_output_path(out, overwrite)
    suffix = "".join(out.suffixes) if not out.is_dir() else ""
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    tmp = tmp_dir / (out.stem.split(".")[0] + suffix if suffix else out.name)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written for '{out}'")
        if out.exists():
            _remove(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
