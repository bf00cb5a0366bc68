"""The engine worker process and its client: real subprocesses, JSON lines, cancel, crash, restart."""

from __future__ import annotations

import os
import signal
import sys
import time
import types
from pathlib import Path

import pytest

from MedLVMLib.slicer import protocol, server
from MedLVMLib.slicer.client import (
    EngineClient,
    EngineError,
    describe_exit,
    engine_command,
    output_of,
    remove_partial_outputs,
)
from MedLVMLib.slicer.protocol import Event, parse_event


@pytest.fixture
def client():
    env = dict(os.environ, **{protocol.TEST_HOOKS_ENV: "1"})
    engine = EngineClient(env=env)
    yield engine
    engine.close(timeout=2)


def run_to_end(client: EngineClient, argv, timeout=60.0) -> tuple[Event, list[Event]]:
    seen: list[Event] = []
    request_id = client.submit(argv)
    final = client.wait(request_id, timeout=timeout, on_event=seen.append)
    return final, seen


def wait_for_event(client: EngineClient, kind: str, timeout: float = 30.0) -> Event:
    """The next event of `kind`, skipping the others (stderr lines of the last job may come first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in client.poll(timeout=0.5):
            if event.event == kind:
                return event
    raise AssertionError(f"no {kind!r} event within {timeout} s")


def wait_started(client: EngineClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.event == "started" for e in client.poll(timeout=0.2)):
            return
    raise AssertionError("the job never started")


@pytest.mark.parametrize("line, expected", [
    ('{"id": 3, "event": "progress", "stage": "generate", "done": 2, "total": 9}',
     Event("progress", id="3", stage="generate", done=2, total=9)),
    ('{"id": "a", "event": "done", "returncode": 0}', Event("done", id="a", returncode=0)),
    ('{"event": "error", "message": "boom", "traceback": "tb", "extra": 1}',
     Event("error", message="boom", traceback="tb")),
    ("a stray print", Event("log", message="a stray print")),
    ('[1, 2]', Event("log", message="[1, 2]")),
    ("   ", None),
    ('{"event": "ready", "pid": 42, "version": "0.1.0"}', Event("ready", pid=42)),
])
def test_parse_event(line, expected):
    assert parse_event(line) == expected


def test_final_events():
    assert Event("done").final and Event("error").final and Event("cancelled").final
    assert not Event("progress").final and not Event("log").final


def test_engine_command_uses_given_python():
    assert engine_command("/opt/Slicer/bin/PythonSlicer") == [
        "/opt/Slicer/bin/PythonSlicer", "-m", "MedLVMLib", "worker"]
    assert engine_command()[0] == sys.executable


def test_ready_ping_and_progress_events(client):
    client.start()
    first = client.poll(timeout=30)
    assert first and first[0].event == "ready"
    final, seen = run_to_end(client, ["_selftest", "--steps", "4", "--print", "NOT-AN-EVENT"])
    assert final == Event("done", id="1", returncode=0)
    progress = [e for e in seen if e.event == "progress"]
    assert progress[0].stage == "selftest" and progress[0].total == 4
    assert progress[-1].done == 4
    assert any(e.event == "log" and "finished its steps" in e.message for e in seen)
    # prints go to stderr, not the event stream
    assert [e.event for e in seen if "NOT-AN-EVENT" in e.message] == ["stderr"]
    client.send_command("ping")
    assert wait_for_event(client, "pong").message == ""


def test_errors_are_reported_and_worker_survives(client):
    final, _ = run_to_end(client, ["_selftest", "--steps", "1", "--fail", "input"])
    assert final.event == "error" and final.message == "selftest: a bad input" and final.traceback == ""
    pid = client.pid
    final, _ = run_to_end(client, ["_selftest", "--steps", "1", "--fail", "bug"])
    assert final.event == "error" and "RuntimeError: selftest: a bug" in final.message
    assert "Traceback" in final.traceback
    final, _ = run_to_end(client, ["_selftest", "--steps", "1", "--sys-exit", "4"])
    assert final == Event("done", id=final.id, returncode=4)  # sys.exit in a command ends the job, not the worker
    final, _ = run_to_end(client, ["no-such-command"])
    assert final.event == "error" and "invalid choice" in final.message
    assert client.pid == pid and client.alive


def test_soft_cancel_keeps_worker(client):
    request_id = client.submit(["_selftest", "--steps", "400", "--delay", "0.02"])
    wait_started(client)
    pid = client.pid
    client.cancel(hard=False)
    final = client.wait(request_id, timeout=30)
    assert final.event == "cancelled" and "selftest" in final.message
    assert client.alive and client.pid == pid
    final, _ = run_to_end(client, ["_selftest", "--steps", "1"])
    assert final.event == "done"


def test_hard_cancel_kills_process_and_restarts(client):
    request_id = client.submit(["_selftest", "--steps", "1000", "--delay", "0.05"])
    wait_started(client)
    old_pid = client.pid
    client.cancel(hard=True)
    assert not client.alive and client.running_request is None
    final = client.wait(request_id, timeout=10)
    assert final.event == "cancelled"
    with pytest.raises(ProcessLookupError):
        os.kill(old_pid, 0)
    final, _ = run_to_end(client, ["_selftest", "--steps", "1"])
    assert final.event == "done" and client.pid != old_pid


def test_exit_of_a_killed_worker_is_not_blamed_on_the_next_job(client):
    client.submit(["_selftest", "--steps", "1000", "--delay", "0.05"])
    wait_started(client)
    client.cancel(hard=True)
    request_id = client.submit(["_selftest", "--steps", "20", "--delay", "0.05"])
    final = client.wait(request_id, timeout=60)
    assert final.event == "done", final.message


def test_crash_becomes_error_and_next_request_restarts(client):
    request_id = client.submit(["_selftest", "--steps", "2000", "--delay", "0.05"])
    wait_started(client)
    old_pid = client.pid
    client.send_command("_exit", code=7)
    final = client.wait(request_id, timeout=30)
    assert final.event == "error" and "stopped unexpectedly (exit status 7)" in final.message
    assert not client.alive and client.running_request is None
    final, _ = run_to_end(client, ["_selftest", "--steps", "1"])
    assert final.event == "done" and client.pid != old_pid


def test_one_job_at_a_time(client):
    client.submit(["_selftest", "--steps", "100", "--delay", "0.05"])
    with pytest.raises(EngineError, match="already running"):
        client.submit(["_selftest"])
    client.cancel()


def test_test_hooks_are_off_by_default():
    engine = EngineClient(env={k: v for k, v in os.environ.items() if k != protocol.TEST_HOOKS_ENV})
    try:
        final, _ = run_to_end(engine, ["_selftest"])
        assert final.event == "error" and "invalid choice" in final.message
    finally:
        engine.close(timeout=2)


def test_model_cache_is_switched_on_once_and_kept(monkeypatch):
    from MedLVMLib.engine import lvm

    monkeypatch.setattr(lvm, "MODEL_CACHE", None)
    assert server._cached_models() == ""
    server._install_model_cache()
    assert lvm.MODEL_CACHE == {}
    lvm.MODEL_CACHE["m"] = types.SimpleNamespace(model_id="tiny", device="cpu")
    server._install_model_cache()  # a second call keeps what is cached
    assert set(lvm.MODEL_CACHE) == {"m"}
    assert server._cached_models() == "tiny on cpu"
    lvm.MODEL_CACHE["m by its folder"] = lvm.MODEL_CACHE["m"]  # one model under two names is listed once
    assert server._cached_models() == "tiny on cpu"


# --------------------------------------------------------------------------- fault injection


def send_line(client: EngineClient, text: str) -> None:
    """Write a raw line to the worker's stdin, as a broken client would."""
    client._process.stdin.write(text + "\n")
    client._process.stdin.flush()


