"""The engine side of the worker: reads JSON requests on stdin, runs `medlvm` commands, writes events."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import queue
import sys
import threading
import time
import traceback
from typing import IO, Callable, Optional, Sequence

from MedLVMLib import __version__
from MedLVMLib.errors import Cancelled, MedLVMError
from MedLVMLib.slicer.protocol import PROGRESS_INTERVAL_S, TEST_HOOKS_ENV, encode


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
    """Keep loaded models between requests (`engine.lvm.MODEL_CACHE`); imports torch, so not at start-up."""
    from MedLVMLib.engine import lvm

    if lvm.MODEL_CACHE is None:
        lvm.MODEL_CACHE = {}


def _cached_models() -> str:
    """The models kept in memory, one "id on device" per line (empty when none or no model loaded yet)."""
    lvm = sys.modules.get("MedLVMLib.engine.lvm")
    cache = getattr(lvm, "MODEL_CACHE", None) or {}
    unique = {id(model): model for model in cache.values()}.values()  # a model is cached under each of its names
    return "\n".join(f"{model.model_id} on {model.device}" for model in unique)


class Worker:
    """Reads requests on a thread (so `cancel` arrives while a job runs) and runs jobs on the caller's thread."""

    def __init__(self, stdin: IO[str], events: IO[str], build_parser: Callable[[], argparse.ArgumentParser]):
        self._stdin = stdin
        self._build_parser = build_parser
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
            if not line.strip():
                continue
            try:
                request = json.loads(line)
            except ValueError:
                self._refuse(None, f"ignored a request line that is not JSON: {_shorten(line)}")
                continue
            if not isinstance(request, dict):
                self._refuse(None, f"ignored a request that is not a JSON object: {_shorten(line)}")
            elif request.get("cmd") == "shutdown":
                break
            elif "cmd" in request:
                self._command(request, line)
            elif "argv" in request:
                self._queue_job(request)
            else:
                self._refuse(request.get("id"), f"ignored a request with neither 'cmd' nor 'argv': {_shorten(line)}")
        self._requests.put(None)

    def _command(self, request: dict, line: str) -> None:
        command = request["cmd"]
        if command == "cancel":
            self._cancel.set()
        elif command == "ping":
            self._out.send({"event": "pong", "pid": os.getpid(), "message": _cached_models()})
        elif command == "_exit" and os.environ.get(TEST_HOOKS_ENV) == "1":
            os._exit(int(request.get("code", 3)))  # simulates a crash (segfault, OOM kill) in tests
        else:
            self._refuse(request.get("id"), f"ignored an unknown command: {_shorten(line)}")

    def _queue_job(self, request: dict) -> None:
        argv = request["argv"]
        if not isinstance(argv, list) or not all(isinstance(a, (str, int, float)) for a in argv):
            self._refuse(request.get("id"), f"bad request: 'argv' must be a list of strings, not {_shorten(argv)}")
            return
        self._requests.put(request)

    def _refuse(self, request_id, message: str) -> None:
        """A request the worker cannot read: an error event (final for `request_id` when it has one)."""
        event = {"event": "error", "message": message, "traceback": ""}
        self._out.send(event if request_id is None else {"id": str(request_id), **event})

    def run_request(self, request: dict) -> None:
        request_id = str(request.get("id", ""))
        out = self._out
        out.send({"id": request_id, "event": "started"})
        progress = _progress_for(request_id, out, self._cancel.is_set)
        try:
            with _warnings_as_events(request_id, out):
                returncode = run_argv([str(a) for a in request["argv"]], progress, self._build_parser)
        except Cancelled as exc:
            out.send({"id": request_id, "event": "cancelled", "message": str(exc)})
        except MedLVMError as exc:
            out.send({"id": request_id, "event": "error", "message": str(exc), "traceback": ""})
        except OSError as exc:  # a file that cannot be read or written (disk full, permissions, removed folder)
            out.send({"id": request_id, "event": "error", "message": _describe_os_error(exc),
                      "traceback": traceback.format_exc()})
        except SystemExit as exc:  # a command calling sys.exit must not end the worker
            out.send({"id": request_id, "event": "done", "returncode": int(exc.code or 0)
                      if isinstance(exc.code, (int, type(None))) else 1})
        except Exception as exc:  # noqa: BLE001 - report any failure and stay alive for the next request
            out.send({"id": request_id, "event": "error", "message": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc()})
        else:
            out.send({"id": request_id, "event": "done", "returncode": int(returncode or 0)})


