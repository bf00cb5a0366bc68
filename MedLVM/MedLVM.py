"""MedLVM: zero-shot Large Vision Model on CT, as a 3D Slicer scripted module.

Qt/MRML glue only. The engine (torch) runs out of process, in a `PythonSlicer -m MedLVMLib worker` process
that stays alive between requests (MedLVMLib.slicer.server); MRML conversions live in MedLVMLib.slicer.mrml. Nothing
heavy is imported when Slicer loads this module: torch is only needed inside the worker process.
"""

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Callable, Optional

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLSequenceNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

TASKS = ["motion", "segment", "denoise", "superres"]
AXES = ["coronal", "sagittal", "axial", "multi"]
SUPERRES_AXES = ["z", "xy"]
LOG_MAX_LINE = 500  # characters of one line in the log panel (its line count is capped in the .ui)
TASK_WIDGETS = {  # the options each task shows; the others are hidden
    "motion": ["observedPhases", "phasesToPredict", "samples"],
    "segment": ["exampleSegmentation", "fromPhase"],
    "denoise": ["inputVolume", "photons", "exampleCount"],
    "superres": ["inputVolume", "factor", "superresAxis", "exampleCount"],
}
DEVICES = ["auto", "cuda", "cpu"]
CUSTOM_MODEL = "Model folder..."


def resourcesDir() -> Path:
    """The engine's Resources/ (models.json, bundled models), next to the MedLVMLib package."""
    return Path(engineRoot()) / "Resources"


def _isInstalledLayout() -> bool:
    # installed: MedLVM.py, MedLVMLib/ and Resources/ share one folder; source tree: MedLVMLib is one level up
    return (Path(__file__).resolve().parent / "MedLVMLib").is_dir()


def engineRoot() -> str:
    """The folder holding the MedLVMLib package (and the engine's Resources/)."""
    here = Path(__file__).resolve()
    return str(here.parent if _isInstalledLayout() else here.parents[1])