def partial_outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.partial"))


def wait_progress(client: EngineClient, done: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.event == "progress" and e.done >= done for e in client.poll(timeout=0.2)):
            return
    raise AssertionError(f"the job never reached step {done}")


def test_describe_exit_and_output_of():
    assert describe_exit(3) == "exit status 3"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL: out of memory, or ended by another program"
    assert describe_exit(-signal.SIGSEGV) == "killed by SIGSEGV"
    assert output_of(["predict", "motion", "in", "--out", "o.seq.nrrd"]) == Path("o.seq.nrrd")
    assert output_of(["predict", "motion", "--out=o.seq.nrrd"]) == Path("o.seq.nrrd")
    assert output_of(["info"]) is None


def test_partial_outputs_removed_are_those_atomic_path_was_filling(tmp_path):
    from MedLVMLib.outputs import atomic_path

    out = tmp_path / "ct.seq.nrrd"
    older = tmp_path / ".ct.seq.nrrd.oldrun.partial"  # another run's, started before this job
    older.mkdir()
    os.utime(older, (0, 0))
    started = time.time()
    with pytest.raises(KeyboardInterrupt), atomic_path(out) as tmp:
        tmp.write_bytes(b"half written")
        assert remove_partial_outputs(out, started) == [tmp.parent]
        raise KeyboardInterrupt
    assert partial_outputs(tmp_path) == [older.name] and not out.exists()


