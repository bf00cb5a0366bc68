"""The Slicer module without the Slicer app: static checks (.ui, CMake, catalogue entry), light imports, and
MedLVMLogic driving a real engine process on MRML nodes of the slicer-core wheel.

Only Qt is faked (`qt`, `ctk`, `slicer.ScriptedLoadableModule`, `slicer.parameterNodeWrapper`, `slicer.i18n`
exist only inside the app): the widget and the parameter-node/GUI binding are exercised by the in-app
tests (MedLVMTest, MedLVMEngineTest, and the generic module test of WITH_GENERIC_TESTS).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import types
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
MODULE_DIR = ROOT / "MedLVM"
MODULE_PY = MODULE_DIR / "MedLVM.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "MedLVM.ui"
HEAVY_MODULES = (
    "torch",
    "SimpleITK",
    "scipy",
    "skimage",
    "safetensors",
    "MedLVMLib.api",
    "MedLVMLib.engine.models",
    "MedLVMLib.tasks",
    "MedLVMLib.slicer.mrml",
    "MedLVMLib.imaging.volume",
)


# --------------------------------------------------------------------------- fakes for the app-only modules


class _FakeTimer:
    """Stands in for qt.QTimer: never fires (tests drive the logic with blocking calls or cancel)."""

    def __init__(self):
        self.timeout = types.SimpleNamespace(connect=lambda slot: None)
        self.active = False

    def setInterval(self, ms):
        self.interval = ms

    def start(self):
        self.active = True

    def stop(self):
        self.active = False


def _app_only_modules() -> dict[str, types.ModuleType]:
    qt = types.ModuleType("qt")
    qt.QTimer = _FakeTimer
    qt.Qt = types.SimpleNamespace(ToolTipRole=3)
    ctk = types.ModuleType("ctk")
    slm = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleLogic:
        def getParameterNode(self):
            raise NotImplementedError("parameter nodes need the Slicer app")

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent

    slm.ScriptedLoadableModule = ScriptedLoadableModule
    slm.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    slm.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    slm.ScriptedLoadableModuleTest = unittest.TestCase
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = lambda cls: cls
    pnw.Choice = lambda choices: ("Choice", tuple(choices))
    pnw.WithinRange = lambda low, high: ("WithinRange", low, high)
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    return {
        "qt": qt,
        "ctk": ctk,
        "slicer.ScriptedLoadableModule": slm,
        "slicer.parameterNodeWrapper": pnw,
        "slicer.i18n": i18n,
    }


def load_module_with_fakes():
    """Import MedLVM/MedLVM.py as the app would, with the app-only modules faked. Returns the module."""
    import slicer

    for name, module in _app_only_modules().items():
        sys.modules[name] = module
        if name.startswith("slicer."):
            setattr(slicer, name.split(".", 1)[1], module)
    spec = importlib.util.spec_from_file_location("MedLVM", MODULE_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules["MedLVM"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def module():
    pytest.importorskip("slicer")
    import slicer

    saved = {name: sys.modules.get(name) for name in [*_app_only_modules(), "MedLVM"]}
    attributes = {
        name.split(".", 1)[1]: getattr(slicer, name.split(".", 1)[1], None)
        for name in _app_only_modules()
        if name.startswith("slicer.")
    }
    yield load_module_with_fakes()
    for name, previous in saved.items():
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
    for attribute, previous in attributes.items():
        if previous is None:
            delattr(slicer, attribute)
        else:
            setattr(slicer, attribute, previous)


# --------------------------------------------------------------------------- light imports


def test_module_import_is_light():
    """Importing MedLVM.py (what Slicer does at start-up) must not import torch or the engine's heavy parts."""
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); import test_slicer_module as t; "
        "m = t.load_module_with_fakes(); print(json.dumps(sorted(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert "MedLVM" in loaded
    heavy = sorted(
        name
        for name in loaded
        if name.split(".")[0] in HEAVY_MODULES
        or name in HEAVY_MODULES
        or any(name.startswith(h + ".") for h in HEAVY_MODULES)
    )
    assert heavy == []


def test_module_imports_nothing_heavy_at_top_level():
    tree = ast.parse(MODULE_PY.read_text(encoding="utf-8"))
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in top if isinstance(n, ast.ImportFrom)}
    assert not {n for n in names if n and (n.split(".")[0] in ("torch", "numpy", "MedLVMLib"))}


