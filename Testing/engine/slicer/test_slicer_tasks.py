"""Denoise and super-resolution from the Slicer module (MedLVMLogic on slicer-core MRML with a real engine process),
the task options on the command line, the panel's log and per-task options, the install plan and the worker's
start-up arguments."""

from __future__ import annotations

import types

import numpy as np
import pytest

from MedLVMLib.errors import MedLVMError
from MedLVMLib.slicer import jobs, panel, protocol, requirements
from MedLVMLib.slicer.client import CREATE_NO_WINDOW, popen_options
from Testing.engine.slicer import test_slicer_module as base
from Testing.engine.slicer.test_slicer_module import _job_folders

pytest.importorskip("slicer")
# the fixtures of the module's other tests: the module with faked app parts, its logic and panel, a 4D CT
module, logic, widget, input_sequence = base.module, base.logic, base.widget, base.input_sequence

# --------------------------------------------------------------------------- task arguments


@pytest.mark.parametrize(
    "fields, expected, absent",
    [
        (dict(task="denoise"), ["--method", "medlvm"], ["--photons", "--n-examples", "--axis", "--observed"]),
        (dict(task="denoise", photons=2e4, n_examples=2), ["--n-examples", "2", "--photons", "20000"], ["--factor"]),
        (dict(task="denoise", method="tv", photons=2e4, model="lvm-7b"), ["--method", "tv"], ["--photons", "--model"]),
        (dict(task="superres", factor=3, superres_axis="xy"), ["--factor", "3", "--axis", "xy"], ["--observed"]),
        (dict(task="superres", axis="axial"), ["--factor", "2", "--axis", "z"], ["axial"]),
    ],
)
def test_volume_task_argv(fields, expected, absent):
    argv = protocol.task_argv(protocol.TaskRequest(**fields), "in.nrrd", "out.nrrd")
    assert argv[:5] == ["predict", fields["task"], "in.nrrd", "--out", "out.nrrd"]
    joined = " ".join(argv)
    assert " ".join(expected) in joined
    assert [a for a in absent if a in argv] == []


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(task="superres", factor=1), "factor must be a whole number >= 2"),
        (dict(task="superres", superres_axis="y"), "axis 'y' is not one of z, xy"),
        (dict(task="denoise", photons=-5), "dose level"),
        (dict(task="denoise", n_examples=-1), "example pairs"),
    ],
)
def test_volume_task_argv_rejects_bad_options(fields, message):
    with pytest.raises(MedLVMError, match=message):
        protocol.task_argv(protocol.TaskRequest(**fields), "in.nrrd", "out.nrrd")


def test_output_names_follow_the_task():
    assert protocol.TaskRequest(task="denoise").output_suffix == "denoised"
    assert protocol.TaskRequest(task="superres", factor=4).output_suffix == "x4"
    assert protocol.TaskRequest(task="motion").output_suffix == "predicted"


# --------------------------------------------------------------------------- the logic with the real engine


def _volume(scene, name="chest CT"):
    from MedLVMLib.slicer import mrml
    from Testing.engine.slicer.test_mrml import OBLIQUE

    array = np.random.default_rng(3).uniform(-1000, 500, (4, 6, 5)).astype(np.float32)
    return mrml.new_volume_node(scene, array, OBLIQUE, name)


def test_logic_superres_of_a_volume(logic, input_sequence, tmp_path):
    """`medlvm predict superres --method linear` on one volume: a new volume "<input> x2" with twice the slices."""
    from MedLVMLib.slicer import mrml

    volume = _volume(input_sequence.GetScene())
    before = mrml.volume_array(volume)
    outputs = logic.process(volume, task="superres", factor=2, method="linear")
    assert outputs.sequence is None and outputs.volume.GetName() == "chest CT x2"
    result = mrml.volume_array(outputs.volume)
    assert result.shape == (8, 6, 5)
    geometry, source = mrml.node_geometry(outputs.volume), mrml.node_geometry(volume)
    np.testing.assert_allclose(geometry.spacing, (source.spacing[0], source.spacing[1], source.spacing[2] / 2))
    np.testing.assert_allclose(geometry.direction, source.direction, atol=1e-6)
    assert abs(result.mean() - before.mean()) < 0.25 * before.std()  # same intensities, finer grid
    assert outputs.volume.GetAttribute("MedLVM.Predicted") == "1"
    np.testing.assert_array_equal(mrml.volume_array(volume), before)  # input untouched
    assert _job_folders(tmp_path) == [] and not logic.busy


