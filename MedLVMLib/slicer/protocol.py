"""The worker protocol between the Slicer module and the engine process: JSON lines over stdin/stdout,
no network port; and how a task request becomes `medlvm` arguments.

Requests (one JSON object per line on stdin):
    {"id": "3", "argv": ["predict", "motion", "in.seq.nrrd", "--out", "out.seq.nrrd"]}   run a `medlvm` command
    {"cmd": "ping"}      -> {"event": "pong", "pid": ..., "message": models kept in memory, one per line}
    {"cmd": "cancel"}    stop the running job at its next progress step
    {"cmd": "shutdown"}  exit after the running job (end of stdin does the same)

Events (one JSON object per line on stdout; everything else a job prints goes to stderr):
    {"event": "ready", "pid", "version"}                 once, at start
    {"id", "event": "started"}
    {"id", "event": "progress", "stage", "done", "total"}
    {"id", "event": "log", "message"}
    {"id", "event": "done", "returncode"}                 the job finished (0 = success)
    {"id", "event": "cancelled", "message"}
    {"id", "event": "error", "message", "traceback"}      a bad input (empty traceback) or a bug
    {"event": "error", "message"}                         a request line the worker could not read (with the
                                                          request's "id" when it had one); the worker goes on

If the worker process dies, the client reports the running job as an "error" ("stopped unexpectedly", how it
ended and its last line on stderr) and removes the output that job was writing.

Jobs run one at a time in this process, so a model loaded by one request stays in memory (and on the
GPU) for the next: the server (`slicer.server`) switches on `engine.lvm.MODEL_CACHE`.
The client (`slicer.client.EngineClient`) is plain `subprocess` + a reader thread, free of Qt, so the Slicer
module (polling it from a QTimer) and pytest drive exactly the same code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from MedLVMLib.errors import MedLVMError

TEST_HOOKS_ENV = "MEDLVM_WORKER_TEST_HOOKS"  # "1" enables the `_selftest` command used by the tests
PROGRESS_INTERVAL_S = 0.1  # at most ~10 progress events per second per stage
FINAL_EVENTS = ("done", "cancelled", "error")


# --------------------------------------------------------------------------- protocol


@dataclass(frozen=True)
class Event:
    """One decoded event line. `event` is "log" for stray non-JSON lines."""

    event: str
    id: Optional[str] = None
    stage: str = ""
    done: int = 0
    total: Optional[int] = None
    message: str = ""
    returncode: Optional[int] = None
    traceback: str = ""
    pid: Optional[int] = None

    @property
    def final(self) -> bool:
        return self.event in FINAL_EVENTS


def parse_event(line: str) -> Optional[Event]:
    """Decode one stdout line; blank lines give None, non-JSON lines become log events."""
    line = line.strip()
    if not line:
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return Event("log", message=line)
    if not isinstance(data, dict) or "event" not in data:
        return Event("log", message=line)
    fields = {k: data[k] for k in Event.__dataclass_fields__ if k in data}
    if fields.get("id") is not None:
        fields["id"] = str(fields["id"])
    return Event(**fields)


def encode(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":")) + "\n"


# --------------------------------------------------------------------------- task requests

TASKS = ("motion", "segment", "denoise", "superres")
OUTPUT_NAMES = {"motion": "predicted.seq.nrrd", "segment": "segmentation.seq.nrrd", "denoise": "denoised.nrrd",
                "superres": "superres.nrrd"}
VOLUME_TASKS = ("denoise", "superres")  # one scalar volume in, one out (a sequence: one job per item)
SUPERRES_AXES = ("z", "xy")


@dataclass(frozen=True)
class TaskRequest:
    """What the Slicer panel asks for; `task_argv` turns it into `medlvm` arguments."""

    task: str = "motion"
    observed: int = 5
    future: int = 0  # 0: the engine's default (the rest of the input, or up to 10 phases)
    axis: str = ""  # "": the engine's default
    model: str = ""  # "": the bundled default; else a registry id or a folder with weights
    device: str = "auto"
    samples: int = 1
    seed: int = 0
    method: str = "medlvm"
    from_phase: int = 0  # segment: the phase (item number) the example segmentation was drawn on
    factor: int = 2  # superres: whole number >= 2
    superres_axis: str = "z"  # superres: "z" thinner slices, "xy" finer pixels
    photons: float = 0.0  # denoise: library dose level; 0: the one nearest the input's noise
    n_examples: int = 0  # denoise / superres: example pairs per sentence; 0: the engine's default
    extra: tuple = ()

    @property
    def output_name(self) -> str:
        if self.task not in OUTPUT_NAMES:
            raise MedLVMError(f"task '{self.task}' is not available from the Slicer module yet "
                              f"(available: {', '.join(OUTPUT_NAMES)})")
        return OUTPUT_NAMES[self.task]

    @property
    def output_suffix(self) -> str:
        """What the result's name adds to the input's: "predicted", "segmentation", "denoised", "x2"."""
        self.output_name  # noqa: B018 - validates the task
        return {"motion": "predicted", "segment": "segmentation", "denoise": "denoised"}.get(
            self.task, f"x{self.factor}")


def task_argv(request: TaskRequest, input_path: str, out_path: str, labels_path: Optional[str] = None,
              names_path: Optional[str] = None) -> list[str]:
    """`medlvm` arguments for `request` on the exported input; raises MedLVMError for an unknown task.

    labels_path / names_path: the example label map and its {name: label} JSON (task "segment").
    """
    request.output_name  # noqa: B018 - validates the task
    argv = ["predict", request.task, str(input_path), "--out", str(out_path), "--method", request.method,
            "--device", request.device, "--seed", str(request.seed)]
    if request.task == "motion":
        argv += ["--observed", str(request.observed)]
        if request.future > 0:
            argv += ["--future", str(request.future)]
        if request.method == "medlvm":
            argv += ["--samples", str(request.samples)]
    elif request.task == "segment":
        if not labels_path:
            raise MedLVMError("segmentation propagation needs an example segmentation on one phase")
        argv += ["--labels", str(labels_path), "--from-phase", str(request.from_phase)]
        argv += ["--names", str(names_path)] if names_path else []
    elif request.task in VOLUME_TASKS:
        argv += _volume_task_argv(request)
    if request.method == "medlvm" and request.model:
        argv += ["--model", request.model]
    if request.axis and request.task not in VOLUME_TASKS:  # their --axis is superres_axis
        argv += ["--axis", request.axis]
    return argv + [str(a) for a in request.extra]


def _volume_task_argv(request: TaskRequest) -> list[str]:
    """The denoise / superres options; raises MedLVMError for a value the engine would refuse."""
    argv = []
    if request.n_examples < 0:
        raise MedLVMError(f"the number of example pairs must be positive, not {request.n_examples}")
    if request.n_examples and request.method == "medlvm":
        argv += ["--n-examples", str(request.n_examples)]
    if request.task == "denoise":
        if request.photons < 0:
            raise MedLVMError(f"the dose level (photons) must be positive, not {request.photons:g}")
        return argv + (["--photons", f"{request.photons:g}"] if request.photons and request.method == "medlvm" else [])
    if int(request.factor) != request.factor or request.factor < 2:
        raise MedLVMError(f"the super-resolution factor must be a whole number >= 2, not {request.factor}")
    if request.superres_axis not in SUPERRES_AXES:
        raise MedLVMError(f"super-resolution axis '{request.superres_axis}' is not one of {', '.join(SUPERRES_AXES)}")
    return argv + ["--factor", str(int(request.factor)), "--axis", request.superres_axis]


def download_argv(model_id: str) -> list[str]:
    """`medlvm` arguments that download registry model `model_id` (the user agreed in the panel first)."""
    if not model_id or model_id.startswith("-"):
        raise MedLVMError(f"not a model id to download: {model_id!r}")
    return ["models", "--download", model_id]


def segments_file(out_path: str) -> str:
    """The engine's segment list beside a label output: segmentation.seq.nrrd -> segmentation.segments.json."""
    name = str(out_path)
    for suffix in (".seq.nrrd", ".nii.gz", ".nrrd"):
        if name.endswith(suffix):
            return name[: -len(suffix)] + ".segments.json"
    return name + ".segments.json"