def test_module_classes_and_metadata(module):
    parent = types.SimpleNamespace()
    module.MedLVM(parent)
    assert parent.title == "MedLVM"
    assert "Radiotherapy" in parent.categories and parent.contributors and parent.helpText
    assert parent.acknowledgementText
    for name in ("MedLVMParameterNode", "MedLVMWidget", "MedLVMLogic", "MedLVMTest"):
        assert hasattr(module, name)
    assert [entry["id"] for entry in module.readModelRegistry()][:1] == [
        json.loads((ROOT / "Resources" / "models.json").read_text(encoding="utf-8"))["models"][0]["id"]
    ]
    assert module.readModelRegistry(ROOT / "no-such.json") == []


# --------------------------------------------------------------------------- .ui file


def _ui_widgets() -> dict[str, ET.Element]:
    root = ET.parse(UI_FILE).getroot()
    assert root.tag == "ui" and root.get("version") == "4.0"
    return {w.get("name"): w for w in root.iter("widget")}


def _parameter_fields() -> dict[str, str]:
    """{field: annotation source} of MedLVMParameterNode, read from the source."""
    tree = ast.parse(MODULE_PY.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MedLVMParameterNode")
    return {n.target.id: ast.unparse(n.annotation) for n in cls.body if isinstance(n, ast.AnnAssign)}


def _parameter_name(widget: ET.Element):
    for prop in widget.findall("property"):
        if prop.get("name") == "SlicerParameterName":
            return prop.find("string").text
    return None


def test_ui_top_widget_and_custom_widgets():
    root = ET.parse(UI_FILE).getroot()
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget"
    declared = {c.find("class").text for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    assert {c for c in used if not c.startswith("Q")} <= declared
    assert any(c.find("signal").text == "mrmlSceneChanged(vtkMRMLScene*)" for c in root.iter("connection"))


def test_ui_has_every_widget_the_code_uses():
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_PY.read_text(encoding="utf-8")))
    assert {"applyButton", "cancelButton", "progressBar", "statusLabel"} <= used
    assert used - set(_ui_widgets()) == set()


EXPECTED_WIDGET_CLASS = {
    "vtkMRMLSequenceNode": "qMRMLNodeComboBox",
    "vtkMRMLSegmentationNode": "qMRMLNodeComboBox",
    "Choice": "QComboBox",
    "int": "QSpinBox",
}


def test_ui_parameter_bindings_match_parameter_node():
    fields = _parameter_fields()
    bound = {_parameter_name(w): w for w in _ui_widgets().values() if _parameter_name(w)}
    assert set(bound) <= set(fields)
    assert {
        "inputSequence",
        "task",
        "observedPhases",
        "phasesToPredict",
        "device",
        "axis",
        "samples",
        "seed",
        "exampleSegmentation",
        "fromPhase",
    } <= set(bound)
    for name, widget in bound.items():
        annotation = fields[name]
        key = next(k for k in EXPECTED_WIDGET_CLASS if k in annotation)
        assert widget.get("class") == EXPECTED_WIDGET_CLASS[key], name


def test_ui_sequence_selector_and_advanced_section():
    widgets = _ui_widgets()
    selector = widgets["inputSequenceSelector"]
    types_ = [s.text for p in selector.findall("property") if p.get("name") == "nodeTypes" for s in p.iter("string")]
    assert types_ == ["vtkMRMLSequenceNode"]
    advanced = widgets["advancedCollapsibleButton"]
    collapsed = [p.find("bool").text for p in advanced.findall("property") if p.get("name") == "collapsed"]
    assert collapsed == ["true"]
    assert "axisComboBox" in {w.get("name") for w in advanced.iter("widget")}


# --------------------------------------------------------------------------- CMake and catalogue entry


def _cmake_lists(text: str) -> dict[str, list[str]]:
    text = re.sub(r"#[^\n]*", "", text)
    return {m.group(1): m.group(2).split() for m in re.finditer(r"set\((\w+)\s+([^)]*)\)", text)}


