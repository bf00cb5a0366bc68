"""The engine process the Slicer module talks to: JSON lines over stdin/stdout, no network port.

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

Jobs run one at a time in this process, so a model loaded by one request stays in memory (and on the
GPU) for the next: the worker switches on `MedLVMLib.api.MODEL_CACHE` when the API offers one.
The client side (`EngineClient`) is plain `subprocess` + a reader thread, free of Qt, so the Slicer
module (polling it from a QTimer) and pytest drive exactly the same code.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import IO, Callable, Optional, Sequence

from MedLVMLib import __version__
from MedLVMLib.errors import Cancelled, MedLVMError

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
OUTPUT_NAMES = {"motion": "predicted.seq.nrrd", "segment": "segmentation.seq.nrrd"}


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
    extra: tuple = ()

    @property
    def output_name(self) -> str:
        if self.task not in OUTPUT_NAMES:
            raise MedLVMError(f"task '{self.task}' is not available from the Slicer module yet "
                              f"(available: {', '.join(OUTPUT_NAMES)})")
        return OUTPUT_NAMES[self.task]


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
    if request.method == "medlvm" and request.model:
        argv += ["--model", request.model]
    if request.axis:
        argv += ["--axis", request.axis]
    return argv + [str(a) for a in request.extra]


def segments_file(out_path: str) -> str:
    """The engine's segment list beside a label output: segmentation.seq.nrrd -> segmentation.segments.json."""
    name = str(out_path)
    for suffix in (".seq.nrrd", ".nii.gz", ".nrrd"):
        if name.endswith(suffix):
            return name[: -len(suffix)] + ".segments.json"
    return name + ".segments.json"


# --------------------------------------------------------------------------- engine side


class _EventWriter:
    """Thread-safe JSON-lines writer with progress throttling."""

    def __init__(self, stream: IO[str]):
        self._stream = stream
        self._lock = threading.Lock()
        self._last_progress = (None, 0.0)

    def send(self, obj: dict) -> None:
        with self._lock:
            self._stream.write(encode(obj))
            self._stream.flush()

    def progress(self, request_id: str, stage: str, done: int, total: Optional[int]) -> None:
        now = time.monotonic()
        last_stage, last_time = self._last_progress
        if stage == last_stage and now - last_time < PROGRESS_INTERVAL_S and done not in (0, total):
            return
        self._last_progress = (stage, now)
        self.send({"id": request_id, "event": "progress", "stage": stage, "done": done, "total": total})


def _install_model_cache() -> None:
    """Keep loaded models between requests when `MedLVMLib.api` exposes a `MODEL_CACHE` slot."""
    try:
        from MedLVMLib import api
    except ImportError:
        return
    if hasattr(api, "MODEL_CACHE") and api.MODEL_CACHE is None:
        api.MODEL_CACHE = {}


def _cached_models() -> str:
    """The models kept in memory, one "id on device" per line (empty when none or no API loaded)."""
    api = sys.modules.get("MedLVMLib.api")
    cache = getattr(api, "MODEL_CACHE", None) or {}
    return "\n".join(f"{model.model_id} on {model.device}" for model in cache.values())


class Worker:
    """Reads requests on a thread (so `cancel` arrives while a job runs) and runs jobs on the caller's thread."""

    def __init__(self, stdin: IO[str], events: IO[str]):
        self._stdin = stdin
        self._out = _EventWriter(events)
        self._requests: queue.Queue = queue.Queue()
        self._cancel = threading.Event()

    def serve(self) -> int:
        self._out.send({"event": "ready", "pid": os.getpid(), "version": __version__})
        threading.Thread(target=self._read_requests, name="medlvm-worker-stdin", daemon=True).start()
        while True:
            request = self._requests.get()
            if request is None:
                return 0
            self._cancel.clear()
            self.run_request(request)

    def _read_requests(self) -> None:
        for line in self._stdin:
            try:
                request = json.loads(line)
            except ValueError:
                self._out.send({"event": "log", "message": f"ignored a line that is not JSON: {line.strip()!r}"})
                continue
            command = request.get("cmd") if isinstance(request, dict) else None
            if command == "cancel":
                self._cancel.set()
            elif command == "ping":
                self._out.send({"event": "pong", "pid": os.getpid(), "message": _cached_models()})
            elif command == "shutdown":
                break
            elif command == "_exit" and os.environ.get(TEST_HOOKS_ENV) == "1":
                os._exit(int(request.get("code", 3)))  # simulates a crash (segfault, OOM kill) in tests
            elif isinstance(request, dict) and "argv" in request:
                self._requests.put(request)
            else:
                self._out.send({"event": "log", "message": f"ignored an unknown request: {line.strip()!r}"})
        self._requests.put(None)

    def run_request(self, request: dict) -> None:
        request_id = str(request.get("id", ""))
        out = self._out
        out.send({"id": request_id, "event": "started"})
        progress = _progress_for(request_id, out, self._cancel.is_set)
        try:
            returncode = run_argv([str(a) for a in request["argv"]], progress)
        except Cancelled as exc:
            out.send({"id": request_id, "event": "cancelled", "message": str(exc)})
        except MedLVMError as exc:
            out.send({"id": request_id, "event": "error", "message": str(exc), "traceback": ""})
        except SystemExit as exc:  # a command calling sys.exit must not end the worker
            out.send({"id": request_id, "event": "done", "returncode": int(exc.code or 0)
                      if isinstance(exc.code, (int, type(None))) else 1})
        except Exception as exc:  # noqa: BLE001 - report any failure and stay alive for the next request
            out.send({"id": request_id, "event": "error", "message": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc()})
        else:
            out.send({"id": request_id, "event": "done", "returncode": int(returncode or 0)})


