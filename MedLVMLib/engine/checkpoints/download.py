"""Downloading a registered hub model, on the user's machine and only with their consent."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Optional

from MedLVMLib.engine.checkpoints.formats import detect_format
from MedLVMLib.engine.checkpoints.registry import Registry, load_registry, model_location
from MedLVMLib.errors import MedLVMError
from MedLVMLib.paths import cache_dir


def _snapshot_download(repo_id: str, local_dir: Path) -> None:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise MedLVMError("downloading needs the huggingface_hub package: pip install huggingface_hub") from exc
    try:
        snapshot_download(repo_id=repo_id, local_dir=str(local_dir))
    except Exception as exc:  # the hub client raises the errors of its HTTP library (requests or httpx, by version)
        raise MedLVMError(hub_failure(repo_id, Path(local_dir), exc)) from exc


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
            "and point --model at the folder")


def download_model(model_id: str, consent: bool = False, registry: Optional[Registry] = None) -> Path:
    """Download a hub model of the registry into cache_dir()/<id> (tokenizer into its vqvae/ subfolder).

    Nothing is downloaded unless consent is True; the error says how large the download is.
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
    target = model_location(entry, registry)
    _snapshot_download(entry.source["hub"], target)
    if entry.source.get("tokenizer_hub"):
        _snapshot_download(entry.source["tokenizer_hub"], target / "vqvae")
    detect_format(target)
    return target