def test_sigkill_mid_job_leaves_no_partial_output_and_next_job_runs(client, tmp_path):
    out = tmp_path / "result.bin"
    request_id = client.submit(["_selftest", "--out", str(out), "--steps", "400", "--delay", "0.02"])
    wait_progress(client, done=3)
    assert partial_outputs(tmp_path)  # the output is being written
    os.kill(client.pid, signal.SIGKILL)
    final = client.wait(request_id, timeout=30)
    assert final.event == "error" and "stopped unexpectedly (killed by SIGKILL" in final.message
    assert sorted(tmp_path.iterdir()) == []  # neither the output nor its temporary folder
    final, _ = run_to_end(client, ["_selftest", "--out", str(out), "--steps", "2"])
    assert final.event == "done" and out.stat().st_size == 2 * 65536


def test_output_write_failure_is_reported_and_cleaned_up(client, tmp_path):
    out = tmp_path / "result.bin"
    final, _ = run_to_end(client, ["_selftest", "--out", str(out), "--steps", "4", "--fail-write"])
    assert final.event == "error"
    assert final.message == f"could not read or write '{out}': No space left on device"
    assert sorted(tmp_path.iterdir()) == []
    pid = client.pid
    final, _ = run_to_end(client, ["_selftest", "--out", str(out), "--steps", "2"])
    assert final.event == "done" and out.is_file() and client.pid == pid


def test_engine_dying_at_start_reports_its_last_message():
    """An engine that cannot start (in the installed extension: a module left out) says why."""
    code = ("import sys; sys.stdin.readline(); "
            "print(\"ModuleNotFoundError: No module named 'MedLVMLib.training'\", file=sys.stderr); sys.exit(1)")
    engine = EngineClient([sys.executable, "-c", code])
    try:
        final, _ = run_to_end(engine, ["predict", "motion"])
    finally:
        engine.close(timeout=2)
    assert final.event == "error" and "stopped unexpectedly (exit status 1)" in final.message
    assert final.message.endswith("Its last message: ModuleNotFoundError: No module named 'MedLVMLib.training'")


@pytest.mark.parametrize("line, request_id, message", [
    ("predict motion in.seq.nrrd", None, "ignored a request line that is not JSON: 'predict motion in.seq.nrrd'"),
    ('{"id": "7", "argv": ["predict"', None, "ignored a request line that is not JSON"),
    ("[1, 2]", None, "ignored a request that is not a JSON object: '[1, 2]'"),
    ('{"id": "x1", "argv": "predict motion"}', "x1", "bad request: 'argv' must be a list of strings"),
    ('{"id": "x2", "argv": [["nested"]]}', "x2", "bad request: 'argv' must be a list of strings"),
    ('{"id": "x3"}', "x3", "ignored a request with neither 'cmd' nor 'argv'"),
    ('{"cmd": "reboot"}', None, "ignored an unknown command: '{\"cmd\": \"reboot\"}'"),
])
def test_malformed_request_is_refused_and_worker_keeps_serving(client, line, request_id, message):
    request = client.submit(["_selftest", "--steps", "20", "--delay", "0.02"])
    wait_started(client)
    pid = client.pid
    send_line(client, line)
    seen = []
    final = client.wait(request, timeout=30, on_event=seen.append)
    assert final.event == "done"  # the running job is not disturbed
    refusals = [e for e in seen if e.event == "error"]
    assert len(refusals) == 1 and refusals[0].id == request_id and refusals[0].message.startswith(message)
    final, _ = run_to_end(client, ["_selftest", "--steps", "1"])
    assert final.event == "done" and client.pid == pid


