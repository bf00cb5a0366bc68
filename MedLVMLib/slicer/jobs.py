"""One job of the Slicer module, between the panel and the engine: check a request against its input nodes, write
the files the engine reads, and load what it wrote back as new nodes.

Motion and segment send a whole volume sequence in one engine request. Denoise and super-resolution take one
scalar volume: a volume is one request, a sequence one request per item, and the results are gathered into a new
sequence on the input's index values, browsed together with the input.

`slicer` (and the modules that import it) is imported inside the functions, so that importing this module costs
nothing in the Slicer module's start-up.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import NamedTuple, Optional

from MedLVMLib.errors import InputError
from MedLVMLib.slicer.protocol import VOLUME_TASKS, TaskRequest, segments_file

SCALAR_VOLUME = "vtkMRMLScalarVolumeNode"


class JobStep(NamedTuple):
    """The files of one engine request; `index` is the input sequence's index value it came from (or None)."""

    input_path: Path
    out_path: Path
    labels_path: Optional[Path] = None
    names_path: Optional[Path] = None
    index: Optional[str] = None


class VolumeOutputs(NamedTuple):
    """Nodes added for a denoise / super-resolution job: a volume, or a sequence (and its browser) for a sequence."""

    volume: Optional[object]
    sequence: Optional[object] = None
    browser: Optional[object] = None


def sequence_problem(sequence_node) -> str:
    """Why `sequence_node` cannot be a task's input ("" when it can): it must hold scalar volumes."""
    if sequence_node is None:
        return "Select an input sequence."
    if sequence_node.GetNumberOfDataNodes() == 0:
        return f"The sequence '{sequence_node.GetName()}' is empty."
    kind = sequence_node.GetDataNodeClassName()
    if kind != SCALAR_VOLUME:
        return (f"The sequence '{sequence_node.GetName()}' holds {kind or 'unknown'} items: select a sequence of "
                "scalar volumes (a 4D CT), not a segmentation, transform or label map sequence.")
    return ""


def input_problem(input_node, request: TaskRequest, example_segmentation=None) -> str:
    """Why the job cannot run on these inputs ("" when it can); raises MedLVMError for a task it cannot run."""
    request.output_name  # noqa: B018 - raises for an unknown task
    if request.task in VOLUME_TASKS and input_node is not None and input_node.IsA(SCALAR_VOLUME):
        if input_node.IsA("vtkMRMLLabelMapVolumeNode"):
            return f"'{input_node.GetName()}' is a label map: select a CT volume."
        return ""
    if input_node is not None and not input_node.IsA("vtkMRMLSequenceNode"):
        return f"'{input_node.GetName()}' is not a volume sequence."
    problem = sequence_problem(input_node)
    if problem:
        return problem
    n_items = input_node.GetNumberOfDataNodes()
    if request.task == "motion" and n_items < request.observed:
        return f"The input sequence needs at least {request.observed} phases."
    if request.task == "segment" and (example_segmentation is None or not 0 <= request.from_phase < n_items):
        return "Select a segmentation drawn on one phase of the input sequence."
    return ""


def check_request(input_node, request: TaskRequest, example_segmentation=None) -> None:
    """Raise InputError naming the problem when the job cannot run (before anything is written)."""
    problem = input_problem(input_node, request, example_segmentation)
    if problem:
        raise InputError(problem)


def prepare_steps(job_dir: Path, input_node, request: TaskRequest, example_segmentation=None) -> list[JobStep]:
    """Write the inputs into `job_dir`; returns one JobStep per engine request."""
    from MedLVMLib.slicer import mrml

    job_dir = Path(job_dir)
    if request.task in VOLUME_TASKS:
        return _volume_steps(job_dir, input_node, request)
    input_path = mrml.write_sequence_file(input_node, job_dir / "input.seq.nrrd")
    if request.task != "segment":
        return [JobStep(input_path, job_dir / request.output_name)]
    from MedLVMLib.slicer import segmentations

    labels_path, names_path = job_dir / "example_labels.nrrd", job_dir / "names.json"
    names = segmentations.write_label_file(input_node.GetScene(), example_segmentation, input_node,
                                           request.from_phase, labels_path)
    names_path.write_text(json.dumps({name: label for label, name in names.items()}), encoding="utf-8")
    return [JobStep(input_path, job_dir / request.output_name, labels_path, names_path)]


def _volume_steps(job_dir: Path, input_node, request: TaskRequest) -> list[JobStep]:
    stem, suffix = request.output_name.split(".", 1)
    if input_node.IsA(SCALAR_VOLUME):
        return [JobStep(write_volume_file(input_node, job_dir / "input.nrrd"), job_dir / request.output_name)]
    steps = []
    for i in range(input_node.GetNumberOfDataNodes()):
        path = write_volume_file(input_node.GetNthDataNode(i), job_dir / f"input_{i:03d}.nrrd")
        steps.append(JobStep(path, job_dir / f"{stem}_{i:03d}.{suffix}", index=input_node.GetNthIndexValue(i)))
    return steps


def write_volume_file(volume_node, path: Path) -> Path:
    """Write a scalar volume node (in a scene or a sequence item) to `path` (.nrrd / .nii.gz)."""
    import slicer

    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.WriteData(volume_node):
        raise InputError(f"could not write volume '{volume_node.GetName()}' to '{path}'")
    return Path(path)


