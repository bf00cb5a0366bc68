"""The models of the Slicer panel: the registry's entries (Resources/models.json) with their state, installed or
downloadable, the selector's labels, and the text a user agrees to before a download.

Plain Python, light to import: no `slicer`, Qt or torch (the registry's engine reader, `engine.checkpoints`,
imports torch, so the few rules it shares with this module are repeated here and tested to agree).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

from MedLVMLib.paths import cache_dir, resources_dir

CONFIG_NAME = "config.json"
# the weight files of a checkpoint folder (engine.checkpoints.formats.weight_files)
WEIGHT_NAMES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
TOKENIZER_FOLDER = "vqvae"  # where a download puts the tokenizer of an entry with "tokenizer_hub"
MIRROR_ENV = "MEDLVM_HUB_MIRROR"  # engine.checkpoints.download.MIRROR_ENV
HUB_URL = "https://huggingface.co"


def registry_file(path: Optional[os.PathLike] = None) -> Path:
    return Path(path) if path else resources_dir() / "models.json"


def read_registry(path: Optional[os.PathLike] = None) -> dict:
    """The registry as a dict; {} when it is missing or unreadable (the panel then offers a folder only)."""
    try:
        data = json.loads(registry_file(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_model_entries(path: Optional[os.PathLike] = None) -> list:
    """Entries of the registry (id, description, memory_gb, ...); [] when it is missing."""
    return [entry for entry in read_registry(path).get("models", []) if isinstance(entry, dict)]


def default_model(data: dict, task: str = "") -> str:
    """The id the engine runs for `task` when no model is chosen, from the registry dict `data` (read_registry):
    models.json "task_defaults", else "default"; "" when unknown."""
    per_task = data.get("task_defaults")
    chosen = per_task.get(task) if isinstance(per_task, dict) and task else None
    return str(chosen or data.get("default", ""))


def model_folder(entry: dict, registry_path: Optional[os.PathLike] = None) -> Path:
    """Where the entry's folder is or would be: beside the registry when bundled, else in the cache."""
    source = entry.get("source") or {}
    if "bundled" in source:
        return registry_file(registry_path).parent / source["bundled"]
    return cache_dir() / str(entry.get("id", ""))


def _has_checkpoint(folder: Path) -> bool:
    return (folder / CONFIG_NAME).is_file() and any((folder / name).is_file() for name in WEIGHT_NAMES)


def is_installed(entry: dict, folder: Path) -> bool:
    """The folder holds a checkpoint (and the tokenizer, for an entry downloaded with one)."""
    tokenizer = (entry.get("source") or {}).get("tokenizer_hub")
    return _has_checkpoint(folder) and (not tokenizer or _has_checkpoint(folder / TOKENIZER_FOLDER))


class ModelChoice(NamedTuple):
    """One entry of the model selector."""

    entry: dict
    folder: Path
    installed: bool

    @property
    def id(self) -> str:
        return str(self.entry.get("id", "?"))

    @property
    def repositories(self) -> list:
        source = self.entry.get("source") or {}
        return [source[key] for key in ("hub", "tokenizer_hub") if source.get(key)]

    @property
    def downloadable(self) -> bool:
        return not self.installed and bool(self.repositories)

    @property
    def label(self) -> str:
        """"lvm-7b — 13.7 GB download, needs a GPU with 16 GB" or "medlvm-tiny-ct — installed, runs on a CPU ..."."""
        if self.installed:
            state = "installed"
        elif self.downloadable:
            state = f"{size_text(self.entry.get('size_bytes', 0))} download"
        else:
            state = "missing"
        return f"{self.id} — {state}, {needs_text(self.entry)}"

    @property
    def tooltip(self) -> str:
        where = f"Installed in {self.folder}" if self.installed else f"Would be stored in {self.folder}"
        return f"{self.entry.get('description', '')}\n{where}"


def model_choices(path: Optional[os.PathLike] = None) -> list:
    """Every registry entry as a ModelChoice, in the registry's order."""
    choices = []
    for entry in read_model_entries(path):
        folder = model_folder(entry, path)
        choices.append(ModelChoice(entry, folder, is_installed(entry, folder)))
    return choices


def size_text(size_bytes) -> str:
    """13665077729 -> "13.7 GB", 11425780 -> "11 MB" (decimal units, as disks and the hub count)."""
    size = float(size_bytes or 0)
    if not size:
        return "unknown size"
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{max(round(size / 1e6), 1)} MB"


def needs_text(entry: dict) -> str:
    """What running the model needs, from the entry's recommended device and memory."""
    memory = float(entry.get("memory_gb") or 0)
    if entry.get("recommended_device", "cpu") == "cuda":
        return f"needs a GPU with {memory:g} GB" if memory else "needs a GPU"
    return f"runs on a CPU in about {memory:g} GB" if memory else "runs on a CPU"


def model_info(choice: Optional[ModelChoice]) -> str:
    """The line under the selector: memory and device, and what to do when the model is not installed."""
    if choice is None:
        return "Memory: depends on the model in the folder (7B: ~16 GB GPU)."
    entry = choice.entry
    text = (f"Memory: about {float(entry.get('memory_gb') or 0):g} GB; recommended device: "
            f"{entry.get('recommended_device', 'cpu')}")
    if choice.downloadable:
        return text + f". Not installed: Download fetches it ({size_text(entry.get('size_bytes', 0))}), after asking."
    if not choice.installed:
        return text + f". Missing from {choice.folder}: reinstall MedLVM or train it (`medlvm train`)."
    return text


def download_needs_hub_client() -> bool:
    """Downloading from the hub needs huggingface_hub; copying from a mirror folder (MEDLVM_HUB_MIRROR) does not."""
    return not os.environ.get(MIRROR_ENV)


def consent_text(choice: ModelChoice, packages: Sequence[str] = ()) -> str:
    """The one question a user answers before a download: what, from where, how large, stored where, and the
    Python packages installed first (lines such as "- huggingface_hub>=0.20 (pip)")."""
    mirror = os.environ.get(MIRROR_ENV)
    sources = [f"- {Path(mirror) / repo}" if mirror else f"- {HUB_URL}/{repo}" for repo in choice.repositories]
    origin = f"the mirror folder {mirror} ({MIRROR_ENV})" if mirror else "the public Hugging Face hub"
    lines = [f"Download the model {choice.id} ({size_text(choice.entry.get('size_bytes', 0))})?", "",
             f"From {origin}:", *sources, "",
             f"Stored in: {choice.folder} (set MEDLVM_CACHE to use another folder); it needs that much free disk "
             f"space. Running it {needs_text(choice.entry)}.", ""]
    if packages:
        lines += ["First these Python packages are installed:", *packages, ""]
    lines.append("The download runs in the background: Cancel stops it and the next download resumes where it "
                 "stopped. The model is installed only after every file's size (and the hub's checksums) "
                 "has been checked.")
    return "\n".join(lines)


def download_question(choice: ModelChoice) -> tuple:
    """(consent text, whether huggingface_hub is needed): the question asked before downloading `choice`, listing
    the Python packages that would be installed first."""
    from MedLVMLib.slicer import requirements

    needs_hub = download_needs_hub_client()
    packages = requirements.plan_lines(requirements.install_plan(download=needs_hub))
    return consent_text(choice, packages), needs_hub


def download_status(model_id: str, error: Optional[str], cancelled: bool) -> str:
    """The panel's one line after a download job of `model_id` ended."""
    if cancelled:
        return f"Download of {model_id} cancelled; the next download resumes where it stopped."
    if error:
        return f"Download of {model_id} failed: {error}"
    return f"{model_id} is installed: press Apply to run it."