def test_logic_denoise_of_each_sequence_item(logic, input_sequence, tmp_path):
    """A sequence is denoised item by item (one engine request each) into a new sequence on the same index values,
    browsed with the input; progress names the item."""
    from MedLVMLib.slicer import mrml

    before = mrml.sequence_to_phases(input_sequence)
    stages = []
    outputs = logic.process(input_sequence, task="denoise", method="tv",
                            onProgress=lambda stage, done, total: stages.append(stage))
    result = mrml.sequence_to_phases(outputs.sequence)
    assert outputs.sequence.GetName() == "patient 4D CT denoised"
    assert result.index_values == before.index_values and result.index_unit == before.index_unit
    assert result.array.shape == before.array.shape and result.geometry.is_close(before.geometry)
    assert result.array.std() < before.array.std()  # the filter smooths the random input
    assert outputs.browser.IsSynchronizedSequenceNode(input_sequence, False)
    assert outputs.volume is not None and outputs.volume.IsA("vtkMRMLScalarVolumeNode")  # the browser's proxy
    assert {s.split(":")[0] for s in stages} == {f"item {i}/6" for i in range(1, 7)}
    np.testing.assert_array_equal(mrml.sequence_to_phases(input_sequence).array, before.array)
    assert _job_folders(tmp_path) == [] and not logic.busy


def test_logic_sequence_job_stops_at_the_first_failing_item(logic, input_sequence, tmp_path):
    calls = []

    def argv(request, input_path, out_path, *rest):
        calls.append(input_path.name)
        fail = ["--fail", "input"] if len(calls) == 2 else ["--copy", str(input_path), str(out_path)]
        return ["_selftest", "--steps", "1", *fail]

    logic.buildArgv = argv
    names = input_sequence.GetScene().GetNumberOfNodes()
    with pytest.raises(RuntimeError, match="selftest: a bad input"):
        logic.process(input_sequence, task="denoise")
    assert len(calls) == 6  # all arguments are built before the first request
    assert input_sequence.GetScene().GetNumberOfNodes() == names and _job_folders(tmp_path) == []