def read_volume_file(scene, path: Path, name: str):
    """Read a volume file into a new scalar volume node of `scene` (with display nodes)."""
    import slicer

    from MedLVMLib.slicer.mrml import unique_name

    if not Path(path).is_file():
        raise InputError(f"the engine wrote no volume '{path}'")
    node = scene.AddNewNodeByClass(SCALAR_VOLUME, unique_name(scene, name))
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        raise InputError(f"could not read a volume from '{path}'")
    node.CreateDefaultDisplayNodes()
    return node


def import_outputs(steps: list[JobStep], input_node, request: TaskRequest):
    """Load what the engine wrote for `steps` as new nodes (MotionOutputs, SegmentOutputs or VolumeOutputs)."""
    from MedLVMLib.slicer import mrml, segmentations

    scene = input_node.GetScene()
    name = f"{input_node.GetName()} {request.output_suffix}"
    if request.task == "segment":
        out = steps[0].out_path
        return segmentations.import_segment_outputs(scene, out, Path(segments_file(str(out))), input_node, name)
    if request.task == "motion":
        return mrml.import_motion_outputs(scene, steps[0].out_path, input_node, name)
    if input_node.IsA(SCALAR_VOLUME):
        volume = read_volume_file(scene, steps[0].out_path, name)
        volume.SetAttribute(mrml.PREDICTED_ATTRIBUTE, "1")
        return VolumeOutputs(volume)
    return _import_volume_sequence(scene, steps, input_node, name)


def _import_volume_sequence(scene, steps: list[JobStep], input_node, name: str) -> VolumeOutputs:
    """One output volume per input item, gathered into a new sequence on the input's index values."""
    from MedLVMLib.slicer import mrml

    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", mrml.unique_name(scene, name))
    sequence.SetIndexName(input_node.GetIndexName())
    sequence.SetIndexUnit(input_node.GetIndexUnit())
    sequence.SetIndexType(input_node.GetIndexType())
    for step in steps:
        item = read_volume_file(scene, step.out_path, "__medlvm_temp_item__")
        try:
            item.SetName(f"{sequence.GetName()} {step.index}{input_node.GetIndexUnit() or ''}")
            item.SetAttribute(mrml.PREDICTED_ATTRIBUTE, "1")
            sequence.SetDataNodeAtValue(item, step.index)
        finally:
            mrml.remove_node(scene, item)
    sequence.SetAttribute(mrml.PREDICTED_ATTRIBUTE, "1")
    browser = mrml.add_browser(scene, sequence, synchronized=[input_node])
    return VolumeOutputs(browser.GetProxyNode(sequence), sequence, browser)


def describe_outputs(outputs) -> str:
    """"<name> (N phases)" for a sequence result, "<name>" for a single volume."""
    sequence = getattr(outputs, "sequence", None)
    if sequence is not None:
        return f"{sequence.GetName()} ({sequence.GetNumberOfDataNodes()} phases)"
    return outputs.volume.GetName()


def show_outputs(outputs) -> None:
    """The result in the slice views; a sequence result's browser in the (shown) sequence toolbar."""
    import slicer

    browser = getattr(outputs, "browser", None)
    shown = browser.GetProxyNode(outputs.sequence) if browser is not None else getattr(outputs, "volume", None)
    if shown is not None and shown.IsA(SCALAR_VOLUME):
        slicer.util.setSliceViewerLayers(background=shown, fit=True)
    sequences = getattr(slicer.modules, "sequences", None)
    if browser is None or sequences is None:
        return
    if hasattr(sequences, "showSequenceBrowser"):
        sequences.showSequenceBrowser(browser)  # shows the toolbar with this browser active
    else:
        sequences.setToolBarVisible(True)
        sequences.toolBar().setActiveBrowserNode(browser)


def dispatch_event(job: dict, event) -> None:
    """Hand one engine event of a job to its callbacks: onOutput(line), onProgress(stage, done, total) (the stage
    names the item for a job of several requests), onLog(message)."""
    log = logging.getLogger("MedLVM")
    if event.event == "stderr":
        log.info("MedLVM engine: %s", event.message)
        if job.get("onOutput") and event.message.strip():
            job["onOutput"](event.message)
    elif event.event == "progress" and job.get("onProgress"):
        steps = len(job["argvs"])
        stage = f"item {job['step'] + 1}/{steps}: {event.stage}" if steps > 1 else event.stage
        job["onProgress"](stage, event.done, event.total)
    elif event.event == "log" and event.message:
        log.info("MedLVM: %s", event.message)
        if job.get("onLog"):
            job["onLog"](event.message)


def job_outcome(job: dict, event):
    """(outputs, None) for a job that ended with `event` and succeeded, else (None, the message to show).
    A download job (no input node) gives its model id."""
    if event.event == "cancelled":
        return None, job.get("cancelReason") or "Cancelled."
    if event.event != "done" or event.returncode != 0:
        if event.traceback:
            logging.getLogger("MedLVM").error("MedLVM engine traceback:\n%s", event.traceback)
        return None, event.message or f"The engine failed (exit status {event.returncode})."
    if job["input"] is None:
        return job["model"], None
    scene = job["input"].GetScene()
    if scene is None or not scene.IsNodePresent(job["input"]):
        return None, "The input left the scene while MedLVM ran (was the scene closed?); the results were discarded."
    return import_outputs(job["steps"], job["input"], job["request"]), None
