"""The Slicer side of the worker: start the engine process, send requests, read its events (no Qt)."""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence

from MedLVMLib.slicer.protocol import Event, encode, parse_event


def engine_command(python: Optional[str] = None) -> list[str]:
    """The command line that starts a worker: `<python> -m MedLVMLib worker` (PythonSlicer inside Slicer)."""
    return [python or sys.executable, "-m", "MedLVMLib", "worker"]


def slicer_python(app_dir: Optional[str] = None) -> Optional[str]:
    """PythonSlicer on the PATH, else in Slicer's application folder `app_dir`; None when neither has it."""
    found = shutil.which("PythonSlicer")
    if found is None and app_dir:
        candidate = Path(app_dir) / ("PythonSlicer.exe" if os.name == "nt" else "PythonSlicer")
        found = str(candidate) if candidate.is_file() else None
    return found


CREATE_NO_WINDOW = 0x08000000  # subprocess.CREATE_NO_WINDOW, which exists only on Windows


def popen_options() -> dict:
    """Platform-specific `Popen` arguments for the worker: its own session on POSIX (so cancel can end its whole
    process group), and no console window on Windows (Slicer is a GUI program; a console would stay open)."""
    if sys.platform == "win32":
        return {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", CREATE_NO_WINDOW)}
    return {"start_new_session": os.name == "posix"}


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


def describe_exit(returncode: Optional[int]) -> str:
    """"exit status 3" or, for a process ended by a signal, "killed by SIGKILL: ..."."""
    if returncode is None or returncode >= 0:
        return f"exit status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    why = ": out of memory, or ended by another program" if name == "SIGKILL" else ""
    return f"killed by {name}{why}"


def output_of(argv: Sequence[str]) -> Optional[Path]:
    """The `--out` path of a `medlvm` command line, or None."""
    for i, arg in enumerate(argv):
        if arg == "--out" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--out="):
            return Path(arg.split("=", 1)[1])
    return None


def remove_partial_outputs(out: Path, since: float) -> list[Path]:
    """Remove what a dead engine left of `out`: the temporary siblings `outputs.atomic_path` fills
    (".<name>.<random>.partial"), only those made since `since` (a time.time()), so another run's stay.
    Returns the removed paths."""
    removed = []
    with contextlib.suppress(OSError):
        for partial in out.parent.glob(f".{out.name}.*.partial"):
            if partial.is_dir() and partial.stat().st_mtime >= since - 1.0:
                shutil.rmtree(partial, ignore_errors=True)
                removed.append(partial)
    return removed


class _Job(NamedTuple):
    id: str
    out: Optional[Path]
    started: float


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
        self._job: Optional[_Job] = None
        self._stderr_tail: collections.deque = collections.deque(maxlen=1)  # the last non-blank stderr line

    @property
    def running_request(self) -> Optional[str]:
        """The id of the job the worker is running, or None."""
        return self._job.id if self._job is not None else None

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
                **popen_options(),
            )
        except OSError as exc:
            raise EngineError(f"could not start the MedLVM engine ({' '.join(self.command)}): {exc}") from exc
        process = self._process
        tail = self._stderr_tail = collections.deque(maxlen=1)
        stderr_reader = threading.Thread(target=self._read_stderr, args=(process, tail), daemon=True)
        stderr_reader.start()
        threading.Thread(target=self._read_stdout, args=(process, stderr_reader, tail), daemon=True).start()

    def _read_stdout(self, process: subprocess.Popen, stderr_reader: threading.Thread, tail) -> None:
        for line in process.stdout:
            event = parse_event(line)
            if event is not None:
                self._events.put(event)
        process.wait()
        stderr_reader.join(timeout=5)  # its last line (a traceback's) explains the exit
        self._events.put(Event("exited", returncode=process.returncode, pid=process.pid, message="".join(tail)))

    def _read_stderr(self, process: subprocess.Popen, tail) -> None:
        # delivered through poll() on the caller's thread (GUI toolkits must not be called from this one)
        for line in process.stderr:
            line = line.rstrip("\n")
            self._events.put(Event("stderr", message=line, pid=process.pid))
            if line.strip():
                tail.append(line.strip())

    def _send(self, obj: dict) -> None:
        if not self.alive:
            ended = self._process is not None and self._process.returncode is not None
            raise EngineError("the MedLVM engine is not running" + (
                f" ({describe_exit(self._process.returncode)}: {''.join(self._stderr_tail) or 'no message'})"
                if ended else ""))
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
        self._stderr_tail.clear()  # what an earlier job printed does not explain this one's end
        self.start()
        request_id = str(next(self._ids))
        argv = [str(a) for a in argv]
        self._send({"id": request_id, "argv": argv})
        self._job = _Job(request_id, output_of(argv), time.time())
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
        job = self._end_job()
        if job is not None:
            self._events.put(Event("cancelled", id=job.id, message="cancelled by the user"))

    def _end_job(self, engine_died: bool = True) -> Optional[_Job]:
        """Forget the running job; when its engine died, remove the output it was writing."""
        job, self._job = self._job, None
        if job is not None and engine_died and job.out is not None:
            remove_partial_outputs(job.out, job.started)
        return job

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
            job = self._end_job()
            if job is not None:
                return Event("error", id=job.id, returncode=event.returncode, message=_death_message(event))
            return event
        if event.final and event.id == self.running_request:
            self._end_job(engine_died=False)
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


def _death_message(exited: Event) -> str:
    """What the client reports for a job whose engine died: how it ended and its last words on stderr."""
    message = (f"the MedLVM engine stopped unexpectedly ({describe_exit(exited.returncode)}); "
               "it will be restarted for the next request")
    if exited.message and exited.returncode is not None and exited.returncode > 0:
        message += f". Its last message: {exited.message[:300]}"
    return message
