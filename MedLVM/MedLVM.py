"""MedLVM: zero-shot Large Vision Model on CT, as a 3D Slicer scripted module.

Qt/MRML glue only. The engine (torch) runs out of process, in a `PythonSlicer -m MedLVMLib worker` process
that stays alive between requests (MedLVMLib.slicer.server); MRML conversions live in MedLVMLib.slicer.mrml. Nothing
heavy is imported when Slicer loads this module: torch is only needed inside the worker process.
"""

import contextlib
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
DEVICES = ["auto", "cuda", "cpu"]
CUSTOM_MODEL = "Model folder..."


def engineRoot() -> str:
    """The folder holding the MedLVMLib package (and the engine's Resources/): MedLVM.py's own folder in the
    installed extension, the folder above it in a source checkout."""
    here = Path(__file__).resolve()
    return str(here.parent if (here.parent / "MedLVMLib").is_dir() else here.parents[1])


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

        return install_plan().missing

    def setupPythonRequirements(self, askConfirmation: bool = True, download: bool = False) -> bool:
        """Install what the engine needs after one confirmation listing it. Returns False when the user declined.

        Installed packages are never replaced (Slicer's own stay as they are); an installed torch older than the
        minimum is an error that says how to update it. download: also what downloading a model needs.
        """
        from MedLVMLib.slicer import requirements

        plan = requirements.install_plan(download=True) if download else requirements.install_plan()
        confirm = slicer.util.confirmOkCancelDisplay if askConfirmation else None
        return requirements.install(plan, confirm, self._installTorch, slicer.util.pip_install)

    @staticmethod
    def _installTorch(requirement: str) -> bool:
        try:
            import PyTorchUtils
        except ImportError as exc:
            raise RuntimeError(_("MedLVM needs the PyTorch extension: install it from the Extensions "
                                 "Manager and restart Slicer.")) from exc
        return PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                             torchVersionRequirement=requirement) is not None

    # -- engine process

    def defaultEngineCommand(self) -> list:
        from MedLVMLib.slicer.client import engine_command, slicer_python

        return engine_command(slicer_python(getattr(getattr(slicer, "app", None), "applicationDirPath", None)))

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
        return self._runJob(blocking, timeoutS)

    def downloadModel(self, modelId: str, onProgress: Optional[Callable] = None, onLog: Optional[Callable] = None,
                      onOutput: Optional[Callable] = None, onFinished: Optional[Callable] = None,
                      blocking: bool = True, timeoutS: float = 24 * 3600.0):
        """Download registry model `modelId` in the engine worker, once the user agreed (models.download_question).
        Blocking: returns modelId or raises RuntimeError (one line); else `onFinished(modelId or None, error)`."""
        from MedLVMLib.slicer.protocol import download_argv

        if self.busy:
            raise RuntimeError(_("MedLVM is already running a job: cancel it or wait for it to finish."))
        argv = download_argv(modelId)
        self._job = dict(id=self.engine().submit(argv), dir=None, argvs=[argv], step=0, input=None, model=modelId,
                         onProgress=onProgress, onLog=onLog, onOutput=onOutput, onFinished=onFinished)
        return self._runJob(blocking, timeoutS)

    def _runJob(self, blocking: bool, timeoutS: float):
        """Follow the job just submitted: from a Qt timer (returns None), or until it ends (returns its outputs)."""
        if not blocking:
            self._startPolling()
            return None
        final = None
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
        from MedLVMLib.slicer.jobs import dispatch_event

        dispatch_event(self._job or {}, event)

    def _finishJob(self, event):
        """Load the outputs of a finished job (or describe why there are none) and remove its temp folder."""
        from MedLVMLib.slicer.jobs import job_outcome

        job, self._job = self._job, None
        self._detachJob(job)
        try:
            outputs, error = job_outcome(job, event)
        except Exception as exc:  # noqa: BLE001 - a file the engine wrote but Slicer cannot load
            outputs, error = None, _("Could not load the results: {error}").format(error=exc)
        finally:
            if job.get("dir"):
                shutil.rmtree(job["dir"], ignore_errors=True)
        self.lastJobCancelled = event.event == "cancelled"
        if job.get("onFinished"):
            job["onFinished"](outputs, error)
        return outputs, error


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
        self._registry = {}  # models.json as read when the selector was filled (its defaults)

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
        self.ui.downloadModelButton.clicked.connect(self.onDownloadButton)
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
        from MedLVMLib.slicer.panel import volume_sequences

        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputSequence and volume_sequences(slicer.mrmlScene):
            self._parameterNode.inputSequence = volume_sequences(slicer.mrmlScene)[0]

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            from MedLVMLib.slicer.panel import connect_gui_with_tag

            self._parameterNodeGuiTag = connect_gui_with_tag(self._parameterNode, self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        # the model choice is not bound by the wrapper: follow the node (a scene loaded or closed) by hand
        self._showModel(self._parameterNode.model)
        self._checkCanApply()

    # -- models

    def _populateModels(self) -> None:
        """Fill the selector: each registry model with its state (installed, or its download), then a folder."""
        from MedLVMLib.slicer import models

        shown = self._currentModel() if self._models else ""
        self._models, self._registry = models.model_choices(), models.read_registry()
        combo = self.ui.modelComboBox
        with self._modelSignalsBlocked():
            combo.clear()
            for choice in self._models:
                combo.addItem(choice.label)
                combo.setItemData(combo.count - 1, choice.tooltip, qt.Qt.ToolTipRole)
            combo.addItem(CUSTOM_MODEL)
            self._selectModel(shown or self._defaultModel())

    def _showModel(self, model: str) -> None:
        """Show `model` ("": the default the engine runs) in the combo box, without writing it back."""
        default = self._defaultModel()
        if (self._currentModel() or default) != (model or default):
            with self._modelSignalsBlocked():
                self._selectModel(model or default)
        self._updateModelInfo()

    def _defaultModel(self) -> str:
        """The model the engine runs for the chosen task when none is picked (models.json)."""
        from MedLVMLib.slicer import models

        return models.default_model(self._registry, self._parameterNode.task if self._parameterNode else "")

    @contextlib.contextmanager
    def _modelSignalsBlocked(self):
        combo, folder = self.ui.modelComboBox, self.ui.modelFolderPathLineEdit
        wereBlocked = combo.blockSignals(True), folder.blockSignals(True)
        try:
            yield
        finally:
            combo.blockSignals(wereBlocked[0])
            folder.blockSignals(wereBlocked[1])

    def _selectModel(self, model: str) -> None:
        ids = [choice.id for choice in self._models]
        if model in ids:
            self.ui.modelComboBox.currentIndex = ids.index(model)
        else:
            self.ui.modelComboBox.currentIndex = len(ids)
            self.ui.modelFolderPathLineEdit.currentPath = model

    def _currentChoice(self):
        """The MedLVMLib.slicer.models.ModelChoice selected, or None for a folder."""
        index = self.ui.modelComboBox.currentIndex
        return self._models[index] if 0 <= index < len(self._models) else None

    def _currentModel(self) -> str:
        choice = self._currentChoice()
        return choice.id if choice is not None else self.ui.modelFolderPathLineEdit.currentPath

    def onModelChanged(self, *args) -> None:
        if self._parameterNode:
            self._parameterNode.model = self._currentModel()
        self._updateModelInfo()

    def _updateModelInfo(self) -> None:
        from MedLVMLib.slicer.models import model_info

        choice = self._currentChoice()
        self.ui.modelFolderPathLineEdit.setVisible(choice is None)
        self.ui.downloadModelButton.setVisible(choice is not None and choice.downloadable)
        self.ui.modelMemoryLabel.text = model_info(choice)

    def onDownloadButton(self) -> None:
        """Ask once (what, from where, how large, stored where, packages installed first), then download the
        selected model in the engine worker, with progress and Cancel."""
        from MedLVMLib.slicer.models import download_question

        choice = self._currentChoice()
        if choice is None or not choice.downloadable or self.logic.busy:
            return
        with slicer.util.tryWithErrorDisplay(_("MedLVM could not download the model."), waitCursor=True):
            question, needsHub = download_question(choice)
            if not slicer.util.confirmOkCancelDisplay(question):
                self.ui.statusLabel.text = _("Download declined: {model} is not installed.").format(model=choice.id)
                return
            if not self.logic.setupPythonRequirements(askConfirmation=False, download=needsHub):
                self.ui.statusLabel.text = _("Missing Python packages were not installed.")
                return
            self._startJobDisplay(_("Downloading {model}...").format(model=choice.id))
            self.logic.downloadModel(choice.id, onProgress=self.onProgress, onLog=self.onLog, onOutput=self.appendLog,
                                     onFinished=self.onDownloadFinished, blocking=False)
            self._setRunning(True)

    def onDownloadFinished(self, modelId, errorMessage) -> None:
        from MedLVMLib.slicer.models import download_status

        status = download_status(self._currentModel(), errorMessage, self.logic.lastJobCancelled)
        self._setRunning(False)
        self._populateModels()  # the state of every model, as the engine left it
        self._updateModelInfo()
        self.ui.statusLabel.text = status
        self.appendLog(status)
        if errorMessage and not self.logic.lastJobCancelled:
            slicer.util.errorDisplay(status)

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
        from MedLVMLib.slicer import jobs, panel, protocol

        node = self._parameterNode
        for name, visible in panel.option_visibility(node.task if node else "").items():
            if getattr(self.ui, name, None) is not None:
                getattr(self.ui, name).setVisible(visible)
        problem = _("Select the inputs of the task")
        if node:
            request = protocol.TaskRequest(task=node.task, observed=node.observedPhases, from_phase=node.fromPhase)
            problem = jobs.input_problem(self._taskInput(), request, node.exampleSegmentation)
        busy = self.logic is not None and self.logic.busy
        self.ui.applyButton.enabled = not problem and not busy
        self.ui.applyButton.toolTip = problem or _("Run MedLVM")

    def _setRunning(self, running: bool) -> None:
        self.ui.cancelButton.enabled = running
        self.ui.downloadModelButton.enabled = not running
        self.ui.progressBar.setVisible(running)
        if running:
            self.ui.progressBar.setRange(0, 0)
        self._checkCanApply()

    def onApplyButton(self) -> None:
        choice = self._currentChoice()
        if choice is not None and choice.downloadable:  # asks first; Apply runs the task once it is installed
            self.onDownloadButton()
            return
        with slicer.util.tryWithErrorDisplay(_("MedLVM could not start."), waitCursor=True):
            if not self.logic.setupPythonRequirements(askConfirmation=True):
                self.ui.statusLabel.text = _("Missing Python packages were not installed.")
                return
            self._startJobDisplay(_("Starting the engine..."))
            self.logic.process(self._taskInput(), **self._taskOptions(), onProgress=self.onProgress, onLog=self.onLog,
                               onOutput=self.appendLog, onFinished=self.onFinished, blocking=False)
            self._setRunning(True)

    def _startJobDisplay(self, status: str) -> None:
        self._warnings, self._lastStage = [], None
        self.ui.logTextEdit.clear()
        self.ui.statusLabel.text = status

    def onCancelButton(self) -> None:
        self.logic.cancel()

    def appendLog(self, line: str) -> None:
        """One line in the log panel (long lines cut; the panel keeps its last lines only, see the .ui)."""
        from MedLVMLib.slicer.panel import log_line

        self.ui.logTextEdit.appendPlainText(log_line(line))

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
        from MedLVMLib.slicer import jobs

        self._setRunning(False)
        if errorMessage:
            self.ui.statusLabel.text = errorMessage
            self.appendLog(_("Error: {error}").format(error=errorMessage))
            if not self.logic.lastJobCancelled:
                slicer.util.errorDisplay(_("MedLVM failed: {error}").format(error=errorMessage))
            return
        self.ui.statusLabel.text = _("Done: {outputs}").format(outputs=jobs.describe_outputs(outputs))
        self.appendLog(self.ui.statusLabel.text)
        jobs.show_outputs(outputs)
        warnings = getattr(self, "_warnings", [])
        if warnings:
            self.ui.statusLabel.text += " " + _("with {n} warning(s): review before use").format(n=len(warnings))
            slicer.util.warningDisplay("\n\n".join(warnings), windowTitle=_("MedLVM: check this result"))


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
