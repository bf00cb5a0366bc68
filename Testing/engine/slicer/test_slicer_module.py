"""The Slicer module without the Slicer app: static checks (.ui, CMake, catalogue entry), light imports,
MedLVMLogic driving a real engine process on MRML nodes of the slicer-core wheel, and MedLVMWidget on fake Qt
widgets through scene close, scene load and a job.

What exists only inside the app is faked (`qt`, `ctk`, `slicer.ScriptedLoadableModule`,
`slicer.parameterNodeWrapper`, `slicer.i18n`, `slicer.app`): the parameter-node wrapper stores its fields in the
real MRML node as Slicer's does, and can answer connectGui like Slicer 5.8 (no tag) or 5.10. Qt's own widgets and
the wrapper's GUI binding are exercised by the in-app tests (MedLVMTest, MedLVMEngineTest, the generic test).
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
import time
import types
import typing
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


FAKE_WRAPPER = {"returns_gui_tag": True}  # False: connectGui returns None, as Slicer 5.8's does


def _fake_parameter_node_wrapper(cls):
    """slicer.parameterNodeWrapper for the fields MedLVMParameterNode has (str, int, MRML nodes), stored in the MRML
    node as Slicer stores them (parameters, node references); GUIs are only counted (`_parameterGUIs`)."""
    kinds = {
        name: typing.get_args(a)[0] if typing.get_origin(a) is typing.Annotated else a
        for name, a in cls.__annotations__.items()
    }

    def init(self, parameterNode):
        self.parameterNode, self._parameterGUIs, self._nextParameterGUIsTag = parameterNode, {}, 0
        for name, kind in kinds.items():  # like the real wrapper: defaults for what the node does not hold
            if kind in (str, int) and name not in parameterNode.GetParameterNames():
                parameterNode.SetParameter(name, str(getattr(cls, name)))

    def read(self, name):
        if kinds[name] in (str, int):
            return kinds[name](self.parameterNode.GetParameter(name))
        return self.parameterNode.GetNodeReference(name)

    def write(self, name, value):
        if kinds[name] in (str, int):
            self.parameterNode.SetParameter(name, str(kinds[name](value)))
        else:
            self.parameterNode.SetNodeReferenceID(name, value.GetID() if value else None)

    def connectGui(self, gui):
        tag, self._nextParameterGUIsTag = self._nextParameterGUIsTag, self._nextParameterGUIsTag + 1
        self._parameterGUIs[tag] = gui
        return tag if FAKE_WRAPPER["returns_gui_tag"] else None

    namespace = {
        "__init__": init,
        "connectGui": connectGui,
        "disconnectGui": lambda self, tag: self._parameterGUIs.pop(tag, None),
        "AddObserver": lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(
            event, callback, priority
        ),
        "RemoveObserver": lambda self, tag: self.parameterNode.RemoveObserver(tag),
    }
    for name in kinds:
        namespace[name] = property(lambda self, n=name: read(self, n), lambda self, v, n=name: write(self, n, v))
    return type(cls.__name__, (), namespace)


def _app_only_modules() -> dict[str, types.ModuleType]:
    qt = types.ModuleType("qt")
    qt.QTimer = _FakeTimer
    qt.Qt = types.SimpleNamespace(ToolTipRole=3, WaitCursor=16)
    ctk = types.ModuleType("ctk")
    slm = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            self.moduleName = type(self).__name__.removesuffix("Logic")

        def getParameterNode(self):
            """As in Slicer: the scene's singleton vtkMRMLScriptedModuleNode tagged with the module name."""
            import slicer

            node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node is None:
                node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
                node.UnRegister(None)
                node.SetSingletonTag(self.moduleName)
                node = slicer.mrmlScene.AddNode(node)
            node.SetAttribute("ModuleName", self.moduleName)
            return node

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent
            self.layout = types.SimpleNamespace(addWidget=lambda widget: None)

        def setup(self):
            pass

        def resourcePath(self, relative):
            return str(MODULE_DIR / "Resources" / relative)

    slm.ScriptedLoadableModule = ScriptedLoadableModule
    slm.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    slm.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    slm.ScriptedLoadableModuleTest = unittest.TestCase
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = _fake_parameter_node_wrapper
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
    from MedLVMLib.slicer.models import read_model_entries

    assert [entry["id"] for entry in read_model_entries()][:1] == [
        json.loads((ROOT / "Resources" / "models.json").read_text(encoding="utf-8"))["models"][0]["id"]
    ]
    assert read_model_entries(ROOT / "no-such.json") == []


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
    "vtkMRMLScalarVolumeNode": "qMRMLNodeComboBox",
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
        "inputVolume",
        "factor",
        "superresAxis",
        "photons",
        "exampleCount",
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
        logic.process(input_sequence, task="volumetric-magic", observedPhases=3)
    with pytest.raises(ValueError, match="factor must be a whole number >= 2, not 1"):
        logic.process(input_sequence, task="superres", factor=1)
    import slicer

    segmentations = input_sequence.GetScene().AddNewNodeByClass("vtkMRMLSequenceNode", "contours")
    segmentations.SetDataNodeAtValue(slicer.vtkMRMLSegmentationNode(), "0")
    with pytest.raises(ValueError, match="'contours' holds vtkMRMLSegmentationNode items: select a sequence of scalar"):
        logic.process(segmentations, task="denoise")
    assert _job_folders(tmp_path) == [] and not logic.busy


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
    from Testing.engine.slicer.test_worker import wait_for_event

    engine = logic.engine()
    engine.send_command("ping")
    pong = wait_for_event(engine, "pong")
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


