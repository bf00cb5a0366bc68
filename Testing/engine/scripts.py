"""The repository's scripts (tools/*.py, benchmarks/*.py) as modules, for the tests that exercise them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def load_script(folder: str, name: str) -> ModuleType:
    """FOLDER/NAME.py as a module, loaded once and registered in sys.modules (so that its functions pickle
    for worker processes)."""
    spec = importlib.util.spec_from_file_location(f"{folder}_{name}", REPO / folder / f"{name}.py")
    if spec.name not in sys.modules:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules[spec.name]