def _self_test(module, monkeypatch, tmp_path):
    import slicer

    from Testing.engine.slicer.test_mrml import app_like_scene

    monkeypatch.setattr(slicer, "mrmlScene", app_like_scene(), raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    test = module.MedLVMTest()
    test.delayDisplay = lambda message: None  # a Qt message box in the app
    test.setUp()
    return test


def test_in_app_volume_tasks_test_runs_headless(module, monkeypatch, tmp_path):
    """MedLVM/Testing/Python/MedLVMTasksTest.py (what Slicer's ctest runs) on the slicer-core wheel."""
    import importlib.util

    import slicer

    _self_test(module, monkeypatch, tmp_path)
    path = base.MODULE_DIR / "Testing" / "Python" / "MedLVMTasksTest.py"
    spec = importlib.util.spec_from_file_location("MedLVMTasksTest", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    test = script.MedLVMTasksTest()
    test.delayDisplay = lambda message: None
    test.test_VolumeTasks()
    assert slicer.mrmlScene.GetFirstNodeByName("MedLVM test 4D CT denoised") is not None
    assert _job_folders(tmp_path) == []


def test_in_app_self_test_skips_instead_of_installing(module, monkeypatch, tmp_path):
    import unittest

    test = _self_test(module, monkeypatch, tmp_path)
    monkeypatch.setattr(module.MedLVMLogic, "missingEngineModules", lambda self: ["torch"])
    monkeypatch.setattr(module.MedLVMLogic, "setupPythonRequirements", lambda self, askConfirmation: pytest.fail())
    monkeypatch.delenv(module.MedLVMTest.INSTALL_ENV, raising=False)
    with pytest.raises(unittest.SkipTest, match="MEDLVM_TEST_INSTALL=1"):
        test.test_MotionBaseline()


# --------------------------------------------------------------------------- the panel


def test_panel_shows_the_options_of_the_task(widget):
    import slicer

    node = widget._parameterNode
    node.inputSequence = None
    node.task = "superres"
    shown = {name for name in vars(widget.ui) if getattr(widget.ui, name).visible}
    assert {"factorSpinBox", "superresAxisComboBox", "inputVolumeSelector", "exampleCountSpinBox"} <= shown
    assert not {"observedPhasesSpinBox", "exampleSegmentationSelector", "photonsSpinBox"} & shown
    assert not widget.ui.applyButton.enabled
    node.inputVolume = _volume(slicer.mrmlScene)
    assert widget.ui.applyButton.enabled
    node.task = "denoise"
    assert widget.ui.photonsSpinBox.visible and not widget.ui.factorSpinBox.visible
    assert widget._taskInput() is node.inputVolume


def test_panel_default_input_skips_segmentation_sequences(module, widget):
    import slicer

    from Testing.engine.slicer.test_slicer_module import _small_sequence

    contours = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceNode", "contours")
    contours.SetDataNodeAtValue(slicer.vtkMRMLSegmentationNode(), "0")
    widget._parameterNode.inputSequence = None
    widget.initializeParameterNode()
    assert not widget._parameterNode.inputSequence
    ct = _small_sequence(slicer.mrmlScene)
    widget._parameterNode.inputSequence = contours
    assert not widget.ui.applyButton.enabled and "holds vtkMRMLSegmentationNode items" in widget.ui.applyButton.toolTip
    widget._parameterNode.inputSequence = None
    widget.initializeParameterNode()
    assert widget._parameterNode.inputSequence.GetID() == ct.GetID()


def test_log_panel_is_cleared_per_job_and_cuts_long_lines(module, widget, monkeypatch):
    import slicer

    from Testing.engine.slicer.test_slicer_module import _small_sequence

    widget.ui.logTextEdit.appendPlainText("a line of the previous job")
    widget._parameterNode.inputSequence = _small_sequence(slicer.mrmlScene)
    widget._parameterNode.observedPhases = 3
    monkeypatch.setattr(widget.logic, "process", lambda *args, **kwargs: None)
    widget.onApplyButton()
    assert widget.ui.logTextEdit.lines == []
    for done in range(4):
        widget.onProgress("decode", done, 3)
    widget.onLog("x" * 2000)
    widget.appendLog("Traceback line")
    lines = widget.ui.logTextEdit.lines
    assert lines[:2] == ["decode: 0/3", "decode: 3/3"]  # a line per stage and at its end, not per step
    assert len(lines[2]) == panel.LOG_MAX_LINE + len(" [...]") and lines[3] == "Traceback line"
    widget.onFinished(None, "the engine failed")
    assert lines[-1] == "Error: the engine failed" and widget.errors == ["MedLVM failed: the engine failed"]


def test_results_are_shown_with_the_sequence_toolbar(widget, monkeypatch):
    import slicer

    calls = []
    sequences = types.SimpleNamespace(showSequenceBrowser=lambda browser: calls.append(("browser", browser)))
    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(sequences=sequences), raising=False)
    monkeypatch.setattr(slicer.util, "setSliceViewerLayers", lambda **kwargs: calls.append(("views", kwargs)))
    volume = _volume(slicer.mrmlScene)
    jobs.show_outputs(types.SimpleNamespace(volume=volume))
    assert calls == [("views", {"background": volume, "fit": True})]
    calls.clear()
    sequences = types.SimpleNamespace(setToolBarVisible=lambda visible: calls.append(("toolbar", visible)),
                                      toolBar=lambda: types.SimpleNamespace(
                                          setActiveBrowserNode=lambda b: calls.append(("active", b))))
    slicer.modules.sequences = sequences
    browser = types.SimpleNamespace(GetProxyNode=lambda sequence: volume)
    jobs.show_outputs(types.SimpleNamespace(volume=volume, sequence=object(), browser=browser))
    assert calls == [("views", {"background": volume, "fit": True}), ("toolbar", True), ("active", browser)]


# --------------------------------------------------------------------------- installing and starting the engine


def _lookups(present: set, versions: dict):
    return (lambda name: object() if name in present else None), versions.get


@pytest.mark.parametrize(
    "present, versions, torch, packages",
    [
        (set(requirements.ENGINE_PACKAGES) | {"torch"}, {"torch": "2.13.0+cpu"}, None, []),
        (set(requirements.ENGINE_PACKAGES) - {"safetensors", "nrrd"}, {}, "missing",
         ["safetensors>=0.4", "pynrrd>=1.0"]),
        (set(requirements.ENGINE_PACKAGES) | {"torch"}, {"torch": "1.13.1"}, "1.13.1", []),
        (set(requirements.ENGINE_PACKAGES) | {"torch"}, {}, "unknown version", []),
    ],
)
def test_install_plan(present, versions, torch, packages):
    plan = requirements.install_plan(*_lookups(present, versions))
    assert plan.torch == torch and plan.packages == packages
    assert plan.empty == (torch is None and not packages)
    text = requirements.describe_plan(plan)
    assert ("PyTorch >=2.1" in text) == (torch == "missing")
    assert all(f"- {p} (pip)" in text for p in packages)
    assert "numpy" not in text  # what is installed (Slicer ships numpy) is never installed again
    if plan.torch_outdated:
        assert f"PyTorch {torch} is installed" in requirements.outdated_torch_message(plan)


@pytest.mark.parametrize(
    "version, minimum, ok",
    [("2.1", "2.1", True), ("2.13.0+cu126", "2.1", True), ("2.0.1", "2.1", False), ("10.0", "2.1", True),
     ("2.1.0a0", "2.1.1", False), ("", "2.1", False), ("garbage", "2.1", False)],
)
def test_version_at_least(version, minimum, ok):
    assert requirements.version_at_least(version, minimum) is ok


def test_setup_refuses_an_outdated_torch_and_installs_after_one_confirmation(module, monkeypatch):
    import slicer

    engine = module.MedLVMLogic()
    asked, installed = [], []
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text: asked.append(text) or True, raising=False)
    monkeypatch.setattr(slicer.util, "pip_install", installed.append, raising=False)
    plan = requirements.InstallPlan("1.13.1", ["tqdm>=4.60"])
    monkeypatch.setattr(requirements, "install_plan", lambda: plan)
    with pytest.raises(RuntimeError, match="PyTorch 1.13.1 is installed"):
        engine.setupPythonRequirements()
    assert asked == [] and installed == []
    plan = requirements.InstallPlan(None, ["tqdm>=4.60", "pynrrd>=1.0"])
    assert engine.setupPythonRequirements() and installed == ["tqdm>=4.60", "pynrrd>=1.0"] and len(asked) == 1
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text: False, raising=False)
    assert not engine.setupPythonRequirements() and len(installed) == 2


@pytest.mark.parametrize(
    "platform, os_name, expected",
    [
        ("win32", "nt", {"creationflags": CREATE_NO_WINDOW}),
        ("linux", "posix", {"start_new_session": True}),
        ("darwin", "posix", {"start_new_session": True}),
    ],
)
def test_worker_popen_options(monkeypatch, platform, os_name, expected):
    import subprocess

    monkeypatch.setattr("sys.platform", platform)
    monkeypatch.setattr("os.name", os_name)
    monkeypatch.delattr(subprocess, "CREATE_NO_WINDOW", raising=False)  # as on Linux; Windows has the same value
    assert popen_options() == expected