# --------------------------------------------------------------------------- the panel on fake Qt widgets


class _FakeSignal:
    def __init__(self, owner):
        self._owner, self._slots = owner, []

    def connect(self, slot):
        self._slots.append(slot)

    def emit(self, *args):
        if not self._owner.signalsBlocked:
            for slot in list(self._slots):
                slot(*args)


class _FakeWidget:
    """A Qt widget as MedLVM.py uses it (PythonQt properties as attributes)."""

    def __init__(self):
        self.visible, self.enabled, self.toolTip, self.text, self.signalsBlocked = True, True, "", "", False
        self.clicked = _FakeSignal(self)

    def setVisible(self, visible):
        self.visible = bool(visible)

    def blockSignals(self, block):
        was, self.signalsBlocked = self.signalsBlocked, bool(block)
        return was

    def setRange(self, low, high):
        self.range = (low, high)

    def setValue(self, value):
        self.value = value

    def setMRMLScene(self, scene):
        self.scene = scene


class _FakeComboBox(_FakeWidget):
    """QComboBox: setting currentIndex (or adding the first item) emits currentIndexChanged."""

    def __init__(self):
        super().__init__()
        self.items, self._index = [], -1
        self.currentIndexChanged = _FakeSignal(self)

    count = property(lambda self: len(self.items))
    currentText = property(lambda self: self.items[self._index] if 0 <= self._index < len(self.items) else "")

    @property
    def currentIndex(self):
        return self._index

    @currentIndex.setter
    def currentIndex(self, index):
        if index != self._index:
            self._index = index
            self.currentIndexChanged.emit(index)

    def addItem(self, text):
        self.items.append(text)
        if self._index < 0:
            self.currentIndex = 0

    def setItemData(self, index, value, role):
        pass

    def clear(self):
        self.items = []
        self.currentIndex = -1


class _FakePathLineEdit(_FakeWidget):
    """ctkPathLineEdit: setting currentPath emits currentPathChanged."""

    def __init__(self):
        super().__init__()
        self._path = ""
        self.currentPathChanged = _FakeSignal(self)

    @property
    def currentPath(self):
        return self._path

    @currentPath.setter
    def currentPath(self, path):
        if path != self._path:
            self._path = path
            self.currentPathChanged.emit(path)


class _FakePlainTextEdit(_FakeWidget):
    """QPlainTextEdit: appendPlainText adds a line (the .ui's maximumBlockCount is not emulated)."""

    def __init__(self):
        super().__init__()
        self.lines = []

    def appendPlainText(self, text):
        self.lines.append(text)

    def clear(self):
        self.lines = []


def _fake_ui() -> types.SimpleNamespace:
    """What slicer.util.childWidgetVariables gives for MedLVM.ui: one fake per named widget."""
    fakes = {"QComboBox": _FakeComboBox, "ctkPathLineEdit": _FakePathLineEdit, "QPlainTextEdit": _FakePlainTextEdit}
    widgets = {name: fakes.get(w.get("class"), _FakeWidget)() for name, w in _ui_widgets().items()}
    return types.SimpleNamespace(**widgets)


