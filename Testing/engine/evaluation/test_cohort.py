"""Cohort runs (evaluation/cohort.py): launch detection, sharding, threads and backend, and real torchrun launches of
`predict motion` / `evaluate motion` over 2 CPU processes (Gloo) compared with one process, case by case."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist

from MedLVMLib.cli import main
from MedLVMLib.engine import lvm
from MedLVMLib.engine.checkpoints.formats import save_checkpoint
from MedLVMLib.errors import MedLVMError
from MedLVMLib.evaluation import cohort
from MedLVMLib.imaging import cases
from MedLVMLib.imaging.phases_io import read_phases
from MedLVMLib.synthetic import phantom

GOOD = ("case-1", "case-2", "case-3")
CORRUPT = "case-0-corrupt"  # sorts first: rank 0 fails it, then goes on with case-2
needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with Gloo is not available")


@pytest.mark.parametrize("environ, expected", [
    ({}, cohort.Launch()),
    ({"RANK": "1", "WORLD_SIZE": "2"}, cohort.Launch(1, 2, 1, 2, True)),
    ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}, cohort.Launch(3, 4, 1, 2, True)),
])
def test_detect_launch(environ, expected):
    assert cohort.detect_launch(environ) == expected


@pytest.mark.parametrize("environ", [{"RANK": "2", "WORLD_SIZE": "2"}, {"RANK": "x", "WORLD_SIZE": "2"},
                                     {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2"}])
def test_inconsistent_torchrun_variables_are_refused(environ):
    with pytest.raises(MedLVMError, match="torchrun variables"):
        cohort.detect_launch(environ)


@pytest.mark.parametrize("n_items, world", [(0, 2), (1, 2), (5, 2), (7, 3), (8, 4), (3, 5)])
def test_shards_take_every_case_once_as_distributed_sampler_does(n_items, world):
    from torch.utils.data import DistributedSampler

    items = [f"case-{i}" for i in range(n_items)]
    shards = [cohort.shard(items, cohort.Launch(r, world, r, world, True)) for r in range(world)]
    assert sorted(sum(shards, [])) == sorted(items)
    for rank, part in enumerate(shards):
        sampler = DistributedSampler(range(n_items), num_replicas=world, rank=rank, shuffle=False)
        # the sampler pads the last round with repeated indices; without padding the rest is the same
        assert part == [items[i] for i in list(sampler)[: len(part)]]
        assert len(part) >= len(list(sampler)) - 1


def test_threads_per_process():
    launch = cohort.Launch(0, 4, 0, 4, True)
    assert cohort.threads_per_process(launch, {}, cores=16) == 4
    assert cohort.threads_per_process(launch, {}, cores=2) == 1
    assert cohort.threads_per_process(launch, {cohort.THREADS_VARIABLE: "3"}, cores=16) == 3
    with pytest.raises(MedLVMError, match=cohort.THREADS_VARIABLE):
        cohort.threads_per_process(launch, {cohort.THREADS_VARIABLE: "0"}, cores=16)


def test_backend_and_device_per_process(monkeypatch):
    launch = cohort.Launch(3, 4, 1, 2, True)
    assert cohort.choose_backend(launch, "cpu") == ("gloo", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cohort.choose_backend(launch, "auto") == ("gloo", "cpu")
    with pytest.raises(MedLVMError, match="no usable CUDA"):
        cohort.choose_backend(launch, "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert cohort.choose_backend(launch, "auto") == ("nccl", "cuda:1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(MedLVMError, match="--nproc_per_node 1"):
        cohort.choose_backend(launch, "cuda")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny model, 3 small phantom cases (`good`) and the same plus a corrupt case (`mixed`)."""
    root = tmp_path_factory.mktemp("cohort")
    model = lvm.random_model("tiny")
    save_checkpoint(root / "model", tokenizer=model.tokenizer, transformer=model.transformer, model_id="tiny-test")
    for seed, name in enumerate(GOOD, 1):
        cases.save_case(phantom.make_phantom(seed=seed, n_phases=8, shape=(12, 20, 20)), root / "good" / name)
        (root / "mixed").mkdir(exist_ok=True)
        (root / "mixed" / name).symlink_to(root / "good" / name, target_is_directory=True)
    (root / "mixed" / CORRUPT).mkdir()
    (root / "mixed" / CORRUPT / "ct.seq.nrrd").write_bytes(b"NRRD0004\nnot a volume\n")
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(nproc: int, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", cohort.THREADS_VARIABLE: "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "MedLVMLib", *argv]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)


def _predict_args(files, data: str, out) -> list[str]:
    return ["predict", "motion", str(files / data), "--out", str(out), "--observed", "6", "--model",
            str(files / "model"), "--device", "cpu", "--greedy"]


