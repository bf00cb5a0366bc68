"""outputs.py: output paths checked before any work; atomic writes; --overwrite replaces only what MedLVM wrote."""

from __future__ import annotations

import errno
import json
import os

import pytest

from MedLVMLib.errors import MedLVMError, OutputError
from MedLVMLib.outputs import MANIFEST, atomic_path, check_output_path, foreign_entries


def _write_folder(out, overwrite=False, files=("a.txt", "sub/b.txt")):
    with atomic_path(out, overwrite) as tmp:
        for name in files:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(name)
    return out


# ------------------------------------------------------------------------------------------ names and places


@pytest.mark.parametrize("name, match", [
    (".", "names an existing folder itself"),
    ("..", "names an existing folder itself"),
    ("/", "names an existing folder itself"),
    ("sub/..", "names an existing folder itself"),
    ("/proc/medlvm-out", "inside /proc, a system folder"),
    ("/proc/self/pred.seq.nrrd", "inside /proc, a system folder"),
    ("/sys/pred.seq.nrrd", "inside /sys, a system folder"),
    ("/dev/null", "inside /dev, a system folder"),
])
def test_names_that_cannot_be_outputs(tmp_path, monkeypatch, name, match):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match=match):
        check_output_path(name, overwrite=True)


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm here")
def test_shared_memory_is_a_usable_scratch_folder():
    assert check_output_path("/dev/shm/medlvm-test-output.seq.nrrd").name == "medlvm-test-output.seq.nrrd"


def test_a_file_in_the_way_of_the_parent_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(OutputError, match="'.*notes.txt' is a file, not a folder"):
        check_output_path(tmp_path / "notes.txt" / "deeper" / "pred.seq.nrrd")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="is not writable"):
            check_output_path(folder / "pred.seq.nrrd")
    finally:
        folder.chmod(0o755)


def test_a_folder_where_files_cannot_be_created(tmp_path, monkeypatch):
    """A read-only file system (EROFS) refuses even root: the check tries to create a file, it does not guess."""
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OutputError, match=r"folder '.*' is not writable \(Read-only file system\)"):
        check_output_path(tmp_path / "pred.seq.nrrd")


def test_checking_creates_nothing_and_writing_creates_the_parents(tmp_path):
    out = tmp_path / "new" / "deeper" / "x.txt"
    assert check_output_path(out) == out
    assert list(tmp_path.iterdir()) == []  # no folder, no probe file left behind
    with atomic_path(out) as tmp:
        tmp.write_text("done")
    assert out.read_text() == "done"


def test_an_output_error_is_a_medlvm_error():
    assert issubclass(OutputError, MedLVMError)  # so `medlvm` prints one line and exits with status 2


# ------------------------------------------------------------------------------------------ replacing outputs


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "x.txt"
    out.write_text("keep")
    with pytest.raises(OutputError, match="already exists"):
        check_output_path(out)
    with atomic_path(out, overwrite=True) as tmp:  # a file named as the output is replaced with --overwrite
        tmp.write_text("new")
    assert out.read_text() == "new"


def test_a_folder_output_records_what_it_holds(tmp_path):
    out = _write_folder(tmp_path / "out")
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["entries"] == ["a.txt", "sub", "sub/b.txt"]
    assert foreign_entries(out) == []


def test_overwrite_replaces_a_folder_medlvm_wrote(tmp_path):
    out = _write_folder(tmp_path / "out")
    _write_folder(out, overwrite=True, files=("c.txt",))
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "c.txt"]


@pytest.mark.parametrize("foreign", ["notes.txt", "sub/notes.txt", "mine/"])
def test_overwrite_never_deletes_files_medlvm_did_not_write(tmp_path, foreign):
    out = _write_folder(tmp_path / "out")
    target = out / foreign.rstrip("/")
    if foreign.endswith("/"):
        target.mkdir()
    else:
        target.write_text("keep me")
    with pytest.raises(OutputError, match=f"holds files MedLVM did not write \\({foreign.rstrip('/')}\\)"):
        _write_folder(out, overwrite=True, files=("c.txt",))
    assert target.exists() and (out / "a.txt").exists()  # the earlier output is untouched too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # and no partial output is left beside it


def test_a_folder_without_manifest_is_not_replaced(tmp_path):
    out = tmp_path / "user"
    out.mkdir()
    for i in range(5):
        (out / f"f{i}.txt").write_text("x")
    with pytest.raises(OutputError, match=r"\(f0.txt, f1.txt, f2.txt and 2 more\)"):
        check_output_path(out, overwrite=True)


def test_an_empty_folder_is_replaced(tmp_path):
    (tmp_path / "out").mkdir()
    _write_folder(tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "a.txt").exists()


def test_a_file_put_in_the_folder_during_the_run_is_kept(tmp_path):
    out = _write_folder(tmp_path / "out")
    with pytest.raises(OutputError, match="notes.txt"):
        with atomic_path(out, overwrite=True) as tmp:
            tmp.mkdir()
            (tmp / "c.txt").write_text("new")
            (out / "notes.txt").write_text("written while MedLVM worked")
    assert (out / "notes.txt").exists() and (out / "a.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(tmp_path / "out") as tmp:
            tmp.mkdir()
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_run_leaves_a_hidden_folder_that_the_next_run_removes(tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid no longer runs (a SIGKILLed writer)
    stale = tmp_path / f".out.seq.nrrd.{dead.pid}.abc123.partial"
    live = tmp_path / f".out.seq.nrrd.{os.getpid()}.def456.partial"  # another job still writing
    other = tmp_path / f".other.nrrd.{dead.pid}.abc123.partial"  # another output's: not ours to remove
    for folder in (stale, live, other):
        folder.mkdir()
        (folder / "half.nrrd").write_text("x")
    with atomic_path(tmp_path / "out.seq.nrrd") as tmp:
        assert not stale.exists() and live.exists() and other.exists()
        assert tmp.parent.name.startswith(f".out.seq.nrrd.{os.getpid()}.")  # the writer's pid in the name
        tmp.write_text("done")
    assert (tmp_path / "out.seq.nrrd").read_text() == "done"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "out.seq.nrrd"])
