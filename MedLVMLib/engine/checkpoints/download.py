"""Downloading a registered hub model, on the user's machine and only with their consent.

A download goes into a hidden staging folder beside its final place (`cache_dir()/.<id>.partial`), is checked
(every file's size, the hub's sha256 of its large files, the registry's sha256, a readable checkpoint layout) and
only then renamed to `cache_dir()/<id>`: a cancelled or failed download never looks installed, and what it
fetched stays in the staging folder, so the next attempt resumes. `MEDLVM_HUB_MIRROR` names a folder holding
copies of the hub repositories (`<mirror>/<org>/<name>/...`, e.g. on a shared drive) to copy from instead.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from pathlib import Path
from typing import NamedTuple, Optional

from MedLVMLib.engine.checkpoints.formats import SAFETENSORS_NAME, detect_format, sha256_file
from MedLVMLib.engine.checkpoints.registry import ModelEntry, Registry, load_registry, model_location
from MedLVMLib.errors import CheckpointError, MedLVMError
from MedLVMLib.paths import cache_dir
from MedLVMLib.progress import Progress, ensure

MIRROR_ENV = "MEDLVM_HUB_MIRROR"
PARTIAL_SUFFIX = ".incomplete"  # a file being copied from the mirror; kept on cancel, resumed next time
CHUNK_BYTES = 1 << 20
MB = 1_000_000  # progress counts megabytes: a byte count of a 13 GB model overflows a Qt progress bar
WATCH_INTERVAL_S = 1.0  # how often the bytes of a hub download are counted


class RemoteFile(NamedTuple):
    """One file of a repository as its source describes it; sha256 "" when the source gives none."""

    path: str
    size: int
    sha256: str = ""


def _snapshot_download(repo_id: str, local_dir: Path) -> Optional[list[RemoteFile]]:
    """Fetch `repo_id` from the hub into `local_dir` (huggingface_hub resumes its own partial files).

    Returns the hub's description of the files (sizes, sha256 of large files) to check them against, or None.
    """
    try:
        import huggingface_hub as hub
    except ImportError as exc:
        raise MedLVMError("downloading needs the huggingface_hub package: pip install huggingface_hub") from exc
    try:
        hub.snapshot_download(repo_id=repo_id, local_dir=str(local_dir))
        return _hub_files(hub, repo_id)
    except Exception as exc:  # the hub client raises the errors of its HTTP library (requests or httpx, by version)
        raise MedLVMError(hub_failure(repo_id, Path(local_dir), exc)) from exc


def _hub_files(hub, repo_id: str) -> Optional[list[RemoteFile]]:
    api = getattr(hub, "HfApi", None)
    if api is None:
        return None
    files = []
    for sibling in api().model_info(repo_id, files_metadata=True).siblings or []:
        lfs = sibling.lfs or {}
        sha256 = lfs.get("sha256", "") if isinstance(lfs, dict) else getattr(lfs, "sha256", "")
        if sibling.size is not None:
            files.append(RemoteFile(sibling.rfilename, int(sibling.size), sha256 or ""))
    return files


# A full disk or an unwritable cache is a problem here, not on the network.
DISK_ERRNOS = {errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT, errno.EPERM}


def hub_failure(repo_id: str, local_dir: Path, exc: Exception) -> str:
    """One line saying why downloading `repo_id` failed and what to do instead."""
    first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0]
    reason = f"{type(exc).__name__}: {first if len(first) <= 160 else first[:157] + '...'}"
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        return (f"could not write {repo_id} into {local_dir} ({reason}); free some space or set MEDLVM_CACHE to "
                "a writable folder")
    return (f"could not reach the hub to download {repo_id} ({reason}); download it on a machine with network "
            "and point --model (in Slicer: Model folder...) at the folder")


def staging_folder(target: Path) -> Path:
    """Where a download of `target` is assembled (and kept between attempts)."""
    return target.parent / f".{target.name}.partial"


def download_model(model_id: str, consent: bool = False, registry: Optional[Registry] = None,
                   progress: Optional[Progress] = None) -> Path:
    """Download a hub model of the registry into cache_dir()/<id> (tokenizer into its vqvae/ subfolder).

    Nothing is downloaded unless consent is True; the error says how large the download is. The folder appears
    only once everything is downloaded and checked; an interrupted download resumes on the next call.
    Returns the model's folder.
    """
    registry = registry or load_registry()
    entry = registry.models.get(model_id)
    if entry is None:
        raise MedLVMError(f"unknown model {model_id!r}; known: {sorted(registry.models)}")
    if entry.bundled:
        raise MedLVMError(f"model {model_id!r} is bundled with MedLVM, there is nothing to download")
    if not consent:
        raise MedLVMError(f"model {model_id!r} is {entry.size_bytes / 1e9:.1f} GB from the public hub "
                          f"({entry.source.get('hub')}); pass --download (consent=True) to fetch it into {cache_dir()}")
    progress = ensure(progress)
    target = model_location(entry, registry)
    if target.is_dir() and _complete(entry, target):
        progress.log(f"{model_id} is already installed in {target}")
        return target
    staging = _prepare_staging(target)
    repos = [(entry.source["hub"], staging)]
    if entry.source.get("tokenizer_hub"):
        repos.append((entry.source["tokenizer_hub"], staging / "vqvae"))
    for repo_id, folder in repos:
        files = _fetch(repo_id, folder, staging, entry, progress)
        _verify_files(repo_id, folder, files, progress)
    _finish(entry, staging, target)
    progress.log(f"{model_id} downloaded, checked and installed in {target}")
    return target


def _complete(entry: ModelEntry, folder: Path) -> bool:
    """A readable checkpoint, with its tokenizer when the entry has one."""
    try:
        found = detect_format(folder)
    except CheckpointError:
        return False
    return found == "lvm" or not entry.source.get("tokenizer_hub")


def _prepare_staging(target: Path) -> Path:
    """The staging folder, made or kept; an unfinished folder at `target` (an older download) becomes it."""
    staging = staging_folder(target)
    if target.exists():
        if staging.exists():
            raise MedLVMError(f"{target} holds an unfinished download and {staging} another one; remove one of "
                              "them and download again")
        target.rename(staging)
    try:
        staging.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MedLVMError(f"could not create {staging} ({exc.strerror or exc}); set MEDLVM_CACHE to a writable "
                          "folder") from exc
    return staging


def _fetch(repo_id: str, folder: Path, staging: Path, entry: ModelEntry,
           progress: Progress) -> Optional[list[RemoteFile]]:
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        return _copy_from_mirror(Path(mirror), repo_id, folder, progress)
    with _FolderWatch(staging, entry, progress):
        return _snapshot_download(repo_id, folder)


class _FolderWatch:
    """While the hub client downloads, report the bytes in the staging folder (its partial files included) as
    progress every second, from a thread: the client gives no byte counts itself."""

    def __init__(self, folder: Path, entry: ModelEntry, progress: Progress):
        self._folder, self._progress = folder, progress
        self._total = max(1, -(-entry.size_bytes // MB)) if entry.size_bytes else None
        self._stage = f"downloading {entry.id} (MB)"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="medlvm-download-watch", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL_S):
            done = folder_bytes(self._folder) // MB
            self._progress.on_update(self._stage, min(done, self._total or done), self._total)

    def __enter__(self):
        self._progress.stage(self._stage, self._total)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def folder_bytes(folder: Path) -> int:
    total = 0
    for path in Path(folder).rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except OSError:  # a partial file renamed while we looked
            pass
    return total


def _copy_from_mirror(mirror: Path, repo_id: str, folder: Path, progress: Progress) -> list[RemoteFile]:
    """Copy `<mirror>/<repo_id>` into `folder`, resuming partial files; returns the source files' sizes."""
    source = mirror / repo_id
    if not source.is_dir():
        raise MedLVMError(f"the mirror {mirror} ({MIRROR_ENV}) has no copy of {repo_id}: expected the folder {source}")
    names = sorted(p.relative_to(source).as_posix() for p in source.rglob("*")
                   if not p.is_dir() and ".cache" not in p.relative_to(source).parts)
    sizes = {name: (source / name).stat().st_size for name in names}
    total = max(1, -(-sum(sizes.values()) // MB))
    progress.stage(f"downloading {repo_id} (MB)", total)
    copied = 0
    for name in names:
        copied = _copy_resumable(source / name, folder / name, progress, copied)
    if total > copied // MB:  # the last partial megabyte
        progress.advance(total - copied // MB)
    return [RemoteFile(name, size) for name, size in sizes.items()]


def _copy_resumable(src: Path, dst: Path, progress: Progress, copied: int) -> int:
    """Copy src to dst through dst + PARTIAL_SUFFIX, continuing a partial copy; advances progress in MB."""
    if dst.is_file() and dst.stat().st_size == src.stat().st_size:
        return _advance_mb(progress, copied, copied + dst.stat().st_size)
    partial = dst.with_name(dst.name + PARTIAL_SUFFIX)
    dst.parent.mkdir(parents=True, exist_ok=True)
    offset = partial.stat().st_size if partial.is_file() else 0
    if offset > src.stat().st_size > 0:  # the source changed since: start this file again
        partial.unlink()
        offset = 0
    if offset:
        progress.log(f"resuming {dst.name} at {offset / MB:.1f} MB")
    copied = _advance_mb(progress, copied, copied + offset)
    with open(src, "rb", buffering=0) as reader, open(partial, "ab") as writer:  # unbuffered: a block as it comes
        if offset:
            reader.seek(offset)
        for block in iter(lambda: reader.read(CHUNK_BYTES), b""):
            writer.write(block)
            writer.flush()
            copied = _advance_mb(progress, copied, copied + len(block))
    os.replace(partial, dst)
    return copied


def _advance_mb(progress: Progress, before: int, after: int) -> int:
    """Advance by the whole megabytes crossed between two byte counts (checks for cancel on each advance)."""
    if after // MB > before // MB:
        progress.advance(after // MB - before // MB)
    return after


def _verify_files(repo_id: str, folder: Path, files: Optional[list[RemoteFile]], progress: Progress) -> None:
    """Every described file is there with its size and (when known) sha256; CheckpointError names the first bad."""
    if not files:
        return
    hashed = [f for f in files if f.sha256]
    progress.stage(f"checking {repo_id}", len(files))
    for remote in files:
        path = folder / remote.path
        size = path.stat().st_size if path.is_file() else None
        if size != remote.size:
            found = "missing" if size is None else f"{size} bytes"
            raise CheckpointError(f"{path}: {found}, expected {remote.size} bytes from {repo_id}; download again "
                                  "to resume")
        if remote.sha256 and sha256_file(path) != remote.sha256:
            path.unlink()  # a corrupt file must be fetched again, not resumed
            raise CheckpointError(f"{path}: sha256 differs from {repo_id}'s; the file was removed, download again")
        progress.advance()
    if hashed:
        progress.log(f"{repo_id}: {len(files)} files of the right size, {len(hashed)} sha256 checked")


def _finish(entry: ModelEntry, staging: Path, target: Path) -> None:
    """Check the assembled folder as a checkpoint, drop the hub client's bookkeeping, rename it into place."""
    if not _complete(entry, staging):
        detect_format(staging)  # raises, naming what is wrong
        raise CheckpointError(f"{staging}: the tokenizer ({entry.source.get('tokenizer_hub')}) is missing from vqvae/; "
                              "download again to resume")
    weights = staging / SAFETENSORS_NAME
    if entry.sha256 and weights.is_file() and sha256_file(weights) != entry.sha256:
        weights.unlink()  # fetched again by the next download
        raise CheckpointError(f"{weights}: sha256 differs from the models.json entry {entry.id!r}; the file was "
                              "removed: download again")
    for bookkeeping in (staging / ".cache", staging / "vqvae" / ".cache"):
        shutil.rmtree(bookkeeping, ignore_errors=True)
    os.replace(staging, target)
