"""The extension as installed: configured, built and installed with its own CMake files (and Testing/cmake, a
stand-in for Slicer's CMake package that places files as Slicer's and CTK's macros do), then run from the install
tree alone by an interpreter that sees neither the source tree nor the editable install (`python -S`, with only
the install tree and the venv's site-packages on its path), through the EngineClient the module uses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from MedLVMLib.slicer.client import EngineClient
from MedLVMLib.slicer.protocol import Event
from Testing.engine.slicer.test_worker import wait_for_event

ROOT = Path(__file__).resolve().parents[3]
STANDIN = ROOT / "Testing" / "cmake"
SLICER_VERSION = "5.10"
LUNGS, TUMOUR = 2, 6  # phantom labels (MedLVMLib.synthetic.phantom)

# Without the model run (slow) about 8 s on an idle 2-core machine, 20 s on a busy one: the build, then the worker.
pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")


class Installed(NamedTuple):
    build_dir: Path
    module_dir: Path  # <prefix>/lib/Slicer-<version>/qt-scripted-modules: MedLVM.py, MedLVMLib/, Resources/
    work_dir: Path  # the clean interpreter's working directory, outside the source tree


def _cmake(*args: str, cwd: Path) -> None:
    result = subprocess.run(["cmake", *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"cmake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    """Configure, build and install the extension into a temporary prefix."""
    base = tmp_path_factory.mktemp("extension")
    build, prefix, work = base / "build", base / "prefix", base / "work"
    work.mkdir()
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []  # a copy command per file: ninja runs them faster
    _cmake(
        "-S",
        str(ROOT),
        "-B",
        str(build),
        *generator,
        f"-DSlicer_DIR={STANDIN}",
        f"-DSlicer_STANDIN_VERSION={SLICER_VERSION}",
        f"-DCMAKE_INSTALL_PREFIX={prefix}",
        f"-DPYTHON_EXECUTABLE={sys.executable}",
        cwd=base,
    )
    _cmake("--build", str(build), cwd=base)
    _cmake("--install", str(build), cwd=base)
    return Installed(build, prefix / "lib" / f"Slicer-{SLICER_VERSION}" / "qt-scripted-modules", work)


def _site_packages() -> list[str]:
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def clean_env(installed: Installed) -> dict:
    """The clean interpreter's environment: none of the caller's PYTHON*/MEDLVM* variables, a private cache."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(installed.work_dir)),
        "LANG": "C.UTF-8",
        "PYTHONPATH": os.pathsep.join([str(installed.module_dir), *_site_packages()]),
        "PYTHONDONTWRITEBYTECODE": "1",
        "MEDLVM_CACHE": str(installed.work_dir / "cache"),
        "MEDLVM_CPU_KERNELS": "0",  # compiling them takes ~10 s; their fallback is tested in test_cpu_kernels
        "OMP_NUM_THREADS": "1",
    }


