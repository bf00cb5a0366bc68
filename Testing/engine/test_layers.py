"""The engine's layering (tools/check_layers.py): the real package passes, and planted faults are found."""

from __future__ import annotations

from pathlib import Path

import pytest

from Testing.engine.scripts import load_script


@pytest.fixture(scope="module")
def layers():
    return load_script("tools", "check_layers")


def test_medlvmlib_is_layered(layers):
    assert layers.problems() == []


def _package(tmp_path, files: dict) -> Path:
    root = tmp_path / "MedLVMLib"
    for name, text in {"__init__.py": "", "errors.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_planted_faults_are_found(layers, tmp_path):
    root = _package(tmp_path, {
        "imaging/__init__.py": "",
        "imaging/a.py": "def f():\n    from MedLVMLib.imaging import b  # lazy: still a dependency\n",
        "imaging/b.py": "from MedLVMLib.imaging.a import f\n",
        "engine/__init__.py": "",
        "engine/model.py": "from MedLVMLib.errors import *\nfrom MedLVMLib.tasks.motion import x\n",
        "tasks/__init__.py": "",
        "tasks/motion.py": "x = 1\n" + "y = 2\n" * 460,
        **{f"extra{i}.py": "" for i in range(9)},
    })
    found = layers.problems(root)
    assert any("cycle" in line and "imaging.a" in line and "imaging.b" in line for line in found)
    assert any(line.startswith("MedLVMLib.engine.model imports MedLVMLib.tasks.motion") for line in found)
    assert any("tasks/motion.py: 461 lines" in line for line in found)
    assert any("modules in the package root" in line for line in found)
    assert not any("imports MedLVMLib.errors" in line for line in found)  # the ground floor serves everyone


def test_a_folder_off_the_floors_is_named(layers, tmp_path):
    root = _package(tmp_path, {"gui/__init__.py": "", "gui/window.py": "import MedLVMLib.errors\n"})
    found = layers.problems(root)
    assert any(line.startswith("MedLVMLib.gui.window: not on any floor") for line in found)