def _progress_for(request_id: str, out: _EventWriter, should_cancel: Callable[[], bool]):
    from MedLVMLib.progress import CallbackProgress

    return CallbackProgress(
        lambda stage, done, total: out.progress(request_id, stage, done, total),
        should_cancel=should_cancel,
        log=lambda message: out.send({"id": request_id, "event": "log", "message": message}),
    )


def run_argv(argv: Sequence[str], progress) -> int:
    """Parse `argv` with the `medlvm` parser and run the command with `progress`."""
    if argv and argv[0] == "_selftest" and os.environ.get(TEST_HOOKS_ENV) == "1":
        return _selftest(list(argv[1:]), progress)
    _install_model_cache()  # here, not at start-up: `ready` comes before torch is imported
    args = parse_argv(argv)
    if args is None:
        return 0
    if not hasattr(args, "_run"):
        raise MedLVMError(f"'{' '.join(argv)}' is not a command")
    return int(args._run(args, progress=progress) or 0)


def parse_argv(argv: Sequence[str]):
    """`medlvm` arguments -> namespace; None for --help/--version; MedLVMError with argparse's message if bad."""
    import io

    from MedLVMLib.cli import build_parser

    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return build_parser().parse_args(list(argv))
    except SystemExit as exc:
        if not exc.code:
            return None
        lines = [line for line in captured.getvalue().splitlines() if line.strip()]
        raise MedLVMError(lines[-1] if lines else f"bad arguments: {' '.join(argv)}") from None


def _selftest(argv: list[str], progress) -> int:
    """A test-only job: N progress steps, then optionally copy a file, raise or exit (see the tests)."""
    import argparse
    import shutil

    parser = argparse.ArgumentParser(prog="_selftest")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--copy", nargs=2, metavar=("SRC", "DST"))
    parser.add_argument("--fail", choices=["input", "bug"])
    parser.add_argument("--print", default="")
    parser.add_argument("--sys-exit", type=int, default=None)
    args = parser.parse_args(argv)
    if args.print:
        print(args.print)  # must not reach the event stream
    progress.stage("selftest", args.steps)
    for _ in range(args.steps):
        time.sleep(args.delay)
        progress.advance()
    progress.log("selftest finished its steps")
    if args.fail == "input":
        raise MedLVMError("selftest: a bad input")
    if args.fail == "bug":
        raise RuntimeError("selftest: a bug")
    if args.sys_exit is not None:
        sys.exit(args.sys_exit)
    if args.copy:
        shutil.copyfile(args.copy[0], args.copy[1])
    return 0


@contextlib.contextmanager
def _events_on_real_stdout():
    """Yield a stream for events on the original stdout; route fd 1 and sys.stdout to stderr meanwhile.

    This keeps prints from jobs (and from C libraries writing to fd 1) out of the JSON stream.
    """
    sys.stdout.flush()
    saved_fd = os.dup(1)
    events = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    saved_stdout, sys.stdout = sys.stdout, sys.stderr
    try:
        yield events
    finally:
        sys.stdout = saved_stdout
        os.dup2(saved_fd, 1)
        os.close(saved_fd)
        events.close()