@pytest.fixture
def widget(module, monkeypatch, tmp_path):
    """MedLVMWidget set up as Slicer does, on fake widgets and an app-like scene; error pop-ups are recorded."""
    import slicer

    from MedLVMLib.slicer import protocol
    from Testing.engine.slicer.test_mrml import app_like_scene

    scene, errors = app_like_scene(), []
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.setattr(
        slicer,
        "app",
        types.SimpleNamespace(
            applicationDirPath="",
            testingEnabled=lambda: False,
            setOverrideCursor=lambda cursor: None,
            restoreOverrideCursor=lambda: None,
        ),
        raising=False,
    )
    monkeypatch.setattr(slicer.util, "loadUI", lambda path: _FakeWidget())
    monkeypatch.setattr(slicer.util, "childWidgetVariables", lambda uiWidget: _fake_ui())
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kwargs: errors.append(text))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    panel = module.MedLVMWidget(types.SimpleNamespace(isEntered=True))
    panel.setup()
    panel.logic.engineEnvironment = {protocol.TEST_HOOKS_ENV: "1"}
    panel.logic.setupPythonRequirements = lambda askConfirmation=True, download=False: True  # never pip install
    panel.errors = errors
    yield panel
    panel.cleanup()
    scene.Clear(1)


def _scene_xml(scene) -> str:
    scene.SetSaveToXMLString(1)
    scene.Commit()
    return scene.GetSceneXMLString()


def _load_scene_xml(scene, xml: str) -> None:
    """What File > Load Scene does to the module's singleton parameter node: updates it in place."""
    scene.SetLoadFromXMLString(1)
    scene.SetSceneXMLString(xml)
    scene.Import()


@pytest.mark.parametrize("returns_gui_tag", [True, False], ids=["slicer-5.10", "slicer-5.8"])
def test_model_choice_and_parameter_node_agree_through_scene_close_and_load(
    module, widget, monkeypatch, returns_gui_tag
):
    import slicer

    monkeypatch.setitem(FAKE_WRAPPER, "returns_gui_tag", returns_gui_tag)
    combo = widget.ui.modelComboBox
    registry = json.loads((ROOT / "Resources" / "models.json").read_text(encoding="utf-8"))
    wrappers = [widget._parameterNode]
    widget.enter()  # the module is shown again: a new wrapper, connected to the GUI
    wrappers.append(widget._parameterNode)
    default = registry.get("task_defaults", {}).get(widget._parameterNode.task, registry["default"])  # what runs
    assert default and combo.currentText.startswith(f"{default} — ") and widget._parameterNode.model == ""
    task = widget._parameterNode.task
    widget._parameterNode.task = "segment"  # another task shows its own default
    assert combo.currentText.startswith(f"{registry['default']} — ") and widget._parameterNode.model == ""
    widget._parameterNode.task = task
    assert combo.currentText.startswith(f"{default} — ")
    combo.currentIndex = [widget_choice.id for widget_choice in widget._models].index("medlvm-tiny-zs")  # user picks
    assert widget._parameterNode.model == "medlvm-tiny-zs"
    saved = _scene_xml(slicer.mrmlScene)

    slicer.mrmlScene.Clear(0)  # File > Close Scene: the parameter node is reset
    wrappers.append(widget._parameterNode)
    assert widget._currentModel() == default and widget._parameterNode.model == ""  # shown = run; not written back
    _load_scene_xml(slicer.mrmlScene, saved)
    assert combo.currentText.startswith("medlvm-tiny-zs — ") and widget._parameterNode.model == "medlvm-tiny-zs"
    widget._parameterNode.model = "/models/mine"  # a folder, set from the Python console
    assert combo.currentText == module.CUSTOM_MODEL and widget.ui.modelFolderPathLineEdit.currentPath == "/models/mine"
    assert [w for w in wrappers if w._parameterGUIs] == [widget._parameterNode]  # no stale GUI connection


def test_connect_gui_with_tag_on_slicer_58_and_510():
    from MedLVMLib.slicer.panel import connect_gui_with_tag

    wrapper = types.SimpleNamespace(_nextParameterGUIsTag=4)
    wrapper.connectGui = lambda gui: None  # 5.8
    assert connect_gui_with_tag(wrapper, object()) == 4
    wrapper.connectGui = lambda gui: 7  # 5.10
    assert connect_gui_with_tag(wrapper, object()) == 7