def test_module_cmake_lists_existing_files():
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    lists = _cmake_lists(text)
    name = lists["MODULE_NAME"][0]
    assert name == "MedLVM"
    files = [
        f.replace("${MODULE_NAME}", name) for f in lists["MODULE_PYTHON_SCRIPTS"] + lists["MODULE_PYTHON_RESOURCES"]
    ]
    assert "MedLVM.py" in files and "Resources/UI/MedLVM.ui" in files
    assert [f for f in files if not (MODULE_DIR / f).is_file()] == []
    assert "WITH_GENERIC_TESTS" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def test_engine_packaging_globs_match_the_package():
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "${MEDLVM_ROOT_DIR}/MedLVMLib/*.py" in text and "SOURCE_DIR ${MEDLVM_ROOT_DIR}" in text
    packaged = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "MedLVMLib").rglob("*.py"))
    assert "EXCLUDE" not in text  # the worker builds the whole `medlvm` parser, training commands included
    kernels = "MedLVMLib/engine/models/cpu_kernels.cpp"
    assert kernels in text and (ROOT / kernels).is_file()
    for needed in (
        "MedLVMLib/__init__.py",
        "MedLVMLib/__main__.py",
        "MedLVMLib/slicer/mrml.py",
        "MedLVMLib/slicer/server.py",
        "MedLVMLib/commands/worker.py",
        "MedLVMLib/training/cli_args.py",
        "MedLVMLib/cli.py",
    ):
        assert needed in packaged
    assert (ROOT / "Resources" / "models.json").is_file()


def test_testing_cmake_lists_existing_scripts():
    assert (MODULE_DIR / "Testing" / "CMakeLists.txt").read_text(encoding="utf-8").strip() == "add_subdirectory(Python)"
    python_dir = MODULE_DIR / "Testing" / "Python"
    scripts = _cmake_lists((python_dir / "CMakeLists.txt").read_text(encoding="utf-8"))["MEDLVM_APP_TEST_SCRIPTS"]
    assert scripts and [s for s in scripts if not (python_dir / s).is_file()] == []
    for script in scripts:  # each script defines the test class runUnitTest looks up by file name
        assert f"class {Path(script).stem}(ScriptedLoadableModuleTest)" in (python_dir / script).read_text(
            encoding="utf-8"
        )