# --------------------------------------------------------------------------- real commands the worker refuses


@pytest.fixture(scope="module")
def task_engine():
    engine = EngineClient(env=dict(os.environ))
    yield engine
    engine.close(timeout=2)


@pytest.fixture
def tiny_ct(tmp_path) -> Path:
    import numpy as np

    from MedLVMLib.imaging.phases_io import write_phases
    from MedLVMLib.imaging.volume import Geometry, Phases

    array = np.random.default_rng(0).uniform(-1000, 400, (4, 4, 5, 6)).round().astype(np.float32)
    return write_phases(Phases(array, Geometry()), tmp_path / "ct.seq.nrrd")


def predict_motion(tiny_ct: Path, out: Path, *extra: str) -> list[str]:
    return ["predict", "motion", str(tiny_ct), "--out", str(out), "--observed", "2", *extra]


def test_unknown_model_is_refused_and_next_job_runs(task_engine, tiny_ct, tmp_path):
    out = tmp_path / "predicted.seq.nrrd"
    final, _ = run_to_end(task_engine, predict_motion(tiny_ct, out, "--model", "no-such-model"))
    assert final.event == "error" and final.traceback == ""
    assert "model 'no-such-model' is neither a folder nor a registered id" in final.message
    assert not out.exists() and partial_outputs(tmp_path) == []
    final, _ = run_to_end(task_engine, predict_motion(tiny_ct, out, "--method", "copy-last"))
    assert final.event == "done" and final.returncode == 0 and out.is_file()


def test_output_under_a_file_is_refused_and_next_job_runs(task_engine, tiny_ct, tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder\n")
    out = blocker / "predicted.seq.nrrd"
    final, _ = run_to_end(task_engine, predict_motion(tiny_ct, out, "--method", "copy-last"))
    assert final.event == "error" and str(blocker) in final.message and "\n" not in final.message
    assert blocker.read_text() == "a file, not a folder\n"
    out = tmp_path / "predicted.seq.nrrd"
    final, _ = run_to_end(task_engine, predict_motion(tiny_ct, out, "--method", "copy-last"))
    assert final.event == "done" and out.is_file()


def test_engine_warnings_become_log_events_for_the_panel(client):
    """A warning logged by the engine (e.g. a task's plausibility check) reaches the client as a "Warning:" log
    event of that job, which the Slicer panel shows after the job; it is no longer only on stderr."""
    final, seen = run_to_end(client, ["_selftest", "--steps", "1", "--warn", "label 9 (vertebra): on no example"])
    assert final.event == "done"
    warnings = [e for e in seen if e.event == "log" and e.message.startswith("Warning:")]
    assert [(e.id, e.message) for e in warnings] == [(final.id, "Warning: label 9 (vertebra): on no example")]
    final, seen = run_to_end(client, ["_selftest", "--steps", "1"])
    assert not [e for e in seen if e.event == "log" and e.message.startswith("Warning:")]  # the handler left


def test_where_the_predicted_phases_lie_reaches_the_panel_log(task_engine, tiny_ct, tmp_path):
    """The bundled motion default keeps its motion to the observed breathing and says so in a log event of the job,
    which the Slicer panel appends to its log."""
    out = tmp_path / "predicted.seq.nrrd"
    final, seen = run_to_end(task_engine, predict_motion(tiny_ct, out))
    assert final.event == "done" and final.returncode == 0 and out.is_file()
    kept = [e.message for e in seen if e.event == "log" and e.message.startswith("motion kept to the observed")]
    assert len(kept) == 1 and "of the way from the last observed phase back to phase 0" in kept[0]