def serve_stdio() -> int:
    """Entry point of `medlvm worker`: serve requests on this process's stdin/stdout."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    with _events_on_real_stdout() as events:
        return Worker(sys.stdin, events).serve()


# --------------------------------------------------------------------------- client side


def engine_command(python: Optional[str] = None) -> list[str]:
    """The command line that starts a worker: `<python> -m MedLVMLib worker` (PythonSlicer inside Slicer)."""
    return [python or sys.executable, "-m", "MedLVMLib", "worker"]


def kill_process_tree(process: subprocess.Popen) -> None:
    """End `process` and every process it started (a launcher such as PythonSlicer starts the real Python)."""
    if process.poll() is not None:
        return
    try:
        import psutil

        children = psutil.Process(process.pid).children(recursive=True)
    except Exception:  # noqa: BLE001 - psutil missing or the process already gone
        children = []
    for child in children:
        with contextlib.suppress(Exception):
            child.kill()
    if os.name == "posix":
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # the worker leads its own session (start_new_session)
    elif os.name == "nt":
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)], capture_output=True, check=False)
    with contextlib.suppress(Exception):
        process.kill()
    process.wait(timeout=10)


class EngineError(RuntimeError):
    """The worker process could not be started or died."""


class EngineClient:
    """Starts and talks to one worker process; events are collected by a reader thread and `poll()`ed.

    `poll()` never blocks the caller for long, so a GUI timer can call it. Besides the worker's events it
    returns "stderr" events (what jobs print or log). A worker that dies is reported as an "error" event for
    the running request and started again by the next `submit()`.
    """

    def __init__(self, command: Optional[Sequence[str]] = None, env: Optional[dict] = None,
                 cwd: Optional[str] = None):
        self.command = list(command or engine_command())
        self.env = env
        self.cwd = cwd
        self._process: Optional[subprocess.Popen] = None
        self._events: queue.Queue = queue.Queue()
        self._ids = itertools.count(1)
        self.running_request: Optional[str] = None

    # -- lifecycle

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        if self.alive:
            return
        try:
            self._process = subprocess.Popen(
                self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, encoding="utf-8", errors="replace", bufsize=1, env=self.env, cwd=self.cwd,
                start_new_session=(os.name == "posix"),
            )
        except OSError as exc:
            raise EngineError(f"could not start the MedLVM engine ({' '.join(self.command)}): {exc}") from exc
        process = self._process
        threading.Thread(target=self._read_stdout, args=(process,), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(process,), daemon=True).start()

    def _read_stdout(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            event = parse_event(line)
            if event is not None:
                self._events.put(event)
        process.wait()
        self._events.put(Event("exited", returncode=process.returncode, pid=process.pid))

    def _read_stderr(self, process: subprocess.Popen) -> None:
        # delivered through poll() on the caller's thread (GUI toolkits must not be called from this one)
        for line in process.stderr:
            self._events.put(Event("stderr", message=line.rstrip("\n"), pid=process.pid))

    def _send(self, obj: dict) -> None:
        if not self.alive:
            raise EngineError("the MedLVM engine is not running")
        try:
            self._process.stdin.write(encode(obj))
            self._process.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise EngineError(f"the MedLVM engine stopped accepting requests: {exc}") from exc

    # -- requests

    def submit(self, argv: Sequence[str]) -> str:
        """Send a job; (re)start the worker if needed. Returns the request id."""
        if self.running_request is not None:
            raise EngineError("the MedLVM engine is already running a job; cancel it or wait")
        self.start()
        request_id = str(next(self._ids))
        self._send({"id": request_id, "argv": [str(a) for a in argv]})
        self.running_request = request_id
        return request_id

    def send_command(self, command: str, **extra) -> None:
        self._send({"cmd": command, **extra})

    def cancel(self, hard: bool = True) -> None:
        """Stop the running job: ask politely, and with `hard` end the whole process tree right away."""
        if self.alive:
            with contextlib.suppress(EngineError):
                self.send_command("cancel")
        if hard:
            self.kill()

    def kill(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            kill_process_tree(process)
        request, self.running_request = self.running_request, None
        if request is not None:
            self._events.put(Event("cancelled", id=request, message="cancelled by the user"))

    def close(self, timeout: float = 5.0) -> None:
        """Ask the worker to exit; kill it if it does not within `timeout` seconds."""
        if self.alive:
            with contextlib.suppress(EngineError):
                self.send_command("shutdown")
                self._process.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=timeout)
        self.kill()

    # -- events

    def poll(self, timeout: float = 0.0) -> list[Event]:
        """Events received so far (waits up to `timeout` s for the first). A dead worker gives an error event."""
        events = []
        with contextlib.suppress(queue.Empty):
            events.append(self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait())
            while True:
                events.append(self._events.get_nowait())
        return [self._track(e) for e in events]

    def _track(self, event: Event) -> Event:
        if event.event == "exited":
            if event.pid != self.pid:  # an old worker (killed on cancel) closing its pipe
                return event
            request, self.running_request = self.running_request, None
            if request is not None:
                return Event("error", id=request, returncode=event.returncode, message=(
                    f"the MedLVM engine stopped unexpectedly (exit status {event.returncode}); "
                    "it will be restarted for the next request"))
            return event
        if event.final and event.id == self.running_request:
            self.running_request = None
        return event

    def wait(self, request_id: str, timeout: float = 600.0,
             on_event: Optional[Callable[[Event], None]] = None) -> Event:
        """Block until `request_id` ends; returns its final event (for scripts and tests, not the GUI)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.poll(timeout=0.1):
                if on_event is not None:
                    on_event(event)
                if event.final and event.id == request_id:
                    return event
        raise EngineError(f"request {request_id} did not finish within {timeout:.0f} s")