def test_extension_cmake_metadata():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"^project\(MedLVM\)", text, re.M)
    for field in ("HOMEPAGE", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS"):
        assert re.search(rf'set\(EXTENSION_{field} "[^"]+"\)', text), field
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text
    assert "add_subdirectory(MedLVM)" in text
    assert "MedLVM/Resources/Icons/MedLVM.png" in text and (MODULE_DIR / "Resources/Icons/MedLVM.png").is_file()


def test_catalogue_entry_and_license():
    entry = json.loads((ROOT / "MedLVM.json").read_text(encoding="utf-8"))
    assert {"$schema", "category", "scm_url"} <= set(entry)
    assert entry["category"] in ("Radiotherapy", "Sequences", "Segmentation")
    assert entry["build_dependencies"] == ["PyTorch"]
    assert entry["scm_url"].startswith("https://github.com/")
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in license_text and "Version 2.0" in license_text


def test_icon_is_128_square_png():
    data = (MODULE_DIR / "Resources" / "Icons" / "MedLVM.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (128, 128)


# --------------------------------------------------------------------------- the logic with a real engine process


def _copy_argv(request, input_path, out_path, *labels_and_names):
    return ["_selftest", "--steps", "3", "--copy", str(input_path), str(out_path)]


@pytest.fixture
def logic(module, tmp_path, monkeypatch):
    from MedLVMLib.slicer import protocol

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # job folders go here, so the tests can look
    logic = module.MedLVMLogic()
    logic.engineEnvironment = {protocol.TEST_HOOKS_ENV: "1"}
    yield logic
    logic.shutdownEngine()


@pytest.fixture
def input_sequence():
    import numpy as np

    from MedLVMLib.imaging.volume import Phases
    from MedLVMLib.slicer import mrml
    from Testing.engine.slicer.test_mrml import OBLIQUE, app_like_scene

    scene = app_like_scene()
    array = np.random.default_rng(1).uniform(-1000, 500, (6, 4, 5, 6)).astype(np.float32)
    phases = Phases(array=array, geometry=OBLIQUE, index_values=[0.0, 10.0, 20.0, 30.0, 40.0, 50.0])
    sequence = mrml.phases_to_sequence(scene, phases, "patient 4D CT")
    yield sequence
    scene.Clear(1)


def _job_folders(tmp_path: Path) -> list:
    return sorted(p.name for p in tmp_path.glob("MedLVM-*"))


def _sequence_names(scene) -> list:
    nodes = scene.GetNodesByClass("vtkMRMLSequenceNode")
    return sorted(nodes.GetItemAsObject(i).GetName() for i in range(nodes.GetNumberOfItems()))


def test_logic_round_trip_through_engine(logic, input_sequence, tmp_path):
    from MedLVMLib.slicer import mrml

    logic.buildArgv = _copy_argv
    before = mrml.sequence_to_phases(input_sequence)
    progress, finished = [], []
    outputs = logic.process(
        input_sequence,
        observedPhases=3,
        onProgress=lambda *a: progress.append(a),
        onFinished=lambda o, e: finished.append(e),
    )
    assert finished == [None]
    assert progress[0] == ("selftest", 0, 3) and progress[-1] == ("selftest", 3, 3)
    result = mrml.sequence_to_phases(outputs.sequence)
    np = pytest.importorskip("numpy")
    np.testing.assert_allclose(result.array, before.array)
    assert result.geometry.is_close(before.geometry) and result.index_values == before.index_values
    assert outputs.sequence.GetName() == "patient 4D CT predicted"
    assert outputs.browser.IsSynchronizedSequenceNode(input_sequence, False)
    assert outputs.mean is None and outputs.std is None
    np.testing.assert_array_equal(mrml.sequence_to_phases(input_sequence).array, before.array)  # input untouched
    assert _job_folders(tmp_path) == []
    assert not logic.busy


def test_logic_engine_error_becomes_message(logic, input_sequence, tmp_path):
    logic.buildArgv = lambda request, i, o, *rest: ["_selftest", "--steps", "1", "--fail", "input"]
    names = _sequence_names(input_sequence.GetScene())
    with pytest.raises(RuntimeError, match="selftest: a bad input"):
        logic.process(input_sequence, observedPhases=3)
    assert _sequence_names(input_sequence.GetScene()) == names
    assert _job_folders(tmp_path) == [] and logic.engine().alive


def test_logic_cancel_kills_engine_and_leaves_nothing(logic, input_sequence, tmp_path):
    import time

    logic.buildArgv = lambda request, i, o, *rest: ["_selftest", "--steps", "2000", "--delay", "0.05"]
    names = _sequence_names(input_sequence.GetScene())
    finished = []
    logic.process(input_sequence, observedPhases=3, blocking=False, onFinished=lambda o, e: finished.append((o, e)))
    assert logic.busy and len(_job_folders(tmp_path)) == 1
    time.sleep(0.5)
    pid = logic.engine().pid
    logic.cancel()
    assert finished == [(None, "Cancelled.")]
    assert not logic.busy and not logic.engine().alive
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert _job_folders(tmp_path) == [] and _sequence_names(input_sequence.GetScene()) == names


def test_logic_crash_is_reported_then_engine_restarts(logic, input_sequence, tmp_path):
    logic.buildArgv = lambda request, i, o, *rest: ["_selftest", "--steps", "2000", "--delay", "0.05"]
    logic.engine().start()
    pid = logic.engine().pid
    threading.Timer(1.0, lambda: logic.engine().send_command("_exit", code=9)).start()
    with pytest.raises(RuntimeError, match=r"stopped unexpectedly \(exit status 9\)"):
        logic.process(input_sequence, observedPhases=3, timeoutS=60)
    assert _job_folders(tmp_path) == []
    logic.buildArgv = _copy_argv
    outputs = logic.process(input_sequence, observedPhases=3)
    assert outputs.sequence.GetNumberOfDataNodes() == 6 and logic.engine().pid != pid


def test_logic_rejects_bad_requests(logic, input_sequence, tmp_path):
    with pytest.raises(ValueError, match="at least 7 phases"):
        logic.process(input_sequence, observedPhases=7)
    with pytest.raises(Exception, match="not available from the Slicer module"):
        logic.process(input_sequence, task="superres", observedPhases=3)
    assert _job_folders(tmp_path) == []


def _has_predict_motion() -> bool:
    from MedLVMLib.cli import build_parser

    try:
        build_parser().parse_args(["predict", "motion", "x", "--out", "y.seq.nrrd"])
    except SystemExit:
        return False
    return True


def test_logic_predict_motion_baseline(logic, input_sequence, tmp_path):
    """The real `medlvm predict motion --method copy-last` through the worker: index values continue."""
    if not _has_predict_motion():
        pytest.skip("`medlvm predict motion` is not available")
    from MedLVMLib.slicer import mrml

    outputs = logic.process(input_sequence, observedPhases=3, phasesToPredict=3, method="copy-last")
    result = mrml.sequence_to_phases(outputs.sequence)
    assert result.index_values == [30.0, 40.0, 50.0]
    assert result.geometry.is_close(mrml.sequence_to_phases(input_sequence).geometry)
    assert result.shape == (4, 5, 6)
    observed_last = mrml.volume_array(input_sequence.GetNthDataNode(2))
    np = pytest.importorskip("numpy")
    np.testing.assert_allclose(result.array[0], observed_last, atol=0.5)  # copy-last repeats phase 20%
    assert _job_folders(tmp_path) == []


def test_logic_predict_segment_propagation(logic, tmp_path):
    """The real `medlvm predict segment --from-phase` through the worker: one segmentation per phase."""
    np = pytest.importorskip("numpy")
    from MedLVMLib.cli import build_parser
    from MedLVMLib.imaging.volume import Phases
    from MedLVMLib.slicer import mrml, segmentations
    from Testing.engine.slicer.test_mrml import OBLIQUE, app_like_scene

    try:
        build_parser().parse_args(["predict", "segment", "x", "--labels", "y", "--from-phase", "0"])
    except SystemExit:
        pytest.skip("`medlvm predict segment` is not available")
    scene = app_like_scene()
    z, y, x = np.mgrid[0:8, 0:12, 0:12]
    array = np.full((3, 8, 12, 12), -800.0, np.float32)
    for p in range(3):
        array[p][(z - 3 - p) ** 2 + (y - 6) ** 2 + (x - 6) ** 2 < 9] = 50.0
    sequence = mrml.phases_to_sequence(scene, Phases(array, OBLIQUE, index_values=[0.0, 10.0, 20.0]), "4D")
    drawn = (array[0] > 0).astype(np.uint8)
    example = segmentations.labels_to_segmentation(scene, drawn, OBLIQUE, {1: "tumour"}, "drawn")
    outputs = logic.process(
        sequence, task="segment", exampleSegmentation=example, fromPhase=0, method="registration", axis="axial"
    )
    assert outputs.sequence.GetNumberOfDataNodes() == 3
    assert [outputs.sequence.GetNthIndexValue(i) for i in range(3)] == ["0", "10", "20"]
    summary = segmentations.segment_summary(outputs.sequence.GetNthDataNode(2))
    assert [s[0] for s in summary] == ["tumour"] and "Neoplasm" in summary[0][2]
    assert outputs.browser.IsSynchronizedSequenceNode(sequence, False)
    reference = mrml.new_volume_node(scene, array[2], OBLIQUE, "reference")
    propagated, _ = segmentations.segmentation_to_labels(outputs.sequence.GetNthDataNode(2), reference)
    assert propagated.sum() > 0
    assert _job_folders(tmp_path) == []
    scene.Clear(1)


@pytest.mark.slow
def test_logic_predict_motion_model_samples_and_cache(logic, input_sequence, tmp_path):
    """MedLVM itself (the bundled default, random weights until trained) with 2 samples: predicted, mean and
    std sequences in one browser; the worker keeps the model loaded for the next request."""
    if not _has_predict_motion():
        pytest.skip("`medlvm predict motion` is not available")
    from MedLVMLib.slicer import mrml

    stages = []
    outputs = logic.process(
        input_sequence,
        observedPhases=3,
        phasesToPredict=1,
        samples=2,
        device="cpu",
        onProgress=lambda stage, done, total: stages.append(stage),
    )
    assert stages and outputs.mean is not None and outputs.std is not None
    for node in (outputs.sequence, outputs.mean, outputs.std):
        phases = mrml.sequence_to_phases(node)
        assert phases.index_values == [30.0] and phases.shape == (4, 5, 6)
        assert outputs.browser.IsSynchronizedSequenceNode(node, True)
    assert outputs.std.GetName() == "patient 4D CT predicted uncertainty (std HU)"
    assert (mrml.sequence_to_phases(outputs.std).array >= 0).all()
    assert mrml.volume_array(outputs.uncertainty).shape == (4, 5, 6)
    logic.process(input_sequence, observedPhases=3, phasesToPredict=1, device="cpu")
    engine = logic.engine()
    engine.send_command("ping")
    pong = next(e for e in engine.poll(timeout=10) if e.event == "pong")
    assert len(pong.message.splitlines()) == 1  # one model, loaded once, kept for both requests
    assert _job_folders(tmp_path) == []


def test_in_app_self_test_baseline_runs_headless(module, monkeypatch, tmp_path):
    """MedLVMTest.test_MotionBaseline (what Slicer's ctest runs) on the slicer-core wheel."""
    if not _has_predict_motion():
        pytest.skip("`medlvm predict motion` is not available")
    import slicer

    from Testing.engine.slicer.test_mrml import app_like_scene

    monkeypatch.setattr(slicer, "mrmlScene", app_like_scene(), raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    test = module.MedLVMTest()
    test.delayDisplay = lambda message: None  # a Qt message box in the app
    test.setUp()
    test.test_MotionBaseline()
    assert slicer.mrmlScene.GetFirstNodeByName("MedLVM test 4D CT predicted") is not None
    assert _job_folders(tmp_path) == []