def _small_sequence(scene):
    import numpy as np

    from MedLVMLib.imaging.volume import Phases
    from MedLVMLib.slicer import mrml
    from Testing.engine.slicer.test_mrml import OBLIQUE

    array = np.random.default_rng(2).uniform(-1000, 500, (4, 3, 4, 5)).astype(np.float32)
    return mrml.phases_to_sequence(scene, Phases(array, OBLIQUE, index_values=[0.0, 25.0, 50.0, 75.0]), "4D CT")


def _slow_job(request, *paths):
    return ["_selftest", "--steps", "2000", "--delay", "0.05"]


def test_closing_the_scene_during_a_job_cancels_it(widget, tmp_path):
    import slicer

    widget._parameterNode.inputSequence = _small_sequence(slicer.mrmlScene)
    widget._parameterNode.observedPhases = 3
    widget.logic.buildArgv = _slow_job
    widget.onApplyButton()
    assert widget.logic.busy and widget.ui.cancelButton.enabled and len(_job_folders(tmp_path)) == 1
    pid = widget.logic.engine().pid
    slicer.mrmlScene.Clear(0)
    assert not widget.logic.busy and widget.logic.lastJobCancelled
    assert widget.ui.statusLabel.text == "Cancelled: the scene was closed." and widget.errors == []
    assert not widget.ui.cancelButton.enabled and not widget.ui.progressBar.visible
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert _job_folders(tmp_path) == [] and _sequence_names(slicer.mrmlScene) == []


def test_logic_cancels_its_job_when_the_scene_closes(logic, input_sequence, tmp_path):
    logic.buildArgv = _slow_job
    finished = []
    logic.process(input_sequence, observedPhases=3, blocking=False, onFinished=lambda o, e: finished.append((o, e)))
    input_sequence.GetScene().Clear(0)
    assert finished == [(None, "Cancelled: the scene was closed.")] and not logic.engine().alive
    assert _job_folders(tmp_path) == []


def test_results_are_discarded_when_the_input_left_the_scene(logic, input_sequence, tmp_path):
    scene = input_sequence.GetScene()
    names = [name for name in _sequence_names(scene) if name != input_sequence.GetName()]
    logic.buildArgv = _copy_argv
    finished = []
    logic.process(input_sequence, observedPhases=3, blocking=False, onFinished=lambda o, e: finished.append((o, e)))
    scene.RemoveNode(input_sequence)
    deadline = time.monotonic() + 60
    while logic.busy and time.monotonic() < deadline:
        logic._poll()  # what the Qt timer does
        time.sleep(0.05)
    assert finished == [
        (
            None,
            "The input left the scene while MedLVM ran (was the scene closed?); the results were discarded.",
        )
    ]
    assert _sequence_names(scene) == names and _job_folders(tmp_path) == [] and not logic.lastJobCancelled


def test_engine_warnings_reach_the_panel_after_the_job(widget, monkeypatch):
    """A "Warning:" log line (the motion check) is shown in a pop-up when the result arrives; progress lines not."""
    import slicer

    shown = []
    monkeypatch.setattr(slicer.util, "warningDisplay", lambda text, **kwargs: shown.append(text), raising=False)
    monkeypatch.setattr("MedLVMLib.slicer.jobs.show_outputs", lambda outputs: None)
    sequence = types.SimpleNamespace(GetName=lambda: "4D CT predicted", GetNumberOfDataNodes=lambda: 5)
    widget._warnings = []
    widget.onLog("register: 2/5")
    widget.onLog("Warning: lung volume: the prediction moves 0.0 mL, under 10% of the observed 600.0 mL")
    widget.onFinished(types.SimpleNamespace(sequence=sequence), None)
    assert shown == ["Warning: lung volume: the prediction moves 0.0 mL, under 10% of the observed 600.0 mL"]
    assert widget.ui.statusLabel.text.endswith("with 1 warning(s): review before use")
    assert widget.ui.logTextEdit.lines[:2] == ["register: 2/5", shown[0]]
    widget._warnings = []  # what Apply does before the next job
    widget.onFinished(types.SimpleNamespace(sequence=sequence), None)
    assert len(shown) == 1 and widget.ui.statusLabel.text == "Done: 4D CT predicted (5 phases)"
