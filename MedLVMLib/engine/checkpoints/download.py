"""Downloading a registered hub model, on the user's machine and only with their consent."""

from __future__ import annotations

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
    snapshot_download(repo_id=repo_id, local_dir=str(local_dir))


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