def _readRegistryFile(path: Optional[Path]) -> dict:
    try:
        return dict(json.loads(Path(path or resourcesDir() / "models.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return {}


def readModelRegistry(path: Optional[Path] = None) -> list:
    """Entries of Resources/models.json (id, description, memory_gb, ...); [] when it is missing."""
    return list(_readRegistryFile(path).get("models", []))


def readDefaultModel(path: Optional[Path] = None) -> str:
    """The id the engine runs when no model is chosen (models.json "default"); "" when unknown."""
    return str(_readRegistryFile(path).get("default", ""))


def connectGuiWithTag(parameterNode, gui):
    """parameterNode.connectGui(gui), returning the tag that disconnects it, also on Slicer 5.8.

    5.8's wrapper returns no tag (fixed in 5.10 by Slicer commit b5a65a49a0), so disconnectGui(None) did nothing
    and the connectors of every earlier connection kept writing into the GUI. Its tag is the wrapper's
    counter before the call.
    """
    nextTag = getattr(parameterNode, "_nextParameterGUIsTag", None)
    tag = parameterNode.connectGui(gui)
    return nextTag if tag is None else tag


#
# MedLVM
#


class MedLVM(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MedLVM")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Radiotherapy"),
                                  translate("qSlicerAbstractCoreModule", "Sequences")]
        self.parent.dependencies = ["Sequences", "Segmentations"]
        self.parent.contributors = ["MedLVM developers"]
        self.parent.helpText = _(
            "Zero-shot Large Vision Model on CT: predicts the next breathing phases of a 4D CT, carries a "
            "segmentation to every phase, denoises or super-resolves a CT (a volume, or each item of a sequence). "
            "Pick the input and the task, press Apply; results appear as new nodes, sequences with their own "
            "browser synchronised with the input.")
        self.parent.acknowledgementText = _(
            "Builds on the Large Vision Model of Bai et al. (arXiv 2312.00785), 3D Slicer and the PyTorch "
            "extension.")


#
# Parameter node
#


@parameterNodeWrapper
class MedLVMParameterNode:
    """The panel's state, saved with the scene."""

    inputSequence: vtkMRMLSequenceNode
    task: Annotated[str, Choice(TASKS)] = "motion"
    exampleSegmentation: vtkMRMLSegmentationNode  # segment: drawn on phase `fromPhase` of the input
    fromPhase: Annotated[int, WithinRange(0, 99)] = 0
    observedPhases: Annotated[int, WithinRange(1, 99)] = 5
    phasesToPredict: Annotated[int, WithinRange(0, 99)] = 0  # 0: the rest of the cycle
    axis: Annotated[str, Choice(AXES)] = "coronal"
    device: Annotated[str, Choice(DEVICES)] = "auto"
    samples: Annotated[int, WithinRange(1, 64)] = 1
    seed: Annotated[int, WithinRange(0, 2**31 - 1)] = 0
    model: str = ""  # "" = bundled default, else a registry id or a folder
    inputVolume: vtkMRMLScalarVolumeNode  # denoise / superres: one volume; none: each item of inputSequence
    factor: Annotated[int, WithinRange(2, 8)] = 2  # superres
    superresAxis: Annotated[str, Choice(SUPERRES_AXES)] = "z"  # superres: z thinner slices, xy finer pixels
    photons: Annotated[int, WithinRange(0, 10**9)] = 0  # denoise: library dose level; 0: nearest the input's noise
    exampleCount: Annotated[int, WithinRange(0, 16)] = 0  # denoise / superres example pairs; 0: engine default


#
# Logic
#


def _ensureEngineImportable() -> None:
    """In a source checkout MedLVMLib sits beside the MedLVM/ folder: make it importable."""
    import sys

    root = engineRoot()
    if root not in sys.path:
        sys.path.insert(0, root)


class MedLVMLogic(ScriptedLoadableModuleLogic):
    """Runs MedLVM tasks on MRML nodes; usable without the GUI (see `process`).

    One engine worker process is kept alive between requests (so a large model stays loaded); a worker
    that crashed is reported through the job's error message and started again on the next request.
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        _ensureEngineImportable()
        self.engineCommand: Optional[list] = None  # None: PythonSlicer -m MedLVMLib worker
        self.engineEnvironment: Optional[dict] = None  # extra environment variables for the worker
        self._engine = None
        self._job: Optional[dict] = None
        self._timer = None
        self.lastJobCancelled = False  # how the last job ended: cancelled (by the user or a scene close) or not

    def getParameterNode(self):
        return MedLVMParameterNode(super().getParameterNode())

    # -- dependencies

    def missingEngineModules(self) -> list:
        """Pip requirements (and "torch") the engine lacks; an outdated torch counts as missing."""
        from MedLVMLib.slicer.requirements import install_plan

        plan = install_plan()
        return (["torch"] if plan.torch else []) + plan.packages

    def setupPythonRequirements(self, askConfirmation: bool = True) -> bool:
        """Install what the engine needs after one confirmation listing it. Returns False when the user declined.

        Installed packages are never replaced (Slicer's own stay as they are); an installed torch older than the
        minimum is an error that says how to update it.
        """
        from MedLVMLib.slicer.requirements import describe_plan, install_plan, outdated_torch_message

        plan = install_plan()
        if plan.torch_outdated:
            raise RuntimeError(outdated_torch_message(plan))
        if plan.empty:
            return True
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(describe_plan(plan)):
            return False
        if plan.torch:
            try:
                import PyTorchUtils
            except ImportError as exc:
                raise RuntimeError(_("MedLVM needs the PyTorch extension: install it from the Extensions "
                                     "Manager and restart Slicer.")) from exc
            if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                             torchVersionRequirement=plan.torch_requirement) is None:
                return False
        for requirement in plan.packages:
            slicer.util.pip_install(requirement)
        return True

    # -- engine process

    def defaultEngineCommand(self) -> list:
        from MedLVMLib.slicer.client import engine_command

        pythonSlicer = shutil.which("PythonSlicer")
        if pythonSlicer is None and hasattr(slicer, "app"):
            name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
            candidate = Path(slicer.app.applicationDirPath) / name
            pythonSlicer = str(candidate) if candidate.is_file() else None
        return engine_command(pythonSlicer) if pythonSlicer else engine_command()

    def engine(self):
        if self._engine is None:
            from MedLVMLib.slicer.client import EngineClient

            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (engineRoot(), env.get("PYTHONPATH", "")) if p)
            env.update(self.engineEnvironment or {})
            self._engine = EngineClient(self.engineCommand or self.defaultEngineCommand(), env=env)
        return self._engine

    def shutdownEngine(self) -> None:
        if self._engine is not None:
            self._engine.close(timeout=2.0)
            self._engine = None

    # -- jobs

    @property
    def busy(self) -> bool:
        return self._job is not None

    def process(self, inputSequence, task: str = "motion", observedPhases: int = 5, phasesToPredict: int = 0,
                axis: str = "", model: str = "", device: str = "auto", samples: int = 1, seed: int = 0,
                method: str = "medlvm", exampleSegmentation=None, fromPhase: int = 0, factor: int = 2,
                superresAxis: str = "z", photons: float = 0.0, exampleCount: int = 0,
                onProgress: Optional[Callable] = None, onLog: Optional[Callable] = None,
                onOutput: Optional[Callable] = None, onFinished: Optional[Callable] = None, blocking: bool = True,
                timeoutS: float = 3600.0):
        """Run a task on `inputSequence`, a volume sequence node (denoise / superres: also a scalar volume node);
        the inputs are never modified.

        task "motion": predict the phases after the first `observedPhases`; "segment": carry `exampleSegmentation`,
        drawn on item `fromPhase` of the input, to every phase; "denoise" (dose level `photons`, 0: automatic) and
        "superres" (`factor`, `superresAxis` z or xy): a new volume, or for a sequence one per item.
        Blocking: returns the new nodes (MotionOutputs, SegmentOutputs or MedLVMLib.slicer.jobs.VolumeOutputs) or
        raises RuntimeError. Non-blocking: returns at once; `onFinished(outputs, errorMessage)` is called from a Qt
        timer. onProgress(stage, done, total), onLog(message) and onOutput(line printed by the engine) report what
        the engine is doing.
        """
        from MedLVMLib.slicer import jobs, protocol

        if self.busy:
            raise RuntimeError(_("MedLVM is already running a job: cancel it or wait for it to finish."))
        request = protocol.TaskRequest(task=task, observed=observedPhases, future=phasesToPredict, axis=axis,
                                       model=model, device=device, samples=samples, seed=seed, method=method,
                                       from_phase=fromPhase, factor=factor, superres_axis=superresAxis,
                                       photons=photons, n_examples=exampleCount)
        jobs.check_request(inputSequence, request, exampleSegmentation)
        jobDir = Path(tempfile.mkdtemp(prefix="MedLVM-"))
        try:
            steps = jobs.prepare_steps(jobDir, inputSequence, request, exampleSegmentation)
            argvs = [self.buildArgv(request, *step[:4]) for step in steps]
            requestId = self.engine().submit(argvs[0])
        except Exception:
            shutil.rmtree(jobDir, ignore_errors=True)
            raise
        self._job = dict(id=requestId, dir=jobDir, steps=steps, argvs=argvs, step=0, input=inputSequence,
                         request=request, onProgress=onProgress, onLog=onLog, onOutput=onOutput, onFinished=onFinished)
        self._watchScene(inputSequence.GetScene())
        if not blocking:
            self._startPolling()
            return None
        final = self._advance(self.engine().wait(requestId, timeout=timeoutS, on_event=self._onEvent))
        while final is None:
            final = self._advance(self.engine().wait(self._job["id"], timeout=timeoutS, on_event=self._onEvent))
        outputs, error = self._finishJob(final)
        if error:
            raise RuntimeError(error)
        return outputs

    def _advance(self, event):
        """After a request of the job ended: submit its next one (the next item of a sequence) and return None, or
        return the event the job ends with."""
        job = self._job
        if job is None or event.event != "done" or event.returncode != 0 or job["step"] + 1 >= len(job["argvs"]):
            return event
        job["step"] += 1
        try:
            job["id"] = self.engine().submit(job["argvs"][job["step"]])
        except Exception as exc:  # noqa: BLE001 - the engine could not take the next item: the job fails
            from MedLVMLib.slicer.protocol import Event

            return Event("error", id=job["id"], message=str(exc))
        return None

    def buildArgv(self, request, inputPath: Path, outPath: Path, labelsPath=None, namesPath=None) -> list:
        from MedLVMLib.slicer.protocol import task_argv

        return task_argv(request, str(inputPath), str(outPath), labelsPath and str(labelsPath),
                         namesPath and str(namesPath))

    def cancel(self, reason: Optional[str] = None) -> None:
        """End the running job and the worker process tree; the next job starts a fresh worker.

        reason: the message the job ends with (default "Cancelled.").
        """
        if self._engine is not None:
            self._engine.cancel(hard=True)
        if self._job is not None:
            from MedLVMLib.slicer.protocol import Event

            self._job["cancelReason"] = reason
            self._finishJob(Event("cancelled", id=self._job["id"]))

    def _watchScene(self, scene) -> None:
        """Cancel the job when its scene closes: its results would have no scene to go to."""
        if scene is not None:
            self._job["sceneObservation"] = (scene, scene.AddObserver(scene.StartCloseEvent, self._onSceneStartClose))

    def _onSceneStartClose(self, caller=None, event=None) -> None:
        if self.busy:
            self.cancel(reason=_("Cancelled: the scene was closed."))

    def _detachJob(self, job: dict) -> None:
        """Stop the poll timer and the scene observer of a job that ended."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        scene, tag = job.get("sceneObservation", (None, None))
        if scene is not None:
            scene.RemoveObserver(tag)

    def _startPolling(self) -> None:
        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._poll)
        self._timer.start()

    def _poll(self) -> None:
        if self._job is None or self._engine is None:
            return
        for event in self._engine.poll():
            self._onEvent(event)
            if event.final and self._job is not None and event.id == self._job["id"]:
                final = self._advance(event)
                if final is not None:
                    self._finishJob(final)
                    return

    def _onEvent(self, event) -> None:
        job = self._job or {}
        if event.event == "stderr":
            logging.info("MedLVM engine: %s", event.message)
            if job.get("onOutput") and event.message.strip():
                job["onOutput"](event.message)
        elif event.event == "progress" and job.get("onProgress"):
            steps = len(job["argvs"])
            stage = f"item {job['step'] + 1}/{steps}: {event.stage}" if steps > 1 else event.stage
            job["onProgress"](stage, event.done, event.total)
        elif event.event == "log" and event.message:
            logging.info("MedLVM: %s", event.message)
            if job.get("onLog"):
                job["onLog"](event.message)

    @staticmethod
    def _importOutputs(job):
        from MedLVMLib.slicer import jobs

        return jobs.import_outputs(job["steps"], job["input"], job["request"])

    def _finishJob(self, event):
        """Load the outputs of a finished job (or describe why there are none) and remove its temp folder."""
        job, self._job = self._job, None
        self._detachJob(job)
        try:
            outputs, error = self._outcome(job, event)
        except Exception as exc:  # noqa: BLE001 - a file the engine wrote but Slicer cannot load
            outputs, error = None, _("Could not load the results: {error}").format(error=exc)
        finally:
            shutil.rmtree(job["dir"], ignore_errors=True)
        self.lastJobCancelled = event.event == "cancelled"
        if job.get("onFinished"):
            job["onFinished"](outputs, error)
        return outputs, error

    def _outcome(self, job: dict, event):
        """(outputs, None) for a job that succeeded, else (None, the message to show)."""
        if event.event == "cancelled":
            return None, job.get("cancelReason") or _("Cancelled.")
        if event.event != "done" or event.returncode != 0:
            if event.traceback:
                logging.error("MedLVM engine traceback:\n%s", event.traceback)
            return None, event.message or _("The engine failed (exit status {code}).").format(code=event.returncode)
        scene = job["input"].GetScene()
        if scene is None or not scene.IsNodePresent(job["input"]):
            return None, _("The input left the scene while MedLVM ran (was the scene closed?); "
                           "the results were discarded.")
        return self._importOutputs(job), None


#
# Widget
#


class MedLVMWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: binds the .ui to MedLVMParameterNode and drives MedLVMLogic asynchronously."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._models = []
        self._defaultModel = ""

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedLVM.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedLVMLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self._populateModels()
        self.ui.modelComboBox.currentIndexChanged.connect(self.onModelChanged)
        self.ui.modelFolderPathLineEdit.currentPathChanged.connect(self.onModelChanged)
        self.ui.applyButton.clicked.connect(self.onApplyButton)
        self.ui.cancelButton.clicked.connect(self.onCancelButton)
        self._setRunning(False)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()
        if self.logic is not None:
            self.logic.cancel()
            self.logic.shutdownEngine()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputSequence:
            sequences = slicer.mrmlScene.GetNodesByClass("vtkMRMLSequenceNode")
            volumeSequences = [sequences.GetItemAsObject(i) for i in range(sequences.GetNumberOfItems())
                               if sequences.GetItemAsObject(i).GetDataNodeClassName() == "vtkMRMLScalarVolumeNode"]
            if volumeSequences:  # not a segmentation or transform sequence
                self._parameterNode.inputSequence = volumeSequences[0]

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = connectGuiWithTag(self._parameterNode, self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        # the model choice is not bound by the wrapper: follow the node (a scene loaded or closed) by hand
        self._showModel(self._parameterNode.model)
        self._checkCanApply()

    # -- models

    def _populateModels(self) -> None:
        self._models = readModelRegistry()
        self._defaultModel = readDefaultModel()
        self.ui.modelComboBox.clear()
        for entry in self._models:
            self.ui.modelComboBox.addItem(entry.get("id", "?"))
            self.ui.modelComboBox.setItemData(self.ui.modelComboBox.count - 1, entry.get("description", ""),
                                              qt.Qt.ToolTipRole)
        self.ui.modelComboBox.addItem(CUSTOM_MODEL)

    def _showModel(self, model: str) -> None:
        """Show `model` ("": the default the engine runs) in the combo box, without writing it back."""
        if (self._currentModel() or self._defaultModel) != (model or self._defaultModel):
            combo, folder = self.ui.modelComboBox, self.ui.modelFolderPathLineEdit
            wereBlocked = combo.blockSignals(True), folder.blockSignals(True)
            try:
                self._selectModel(model or self._defaultModel)
            finally:
                combo.blockSignals(wereBlocked[0])
                folder.blockSignals(wereBlocked[1])
        self._updateModelInfo()

    def _selectModel(self, model: str) -> None:
        ids = [entry.get("id") for entry in self._models]
        if model in ids:
            self.ui.modelComboBox.currentIndex = ids.index(model)
        else:
            self.ui.modelComboBox.currentIndex = len(ids)
            self.ui.modelFolderPathLineEdit.currentPath = model

    def _currentModel(self) -> str:
        index = self.ui.modelComboBox.currentIndex
        if 0 <= index < len(self._models):
            return self._models[index].get("id", "")
        return self.ui.modelFolderPathLineEdit.currentPath

    def onModelChanged(self, *args) -> None:
        if self._parameterNode:
            self._parameterNode.model = self._currentModel()
        self._updateModelInfo()

    def _updateModelInfo(self) -> None:
        index = self.ui.modelComboBox.currentIndex
        custom = not (0 <= index < len(self._models))
        self.ui.modelFolderPathLineEdit.setVisible(custom)
        if custom:
            self.ui.modelMemoryLabel.text = _("Memory: depends on the model in the folder (7B: ~16 GB GPU).")
            return
        entry = self._models[index]
        self.ui.modelMemoryLabel.text = _("Memory: about {gb:g} GB; recommended device: {device}").format(
            gb=float(entry.get("memory_gb", 0)), device=entry.get("recommended_device", "cpu"))

    # -- apply / cancel

    def _taskInput(self):
        """What the task runs on: denoise / superres take the chosen volume, else (or without one) the sequence."""
        node = self._parameterNode
        if node.task in ("denoise", "superres") and node.inputVolume:
            return node.inputVolume
        return node.inputSequence

    def _taskOptions(self) -> dict:
        node = self._parameterNode
        names = ("task", "observedPhases", "phasesToPredict", "axis", "model", "device", "samples", "seed",
                 "exampleSegmentation", "fromPhase", "factor", "superresAxis", "photons", "exampleCount")
        return {name: getattr(node, name) for name in names}

    def _checkCanApply(self, caller=None, event=None) -> None:
        from MedLVMLib.slicer import jobs, protocol

        node = self._parameterNode
        shown = TASK_WIDGETS.get(node.task, []) if node else []
        for option in {name for names in TASK_WIDGETS.values() for name in names}:
            for suffix in ("Label", "SpinBox", "Selector", "ComboBox"):
                widget = getattr(self.ui, option + suffix, None)
                if widget is not None:
                    widget.setVisible(option in shown)
        problem = _("Select the inputs of the task")
        if node:
            request = protocol.TaskRequest(task=node.task, observed=node.observedPhases, from_phase=node.fromPhase)
            problem = jobs.input_problem(self._taskInput(), request, node.exampleSegmentation)
        busy = self.logic is not None and self.logic.busy
        self.ui.applyButton.enabled = not problem and not busy
        self.ui.applyButton.toolTip = problem or _("Run MedLVM")

    def _setRunning(self, running: bool) -> None:
        self.ui.cancelButton.enabled = running
        self.ui.progressBar.setVisible(running)
        if running:
            self.ui.progressBar.setRange(0, 0)
        self._checkCanApply()

    def onApplyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("MedLVM could not start."), waitCursor=True):
            if not self.logic.setupPythonRequirements(askConfirmation=True):
                self.ui.statusLabel.text = _("Missing Python packages were not installed.")
                return
            self._warnings, self._lastStage = [], None
            self.ui.logTextEdit.clear()
            self.ui.statusLabel.text = _("Starting the engine...")
            self.logic.process(self._taskInput(), **self._taskOptions(), onProgress=self.onProgress, onLog=self.onLog,
                               onOutput=self.appendLog, onFinished=self.onFinished, blocking=False)
            self._setRunning(True)

    def onCancelButton(self) -> None:
        self.logic.cancel()

    def appendLog(self, line: str) -> None:
        """One line in the log panel (long lines cut; the panel keeps its last lines only, see the .ui)."""
        line = str(line).rstrip()
        self.ui.logTextEdit.appendPlainText(line if len(line) <= LOG_MAX_LINE else line[:LOG_MAX_LINE] + " [...]")

    def onProgress(self, stage: str, done: int, total) -> None:
        if total:
            self.ui.progressBar.setRange(0, int(total))
            self.ui.progressBar.setValue(int(done))
        else:
            self.ui.progressBar.setRange(0, 0)
        self.ui.statusLabel.text = f"{stage}: {done}/{total}" if total else stage
        if stage != getattr(self, "_lastStage", None) or (total and done >= total):  # not every step
            self._lastStage = stage
            self.appendLog(self.ui.statusLabel.text)

    def onLog(self, message: str) -> None:
        self.ui.statusLabel.text = message
        self.appendLog(message)
        if message.startswith("Warning:"):  # e.g. the motion check: the prediction looks implausible
            self._warnings = getattr(self, "_warnings", []) + [message]

    def onFinished(self, outputs, errorMessage) -> None:
        from MedLVMLib.slicer.jobs import describe_outputs

        self._setRunning(False)
        if errorMessage:
            self.ui.statusLabel.text = errorMessage
            self.appendLog(_("Error: {error}").format(error=errorMessage))
            if not self.logic.lastJobCancelled:
                slicer.util.errorDisplay(_("MedLVM failed: {error}").format(error=errorMessage))
            return
        self.ui.statusLabel.text = _("Done: {outputs}").format(outputs=describe_outputs(outputs))
        self.appendLog(self.ui.statusLabel.text)
        self._showOutputs(outputs)
        warnings = getattr(self, "_warnings", [])
        if warnings:
            self.ui.statusLabel.text += " " + _("with {n} warning(s): review before use").format(n=len(warnings))
            slicer.util.warningDisplay("\n\n".join(warnings), windowTitle=_("MedLVM: check this result"))

    def _showOutputs(self, outputs) -> None:
        """The result in the slice views; a sequence result's browser in the (shown) sequence toolbar."""
        browser = getattr(outputs, "browser", None)
        shown = browser.GetProxyNode(outputs.sequence) if browser is not None else getattr(outputs, "volume", None)
        if shown is not None and shown.IsA("vtkMRMLScalarVolumeNode"):
            slicer.util.setSliceViewerLayers(background=shown, fit=True)
        sequences = getattr(slicer.modules, "sequences", None)
        if browser is None or sequences is None:
            return
        if hasattr(sequences, "showSequenceBrowser"):
            sequences.showSequenceBrowser(browser)  # shows the toolbar with this browser active
        else:
            sequences.setToolBarVisible(True)
            sequences.toolBar().setActiveBrowserNode(browser)


#
# Test
#


class MedLVMTest(ScriptedLoadableModuleTest):
    """Runs the real logic and engine on a small synthetic 4D CT with the bundled small model (well under a minute
    on a laptop CPU). Packages the engine lacks are installed only when MEDLVM_TEST_INSTALL=1 (else skipped).
    Denoise and super-resolution: Testing/Python/MedLVMTasksTest.py."""

    INSTALL_ENV = "MEDLVM_TEST_INSTALL"

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        for test in (self.test_MotionBaseline, self.test_MotionModel):
            self.setUp()
            test()

    def _logic(self):
        logic = MedLVMLogic()
        missing = logic.missingEngineModules()
        if missing and os.environ.get(self.INSTALL_ENV) != "1":
            self.skipTest(f"the engine needs {', '.join(missing)}; set {self.INSTALL_ENV}=1 to let the test install "
                          "them, or install them from the module's Apply button")
        self.assertTrue(logic.setupPythonRequirements(askConfirmation=False))
        return logic

    def _makeInput(self, nPhases: int = 6):
        """A breathing phantom: a dense sphere moving along the superior-inferior axis, oblique grid."""
        from MedLVMLib.slicer import mrml, testdata

        phases = testdata.breathing_sphere(nPhases)
        return mrml.phases_to_sequence(slicer.mrmlScene, phases, "MedLVM test 4D CT"), phases.geometry

    def _checkOutputs(self, outputs, inputSequence, geometry, expectedValues):
        from MedLVMLib.slicer import mrml

        sequence = outputs.sequence
        self.assertEqual(sequence.GetNumberOfDataNodes(), len(expectedValues))
        self.assertEqual([float(sequence.GetNthIndexValue(i)) for i in range(len(expectedValues))], expectedValues)
        self.assertEqual(sequence.GetIndexUnit(), "%")
        item = sequence.GetNthDataNode(0)
        self.assertTrue(mrml.node_geometry(item).is_close(geometry))
        self.assertEqual(mrml.volume_array(item).shape, (16, 24, 24))
        self.assertTrue(outputs.browser.IsSynchronizedSequenceNode(inputSequence, False))
        self.assertEqual(inputSequence.GetNumberOfDataNodes(), 6)

    def test_MotionBaseline(self):
        self.delayDisplay("MedLVM: copy-last baseline through the engine process")
        logic = self._logic()
        inputSequence, geometry = self._makeInput()
        try:
            outputs = logic.process(inputSequence, observedPhases=3, phasesToPredict=3, method="copy-last")
        finally:
            logic.shutdownEngine()
        self._checkOutputs(outputs, inputSequence, geometry, [30.0, 40.0, 50.0])

    def test_MotionModel(self):
        self.delayDisplay("MedLVM: motion prediction with the bundled small model")
        logic = self._logic()
        inputSequence, geometry = self._makeInput()
        progress = []
        try:
            outputs = logic.process(inputSequence, observedPhases=4, phasesToPredict=2, device="cpu",
                                    onProgress=lambda stage, done, total: progress.append(stage))
        finally:
            logic.shutdownEngine()
        self._checkOutputs(outputs, inputSequence, geometry, [40.0, 50.0])
        self.assertTrue(progress)
        self.delayDisplay("MedLVM test passed")
