"""The model registry (Resources/models.json): what models exist, where each one lives, whether it is
there and intact, and which folder a model id or path names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

from MedLVMLib.engine.checkpoints.formats import CONFIG_NAME, SAFETENSORS_NAME, read_json, sha256_file, weight_files
from MedLVMLib.errors import CheckpointError
from MedLVMLib.paths import cache_dir, resources_dir


@dataclass(frozen=True)
class ModelEntry:
    """One model of Resources/models.json. source: {"bundled": relative path} or {"hub": repo id,
    "tokenizer_hub": repo id}."""

    id: str
    description: str
    source: Dict[str, str]
    sha256: str = ""
    size_bytes: int = 0
    tasks: Tuple[str, ...] = ()
    recommended_device: str = "cpu"
    memory_gb: float = 0.0

    @property
    def bundled(self) -> bool:
        return "bundled" in self.source


@dataclass(frozen=True)
class Registry:
    """default: the model run when none is named; task_defaults: task -> a model that replaces it for that task
    (models.json "task_defaults", e.g. {"motion": "medlvm-tiny-ct-breathing-v2"} in the shipped registry)."""

    default: str
    models: Dict[str, ModelEntry]
    path: Path
    task_defaults: Dict[str, str] = field(default_factory=dict)

    def default_for(self, task: Optional[str] = None) -> str:
        """The model id run for `task` when none is named (the general default when the task has none)."""
        return self.task_defaults.get(str(task), self.default) if task else self.default


def load_registry(path: Optional[os.PathLike] = None) -> Registry:
    path = Path(path) if path else resources_dir() / "models.json"
    data = read_json(path)
    models = {}
    for item in data.get("models", []):
        try:
            entry = ModelEntry(**{**item, "tasks": tuple(item.get("tasks", ()))})
        except TypeError as exc:
            raise CheckpointError(f"{path}: bad model entry {item.get('id')!r} ({exc})") from exc
        models[entry.id] = entry
    default = str(data.get("default", ""))
    if default and default not in models:
        raise CheckpointError(f"{path}: default model {default!r} is not among {sorted(models)}")
    task_defaults = data.get("task_defaults", {})
    if not isinstance(task_defaults, dict):
        raise CheckpointError(f"{path}: task_defaults must map a task to a model id, got {task_defaults!r}")
    for task, model_id in task_defaults.items():
        if model_id not in models:
            raise CheckpointError(f"{path}: the default model of {task} {model_id!r} is not among {sorted(models)}")
        if models[model_id].tasks and task not in models[model_id].tasks:
            raise CheckpointError(f"{path}: {model_id!r} is the default of {task} but does not list it in its tasks")
    return Registry(default, models, path, {str(k): str(v) for k, v in task_defaults.items()})


def default_mark(registry: Registry, model_id: str) -> str:
    """" (default)", " (default for motion)", ... or "": how a model listing marks the defaults."""
    roles = (["default"] if model_id == registry.default else []) + \
        [f"default for {task}" for task, chosen in sorted(registry.task_defaults.items()) if chosen == model_id]
    return f" ({', '.join(roles)})" if roles else ""


def model_location(entry: ModelEntry, registry: Optional[Registry] = None) -> Path:
    """Where the entry's folder is or would be: under Resources/ when bundled, else in the cache."""
    if entry.bundled:
        base = registry.path.parent if registry is not None else resources_dir()
        return base / entry.source["bundled"]
    return cache_dir() / entry.id


def is_available(folder: Path) -> bool:
    return (folder / CONFIG_NAME).is_file() and bool(weight_files(folder))


def verify_sha256(entry: ModelEntry, folder: Path) -> None:
    """Check the entry's sha256 against folder/model.safetensors (skipped when the registry has none)."""
    path = folder / SAFETENSORS_NAME
    if entry.sha256 and path.is_file() and sha256_file(path) != entry.sha256:
        raise CheckpointError(f"{path}: sha256 does not match models.json entry {entry.id!r}; the file is corrupt "
                              "or was replaced: reinstall or retrain it")


def resolve_model_folder(id_or_path: Optional[str], registry: Registry, task: Optional[str] = None) -> Optional[Path]:
    """The checkpoint folder of a registry id or path (None = the default of `task`); None when the bundled
    default is missing (load_model then falls back to random weights). Raises CheckpointError with what to do."""
    key = id_or_path or registry.default_for(task)
    entry = registry.models.get(key)
    if entry is None:
        path = Path(str(key)).expanduser()
        if path.exists():
            return path
        raise CheckpointError(f"model {key!r} is neither a folder nor a registered id ({sorted(registry.models)})")
    folder = model_location(entry, registry)
    if is_available(folder):
        verify_sha256(entry, folder)
        return folder
    if id_or_path is None and entry.bundled:
        return None
    if entry.bundled:
        raise CheckpointError(f"registered bundled model {key!r} is missing: expected it at {folder}; train it with "
                              "`medlvm train tokenizer` / `medlvm train transformer` or reinstall MedLVM")
    raise CheckpointError(f"model {key!r} is not downloaded (expected at {folder}); fetch it with "
                          f"`medlvm models --download {key}` or point --model at a folder holding it")