def clean_python(installed: Installed, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -S args` (no site: the editable install's .pth finder is never loaded) from the work dir."""
    return subprocess.run(
        [sys.executable, "-S", *args],
        env=clean_env(installed),
        cwd=installed.work_dir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def engine(installed):
    client = EngineClient(
        [sys.executable, "-S", "-m", "MedLVMLib", "worker"], env=clean_env(installed), cwd=str(installed.work_dir)
    )
    yield client
    client.close(timeout=5)


@pytest.fixture(scope="module")
def phantom(installed) -> Path:
    """A small breathing 4D CT (6 phases of 16 x 32 x 32) and a label map of lungs and tumour on phase 0."""
    from MedLVMLib.imaging.phases_io import write_phases
    from MedLVMLib.imaging.volume_io import write_volume
    from MedLVMLib.synthetic.phantom import make_phantom

    case = make_phantom(seed=3, n_phases=6, shape=(16, 32, 32), tumour_diameter_mm=60.0, noise_hu=0.0)
    folder = installed.work_dir / "phantom"
    write_phases(case.phases, folder / "ct.seq.nrrd")
    labels = np.where(np.isin(case.labels[0], [LUNGS, TUMOUR]), case.labels[0], 0).astype(np.uint8)
    write_volume(labels, folder / "labels_phase0.nrrd", case.phases.geometry)
    return folder


def run_job(engine: EngineClient, argv: list[str], timeout: float = 300) -> Event:
    final = engine.wait(engine.submit(argv), timeout=timeout)
    assert final.event == "done" and final.returncode == 0, f"{final.event}: {final.message}"
    return final


# --------------------------------------------------------------------------- the install tree


def test_install_tree_holds_module_engine_and_resources(installed):
    module = installed.module_dir
    for name in (
        "MedLVM.py",
        "Resources/UI/MedLVM.ui",
        "Resources/Icons/MedLVM.png",
        "Resources/models.json",
        "MedLVMLib/engine/models/cpu_kernels.cpp",
    ):
        assert (module / name).is_file(), name
    source = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "MedLVMLib").rglob("*.py"))
    packaged = sorted(p.relative_to(module).as_posix() for p in (module / "MedLVMLib").rglob("*.py"))
    assert packaged == source  # every layer, training/ included
    registry = json.loads((module / "Resources" / "models.json").read_text(encoding="utf-8"))
    bundled = [m["source"]["bundled"] for m in registry["models"] if "bundled" in m["source"]]
    assert bundled and all((module / "Resources" / b / "model.safetensors").is_file() for b in bundled)
    assert not (module / "Testing").exists() and not (module / "MedLVMEngineTest.py").exists()


def test_ctest_registers_the_in_app_tests(installed):
    result = subprocess.run(
        ["ctest", "--show-only=json-v1"], cwd=installed.build_dir, capture_output=True, text=True, timeout=60
    )
    names = sorted(test["name"] for test in json.loads(result.stdout)["tests"])
    assert names == [
        "py_MedLVM",
        "py_MedLVMEngineTest",
        "py_MedLVMTasksTest",
        "py_nomainwindow_qSlicerMedLVMModuleGenericTest",
    ]


def test_clean_interpreter_uses_the_install_tree_only(installed):
    code = (
        "import sys, json, MedLVMLib, MedLVMLib.cli, MedLVMLib.training; "
        "print(json.dumps([MedLVMLib.__file__, MedLVMLib.training.__file__, sys.path, sorted(sys.modules)]))"
    )
    result = clean_python(installed, "-c", code)
    assert result.returncode == 0, result.stderr
    package, training, path, modules = json.loads(result.stdout)
    assert Path(package).is_relative_to(installed.module_dir) and Path(training).is_relative_to(installed.module_dir)
    assert not [p for p in path if p and Path(p).resolve().is_relative_to(ROOT) and ".venv" not in Path(p).parts]
    assert not [m for m in modules if "editable" in m]
    help_text = clean_python(installed, "-m", "MedLVMLib", "--help")
    assert help_text.returncode == 0 and "predict" in help_text.stdout, help_text.stderr


def _python39() -> str | None:
    """A Python 3.9 (Slicer 5.8's) that runs, or None."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    for candidate in [shutil.which("python3.9"), *map(str, sorted(pyenv.glob("versions/3.9*/bin/python3.9")))]:
        if candidate and subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


def test_packaged_code_compiles_on_slicer_58_python(installed):
    """Slicer 5.8 ships Python 3.9: every installed script must at least compile there."""
    python39 = _python39()
    if python39 is None:
        pytest.skip("no Python 3.9 interpreter here")
    code = (
        "import pathlib, sys\nfor p in sorted(pathlib.Path(sys.argv[1]).rglob('*.py')):\n"
        "    try: compile(p.read_text(encoding='utf-8'), str(p), 'exec', dont_inherit=True)\n"
        "    except SyntaxError as e: print(f'{p}:{e.lineno}: {e.msg}')\n"
    )
    result = subprocess.run(
        [python39, "-c", code, str(installed.module_dir)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


# --------------------------------------------------------------------------- jobs through the worker


def test_worker_predicts_motion_from_install_tree(installed, engine, phantom):
    from MedLVMLib.imaging.phases_io import read_phases

    out = installed.work_dir / "motion" / "predicted.seq.nrrd"
    ct = str(phantom / "ct.seq.nrrd")
    run_job(engine, ["predict", "motion", ct, "--out", str(out), *"--method copy-last --observed 3".split()])
    source = read_phases(phantom / "ct.seq.nrrd")
    predicted = read_phases(out)
    assert predicted.index_values == pytest.approx(source.index_values[3:])
    assert predicted.shape == source.shape and predicted.geometry.is_close(source.geometry)
    np.testing.assert_allclose(predicted.array[0], source.array[2], atol=0.5)  # copy-last repeats phase 3


def test_worker_propagates_segmentation_from_install_tree(installed, engine, phantom):
    from MedLVMLib.imaging.seqnrrd import read_sequence_array
    from MedLVMLib.imaging.volume_io import read_volume

    out = installed.work_dir / "segment" / "segmentation.seq.nrrd"
    ct, labels = str(phantom / "ct.seq.nrrd"), str(phantom / "labels_phase0.nrrd")
    flags = "--from-phase 0 --names 2=lungs,6=tumour --method nearest".split()
    run_job(engine, ["predict", "segment", ct, "--labels", labels, *flags, "--out", str(out)])
    labels = read_sequence_array(out)
    assert labels.array.shape == (6, 16, 32, 32)
    np.testing.assert_array_equal(labels.array[0], read_volume(phantom / "labels_phase0.nrrd", labels=True).array)
    assert all(set(np.unique(phase)) == {0, LUNGS, TUMOUR} for phase in labels.array)
    segments = json.loads(out.with_name("segmentation.segments.json").read_text(encoding="utf-8"))["segments"]
    assert [(s["name"], s["label"]) for s in segments] == [("lungs", LUNGS), ("tumour", TUMOUR)]


@pytest.mark.slow
def test_worker_runs_medlvm_model_from_install_tree(installed, engine, phantom):
    """MedLVM itself with the bundled tiny model, read from the install tree's Resources/."""
    from MedLVMLib.imaging.phases_io import read_phases

    out = installed.work_dir / "model" / "predicted.seq.nrrd"
    flags = "--observed 4 --future 1 --axis axial --device cpu".split()
    run_job(engine, ["predict", "motion", str(phantom / "ct.seq.nrrd"), "--out", str(out), *flags])
    source, predicted = read_phases(phantom / "ct.seq.nrrd"), read_phases(out, n_phases=1)
    assert predicted.shape == source.shape and len(predicted.index_values) == 1
    assert np.isfinite(predicted.array).all() and -1100 <= predicted.array.min() <= predicted.array.max() <= 3100
    engine.send_command("ping")
    pong = wait_for_event(engine, "pong")
    assert "medlvm-tiny" in pong.message  # the bundled model, found beside the installed package