class _WarningEvents(logging.Handler):
    """Engine warnings (a task's plausibility checks, say) as `log` events starting "Warning:", which the Slicer
    panel shows after the job, instead of only on stderr."""

    def __init__(self, request_id: str, out: _EventWriter):
        super().__init__(level=logging.WARNING)
        self._request_id, self._out = request_id, out

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not message.startswith("Warning:"):
            message = f"Warning: {message}"
        self._out.send({"id": self._request_id, "event": "log", "message": message})


@contextlib.contextmanager
def _warnings_as_events(request_id: str, out: _EventWriter):
    engine = logging.getLogger("MedLVMLib")
    handler = _WarningEvents(request_id, out)
    engine.addHandler(handler)
    try:
        yield
    finally:
        engine.removeHandler(handler)


def _shorten(value, limit: int = 120) -> str:
    text = repr(value.strip() if isinstance(value, str) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_os_error(exc: OSError) -> str:
    """The failed file and the system's reason, without Python's "[Errno N]"."""
    where = f" '{exc.filename}'" if exc.filename else ""
    return f"could not read or write{where}: {exc.strerror or exc}"


def _progress_for(request_id: str, out: _EventWriter, should_cancel: Callable[[], bool]):
    from MedLVMLib.progress import CallbackProgress

    return CallbackProgress(
        lambda stage, done, total: out.progress(request_id, stage, done, total),
        should_cancel=should_cancel,
        log=lambda message: out.send({"id": request_id, "event": "log", "message": message}),
    )


def run_argv(argv: Sequence[str], progress, build_parser: Callable[[], argparse.ArgumentParser]) -> int:
    """Parse `argv` with the `medlvm` parser (made by `build_parser`) and run the command with `progress`."""
    if argv and argv[0] == "_selftest" and os.environ.get(TEST_HOOKS_ENV) == "1":
        return _selftest(list(argv[1:]), progress)
    _install_model_cache()  # here, not at start-up: `ready` comes before torch is imported
    args = parse_argv(argv, build_parser)
    if args is None:
        return 0
    if not hasattr(args, "_run"):
        raise MedLVMError(f"'{' '.join(argv)}' is not a command")
    return int(args._run(args, progress=progress) or 0)


def parse_argv(argv: Sequence[str], build_parser: Callable[[], argparse.ArgumentParser]):
    """`medlvm` arguments -> namespace; None for --help/--version; MedLVMError with argparse's message if bad."""
    import io

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
    import shutil

    parser = argparse.ArgumentParser(prog="_selftest")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--copy", nargs=2, metavar=("SRC", "DST"))
    parser.add_argument("--out", help="write OUT like a command's output: atomically, a chunk per step")
    parser.add_argument("--fail-write", action="store_true", help="with --out: the disk is full half way")
    parser.add_argument("--fail", choices=["input", "bug"])
    parser.add_argument("--print", default="")
    parser.add_argument("--warn", default="", help="log this as an engine warning")
    parser.add_argument("--sys-exit", type=int, default=None)
    args = parser.parse_args(argv)
    if args.print:
        print(args.print)  # must not reach the event stream
    progress.stage("selftest", args.steps)
    if args.out:
        _selftest_write(args, progress)
    else:
        for _ in range(args.steps):
            time.sleep(args.delay)
            progress.advance()
    progress.log("selftest finished its steps")
    if args.warn:
        logging.getLogger("MedLVMLib.selftest").warning(args.warn)
    if args.fail == "input":
        raise MedLVMError("selftest: a bad input")
    if args.fail == "bug":
        raise RuntimeError("selftest: a bug")
    if args.sys_exit is not None:
        sys.exit(args.sys_exit)
    if args.copy:
        shutil.copyfile(args.copy[0], args.copy[1])
    return 0


def _selftest_write(args, progress) -> None:
    """Write `args.out` through `outputs.atomic_path`, one 64 KiB chunk per step (a slow output writer)."""
    import errno

    from MedLVMLib.outputs import atomic_path

    with atomic_path(args.out) as tmp, open(tmp, "wb") as f:
        for step in range(args.steps):
            if args.fail_write and step == args.steps // 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args.out))
            f.write(bytes(65536))
            f.flush()
            time.sleep(args.delay)
            progress.advance()


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


def serve_stdio(build_parser: Callable[[], argparse.ArgumentParser]) -> int:
    """Entry point of `medlvm worker`: serve requests on this process's stdin/stdout. `build_parser` makes the
    `medlvm` argument parser (passed in by the command: the command line sits above this layer)."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    with _events_on_real_stdout() as events:
        return Worker(sys.stdin, events, build_parser).serve()
