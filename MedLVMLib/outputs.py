"""Outputs appear complete or not at all, and `--overwrite` replaces only what MedLVM wrote.

Every output is written to a temporary sibling and renamed when done. A folder output gets a manifest
(`.medlvm-outputs.json`, the entries MedLVM wrote into it); replacing an existing folder is refused when it
holds anything its manifest does not list, so a user's own files are never deleted. `check_output_path`
runs every check before the heavy work starts: a name that cannot be an output ('.', '..', a system
folder), a folder that cannot be written, an existing output without --overwrite.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union

from MedLVMLib.errors import OutputError

PathLike = Union[str, "os.PathLike[str]"]
MANIFEST = ".medlvm-outputs.json"
SYSTEM_FOLDERS = ("/proc", "/sys", "/dev")  # kernel file systems: nothing of MedLVM's belongs there
SCRATCH_FOLDERS = ("/dev/shm",)  # except shared memory, a common scratch space


def check_output_path(out: PathLike, overwrite: bool = False) -> Path:
    """Validate an output path before heavy work starts; returns it as a Path.

    Raises OutputError when the name is not a new output ('.', '..', a system folder), when the nearest
    existing folder above it cannot be written, when it exists and `overwrite` is False, or when it is a
    folder that holds files MedLVM did not write (see `foreign_entries`).
    """
    out = Path(out)
    _check_name(out)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise OutputError(f"output '{out}' already exists; choose another path or pass --overwrite")
        check_replaceable(out)
    _check_writable_folder(out)
    return out


def _check_name(out: Path) -> None:
    if out.name in ("", ".", ".."):
        example = Path(out, "medlvm-output")
        raise OutputError(f"output '{out}' names an existing folder itself ('.', '..' or '/'), not a new output; "
                          f"give a new name inside it, e.g. '{example}'")
    resolved = Path(os.path.abspath(out)).resolve()
    if any(_within(resolved, Path(scratch)) for scratch in SCRATCH_FOLDERS):
        return
    for system in SYSTEM_FOLDERS:
        if _within(resolved, Path(system)):
            raise OutputError(f"output '{out}' is inside {system}, a system folder; write into your own folder")


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_writable_folder(out: Path) -> None:
    """The nearest existing folder above `out` must be a folder we can create files in (tried, not guessed:
    permission bits do not tell a read-only file system or a root user apart)."""
    folder = Path(os.path.abspath(out)).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write '{out}': '{folder}' is a file, not a folder")
    try:
        handle, probe = tempfile.mkstemp(prefix=".medlvm-probe-", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write '{out}': folder '{folder}' is not writable ({exc.strerror}); "
                          "choose another output path") from None
    os.close(handle)
    os.unlink(probe)


def _entries(folder: Path) -> list[str]:
    """Every file and folder under `folder` as a relative POSIX path (symbolic links are not followed)."""
    found = []
    for root, dirs, files in os.walk(folder):
        base = Path(root).relative_to(folder)
        found += [(base / name).as_posix() for name in dirs + files]
    return sorted(found)


def write_manifest(folder: PathLike) -> Path:
    """Record every entry of `folder` as written by MedLVM (called on the finished temporary folder)."""
    folder = Path(folder)
    entries = [e for e in _entries(folder) if e != MANIFEST]
    path = folder / MANIFEST
    path.write_text(json.dumps({"written_by": "MedLVM", "entries": entries}, indent=1) + "\n", encoding="utf-8")
    return path


def foreign_entries(folder: PathLike) -> list[str]:
    """Entries of an existing output folder that its manifest does not list: what MedLVM did not write.

    A folder without a (readable) manifest was not written by MedLVM, so all of its entries are foreign.
    """
    folder = Path(folder)
    try:
        recorded = set(json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["entries"])
    except (OSError, ValueError, KeyError, TypeError):
        recorded = set()
    return [e for e in _entries(folder) if e != MANIFEST and e not in recorded]


def check_replaceable(out: PathLike) -> None:
    """OutputError unless replacing `out` deletes only MedLVM's own outputs.

    A file or a symbolic link named as the output is replaced (naming it with --overwrite says so); a folder
    only when everything in it is listed in its manifest.
    """
    out = Path(out)
    if out.is_symlink() or not out.is_dir():
        return
    foreign = foreign_entries(out)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputError(f"output folder '{out}' holds files MedLVM did not write ({shown}); --overwrite "
                          "replaces only MedLVM's own outputs: move them away or choose another path")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_partials(out: Path) -> list[Path]:
    """Remove the hidden temporary folders `atomic_path` left beside `out` when its process was killed (SIGKILL,
    power loss: no clean-up ran). A folder is stale when the process id in its name no longer runs; those of
    running processes (another job writing the same output) are kept. Returns the removed folders."""
    removed = []
    for path in Path(out).parent.glob(f".{glob.escape(Path(out).name)}.*.partial"):
        pid = path.name[len(Path(out).name) + 2:].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def partial_dir(out: Path) -> Path:
    """A new hidden temporary folder beside `out`, named after it and this process
    (`.<name>.<pid>.<random>.partial`), once those that killed processes left are removed."""
    remove_stale_partials(out)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".partial", dir=out.parent))


@contextlib.contextmanager
def atomic_path(out: PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `out` (same suffixes, so writers pick the right format).

    On success the temporary file or folder (a folder with its manifest) is renamed to `out`; on any
    exception it is removed, so a failed or cancelled run leaves nothing half-written.
    """
    out = check_output_path(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(out.suffixes) if not out.is_dir() else ""
    tmp_dir = partial_dir(out)
    tmp = tmp_dir / (out.stem.split(".")[0] + suffix if suffix else out.name)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written for '{out}'")
        if tmp.is_dir():
            write_manifest(tmp)
        if out.exists() or out.is_symlink():
            check_replaceable(out)  # again: a file may have been put there while the work ran
            _remove(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