@needs_gloo
def test_predict_over_two_processes_equals_one_process(files, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(_predict_args(files, "mixed", one)) == 1  # the corrupt case fails, the others finish
    run = _torchrun(2, *_predict_args(files, "mixed", two))
    assert run.returncode != 0, run.stderr[-3000:]
    assert "[rank 0/2] case case-0-corrupt (1/2): FAILED" in run.stderr
    assert "[rank 0/2] case case-2 (2/2): written" in run.stderr, run.stderr[-3000:]
    assert "failed case case-0-corrupt" in run.stderr
    assert json.loads((two / ".failed" / f"{CORRUPT}.json").read_text())["case"] == CORRUPT
    assert not (two / CORRUPT).exists()
    for name in GOOD:
        a, b = read_phases(one / name / cohort.PREDICTED), read_phases(two / name / cohort.PREDICTED)
        assert b.labels == a.labels == ["75%", "87.5%"]
        np.testing.assert_array_equal(b.array, a.array)
        record = json.loads((two / name / cohort.RUN_FILE).read_text())
        assert record["model"] == "tiny-test" and record["settings"]["observed"] == 6

    written = {name: (two / name / cohort.PREDICTED).stat().st_mtime_ns for name in GOOD}
    again = _torchrun(2, *_predict_args(files, "mixed", two))
    assert again.returncode != 0 and "failed case case-0-corrupt" in again.stderr
    assert again.stderr.count("already finished with these settings, skipped") == len(GOOD)
    assert {name: (two / name / cohort.PREDICTED).stat().st_mtime_ns for name in GOOD} == written


@needs_gloo
def test_evaluate_over_two_processes_equals_one_process(files, tmp_path):
    args = ["evaluate", "motion", str(files / "good"), "--methods", "medlvm,copy-last,mirror", "--observed", "6",
            "--model", str(files / "model"), "--device", "cpu", "--greedy", "--no-reference", "--heatmaps", "1"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    run = _torchrun(2, *args, "--out", str(tmp_path / "two"))
    assert run.returncode == 0, run.stderr[-3000:]
    one_csv = (tmp_path / "one" / "motion_metrics.csv").read_text()
    assert (tmp_path / "two" / "motion_metrics.csv").read_text() == one_csv
    assert {line.split(",")[0] for line in one_csv.splitlines()[1:]} == set(GOOD)
    assert sorted(p.name for p in (tmp_path / "two").glob("difference_*.png")) == ["difference_case-1.png"]
    assert "tiny-test" in (tmp_path / "two" / "report.html").read_text()


def test_finished_cases_of_other_settings_are_refused(files, tmp_path, capsys):
    out = tmp_path / "pred"
    assert main(["predict", "motion", str(files / "good"), "--out", str(out), "--method", "copy-last"]) == 0
    assert cohort.finished_settings(out / "case-1")["method"] == "copy-last"
    before = (out / "case-1" / cohort.PREDICTED).stat().st_mtime_ns
    assert main(["predict", "motion", str(files / "good"), "--out", str(out), "--method", "mirror"]) == 2
    assert "done with other settings" in capsys.readouterr().err
    assert main(["predict", "motion", str(files / "good"), "--out", str(out), "--method", "mirror",
                 "--overwrite"]) == 0
    assert cohort.finished_settings(out / "case-1")["method"] == "mirror"
    assert (out / "case-1" / cohort.PREDICTED).stat().st_mtime_ns != before


@pytest.mark.parametrize("argv, message", [
    (["predict", "motion", "ONE_CT", "--out", "OUT.seq.nrrd", "--method", "copy-last"], "one 4D CT"),
    (["evaluate", "motion", "DATA", "--out", "OUT", "--methods", "copy-last", "--make-phantoms", "1"],
     "make the cases first"),
    (["predict", "motion", "DATA", "--out", "OUT.seq.nrrd", "--method", "copy-last"], "--out is a new folder"),
])
def test_bad_cohort_requests_stop_before_any_work(files, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    replace = {"ONE_CT": str(files / "good" / "case-1" / "ct.seq.nrrd"), "DATA": str(files / "good"),
               "OUT": str(tmp_path / "out")}
    argv = [next((a.replace(k, v) for k, v in replace.items() if k in a), a) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_merging_removes_the_staging_folder_of_a_killed_run(tmp_path):
    from MedLVMLib.evaluation import motion as motion_eval
    from MedLVMLib.evaluation import report

    run = tmp_path / "runs" / "case0"
    run.mkdir(parents=True)
    rows = [dict(case="case0", phase=f"{p}0%", method=m, organ=o, metric=k, value=v)
            for p in (5, 6) for m in ("copy-last", "mirror")
            for o, k, v in (("lungs", "dsc", 0.9), ("body", "mae_hu", 30.0), ("diaphragm", "diaphragm_error_mm", 3.0))]
    report.write_csv(rows, run / "motion_metrics.csv")
    (run / "seconds.json").write_text(json.dumps({"cases": ["case0"], "seconds": {"copy-last": [0.1]}}))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "report"
    stale = out / f".report.{dead.pid}.abc123.partial"
    stale.mkdir(parents=True)
    (stale / "report.html").write_text("half")
    config = motion_eval.MotionEvalConfig(methods=("copy-last", "mirror"))
    written = cohort._merge_report([run], out, config)
    assert not stale.exists() and (out / "motion_metrics.csv") in written
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]
