"""The engine worker process and its client: real subprocesses, JSON lines, cancel, crash, restart."""

from __future__ import annotations

import os
import sys
import time
import types

import pytest

from MedLVMLib.slicer import protocol, server
from MedLVMLib.slicer.client import EngineClient, EngineError, engine_command
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
    assert any(e.event == "pong" and e.message == "" for e in client.poll(timeout=10))


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
