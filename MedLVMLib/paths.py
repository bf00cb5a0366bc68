"""Where MedLVM keeps its files: the Resources/ folder it ships, the per-user cache, the shared real CT.

Each place can be moved with an environment variable; the defaults follow the source checkout and the
installed extension alike (Resources/ sits beside the MedLVMLib package in both).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def resources_dir() -> Path:
    """Resources/ of the repository or extension (override with MEDLVM_RESOURCES)."""
    env = os.environ.get("MEDLVM_RESOURCES")
    return Path(env) if env else PACKAGE_DIR.parent / "Resources"


def prompts_dir() -> Path:
    """The prompt library, Resources/prompts (override with MEDLVM_PROMPTS)."""
    env = os.environ.get("MEDLVM_PROMPTS")
    return Path(env) if env else resources_dir() / "prompts"


def cache_dir() -> Path:
    """Where downloaded models and compiled kernels go (override with MEDLVM_CACHE)."""
    env = os.environ.get("MEDLVM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "medlvm"


def shared_data_dir() -> Path:
    """The real CT of ../shared/data beside the repository (override with MEDLVM_SHARED_DATA)."""
    env = os.environ.get("MEDLVM_SHARED_DATA")
    return Path(env) if env else PACKAGE_DIR.parents[1] / "shared" / "data"
