"""Cohort runs: a folder of cases split over the processes of a `torchrun` launch, or done in one process.

    torchrun --nproc_per_node 2 -m MedLVMLib predict motion CASES --out OUT --method medlvm
    torchrun --nproc_per_node 2 -m MedLVMLib evaluate motion CASES --out REPORT --methods medlvm,copy-last

torchrun starts the processes (one per GPU or several on CPU, on one or more machines) and tells each who it is
(WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT). They join one process group (NCCL
when each process of a machine has its own GPU, cuda:LOCAL_RANK; Gloo otherwise). Process r takes the cases
r, r + N, ... of the sorted list (DistributedSampler's split without padding: no case is done twice).

Each case's outputs go to ROOT/<case name>/ through `atomic_path`, with `cohort-run.json` recording the settings
that decide them; a case finished with the same settings is skipped, so a rerun continues where a crash stopped.
A case that raises is recorded in ROOT/.failed/<case>.json and the others go on. After a barrier, rank 0 lists
the failures (an evaluation also merges the finished cases into one report); the status is 1 when any failed.
Results travel through files, so all processes must see the same output folder (a shared file system across
machines); only barriers cross the process group. Without torchrun's variables it all runs in one process.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Optional, Sequence

from MedLVMLib.errors import Cancelled, CheckpointError, MedLVMError, OutputError
from MedLVMLib.outputs import atomic_path, check_output_path, check_replaceable, write_manifest

MARKER = ".medlvm-cohort.json"  # in OUT: which command's cohort run the folder holds
RUN_FILE = "cohort-run.json"  # in each finished case folder: the settings and facts of its run
FAILED = ".failed"  # ROOT/.failed/<case>.json: the last error of a case that did not finish
THREADS_VARIABLE = "MEDLVM_NUM_THREADS"  # overrides the CPU threads per process
# A process that finished its cases waits at a barrier for the slowest one: hours on a large cohort. A process
# that crashes does not leave the others waiting, since torchrun stops them all.
BARRIER_TIMEOUT = timedelta(days=7)


@dataclass(frozen=True)
class Launch:
    """Who this process is in a torchrun launch (the defaults: one process, not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    torchrun: bool = False


def detect_launch(environ: Mapping[str, str] = os.environ) -> Launch:
    """The launch described by torchrun's variables; `Launch()` when they are not set."""
    if "WORLD_SIZE" not in environ or "RANK" not in environ:
        return Launch()
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    defaults = {"LOCAL_RANK": environ["RANK"], "LOCAL_WORLD_SIZE": environ["WORLD_SIZE"]}
    try:
        rank, world, local_rank, local_world = (int(environ.get(n, defaults.get(n, ""))) for n in names)
    except ValueError:
        shown = ", ".join(f"{n}={environ.get(n)!r}" for n in names)
        raise MedLVMError(f"torchrun variables must be integers ({shown}); launch with torchrun") from None
    if not (0 <= rank < world and 0 <= local_rank < local_world <= world):
        raise MedLVMError(f"inconsistent torchrun variables: RANK={rank}, WORLD_SIZE={world}, "
                          f"LOCAL_RANK={local_rank}, LOCAL_WORLD_SIZE={local_world}")
    return Launch(rank, world, local_rank, local_world, True)


def shard(items: Sequence, launch: Launch) -> list:
    """Items r, r + N, ... for rank r of N: every item exactly once over all ranks, in the given order."""
    return list(items)[launch.rank::launch.world_size]


def threads_per_process(launch: Launch, environ: Mapping[str, str] = os.environ, cores: Optional[int] = None) -> int:
    """CPU threads of one process: MEDLVM_NUM_THREADS when set, else the cores // processes on this machine."""
    if environ.get(THREADS_VARIABLE):
        value = environ[THREADS_VARIABLE]
        if not value.isdigit() or int(value) < 1:
            raise MedLVMError(f"{THREADS_VARIABLE}={value!r} must be a positive integer")
        return int(value)
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // launch.local_world_size)


def choose_backend(launch: Launch, device: str) -> tuple[str, str]:
    """(process group backend, this process's device) for --device auto | cpu | cuda | an explicit device."""
    import torch

    cuda = torch.cuda.is_available()
    if device == "cpu" or (device == "auto" and not cuda):
        return "gloo", "cpu"
    if device not in ("auto", "cuda"):
        return "gloo", device  # an explicit device such as cuda:1 is used as given
    if not cuda:
        raise MedLVMError("--device cuda: this machine has no usable CUDA device; pass --device cpu")
    count = torch.cuda.device_count()
    if count < launch.local_world_size:
        raise MedLVMError(f"{launch.local_world_size} processes on this machine but {count} GPU(s): launch with "
                          f"--nproc_per_node {count} (one process per GPU) or pass --device cpu")
    return "nccl", f"cuda:{launch.local_rank}"


@dataclass
class Cohort:
    """This process's part of a cohort run: its rank, its device and the barrier."""

    launch: Launch = field(default_factory=Launch)
    device: str = "auto"
    backend: Optional[str] = None  # None: no process group (one process)

    @property
    def is_main(self) -> bool:
        return self.launch.rank == 0

    def shard(self, items: Sequence) -> list:
        return shard(items, self.launch)

    def barrier(self) -> None:
        if self.backend is None:
            return
        import torch.distributed as dist

        if self.backend == "nccl":
            dist.barrier(device_ids=[self.launch.local_rank])
        else:
            dist.barrier()

    def log(self, message: str) -> None:
        prefix = f"[rank {self.launch.rank}/{self.launch.world_size}] " if self.launch.world_size > 1 else ""
        print(prefix + message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def open_cohort(device: str = "auto", launch: Optional[Launch] = None) -> Iterator[Cohort]:
    """The cohort of this process: joins torchrun's process group (and leaves it at the end) when launched by
    torchrun with several processes, sets the CPU threads per process; one plain process otherwise."""
    launch = launch if launch is not None else detect_launch()
    if not launch.torchrun:
        yield Cohort(launch, device)
        return
    import torch
    import torch.distributed as dist

    backend, rank_device = choose_backend(launch, device)
    torch.set_num_threads(threads_per_process(launch))
    grouped = launch.world_size > 1
    if grouped:
        if backend == "nccl":
            torch.cuda.set_device(launch.local_rank)
        dist.init_process_group(backend, timeout=BARRIER_TIMEOUT)  # env://: torchrun's MASTER_ADDR / MASTER_PORT
    try:
        yield Cohort(launch, rank_device, backend if grouped else None)
    finally:
        if grouped and dist.is_initialized():
            dist.destroy_process_group()


def prepare_output(cohort: Cohort, out: Path, command: str, overwrite: bool) -> None:
    """Check OUT in every process before any work; after a barrier (every check done) rank 0 makes it, marked as
    a cohort run of `command`, and a second barrier. A cohort folder of the same command is continued; any other
    existing output needs --overwrite and is replaced only when MedLVM wrote everything in it."""
    out = Path(out)
    marked = marker_command(out)
    if marked is not None and marked != command:
        raise OutputError(f"'{out}' holds a cohort run of `medlvm {marked}`, not `medlvm {command}`; choose "
                          "another --out")
    if marked is None:
        check_output_path(out, overwrite)
    else:
        check_output_path(out / MARKER, overwrite=True)  # OUT itself exists: its place must still be writable
    cohort.barrier()
    if cohort.is_main:
        if marked is None and (out.exists() or out.is_symlink()):
            check_replaceable(out)
            if out.is_dir() and not out.is_symlink():
                shutil.rmtree(out)
            else:
                out.unlink()
        out.mkdir(parents=True, exist_ok=True)
        if marked is None:
            with atomic_path(out / MARKER, overwrite=True) as tmp:
                tmp.write_text(json.dumps({"command": command}) + "\n", encoding="utf-8")
    cohort.barrier()


def marker_command(out: Path) -> Optional[str]:
    """The command whose cohort run `out` holds, or None when it is not a cohort output folder."""
    return _json_field(Path(out) / MARKER, "command")


def _json_field(path: Path, key: str) -> Any:
    """`key` of the JSON object in `path`; None when the file is missing, unreadable or lacks it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))[key]
    except (OSError, ValueError, KeyError, TypeError):
        return None


class CaseJob(NamedTuple):
    """One case of a cohort: its folder and the settings that decide its outputs (JSON-serialisable)."""

    folder: Path
    settings: dict


class Outcome(NamedTuple):
    name: str
    status: str  # "written" | "skipped" | "failed"
    message: str = ""


def check_settings(jobs: Sequence[CaseJob], root: Path, overwrite: bool) -> None:
    """MedLVMError, before any work, when finished cases under ROOT were made with other settings (without
    --overwrite a rerun only continues the same run)."""
    if overwrite:
        return
    other = [job.folder.name for job in jobs if (Path(root) / job.folder.name).exists()
             and finished_settings(Path(root) / job.folder.name) != _as_json(job.settings)]
    if other:
        shown = ", ".join(other[:3]) + (f" and {len(other) - 3} more" if len(other) > 3 else "")
        raise OutputError(f"'{root}' holds cases done with other settings, or not by a cohort run ({shown}); "
                          "pass --overwrite to redo them, or choose another --out")


def run_cases(cohort: Cohort, jobs: Sequence[CaseJob], root: Path,
              work: Callable[[CaseJob, Path], Optional[dict]], overwrite: bool = False) -> list[Outcome]:
    """Do this process's share of `jobs`: `work(job, folder)` writes one case's outputs into a new folder and
    returns facts for its cohort-run.json; the folder becomes ROOT/<case name> when complete. An exception
    fails that case only; cancelling stops the run."""
    mine = cohort.shard(jobs)
    return [_run_case(cohort, job, Path(root), work, overwrite, f"({i}/{len(mine)})")
            for i, job in enumerate(mine, 1)]


def _run_case(cohort: Cohort, job: CaseJob, root: Path, work, overwrite: bool, count: str) -> Outcome:
    name, out, started = job.folder.name, root / job.folder.name, time.perf_counter()
    try:
        if not overwrite and out.exists() and finished_settings(out) == _as_json(job.settings):
            _clear_failure(root, name)
            cohort.log(f"case {name} {count}: already finished with these settings, skipped")
            return Outcome(name, "skipped")
        with atomic_path(out, overwrite) as tmp:
            tmp.mkdir(parents=True)
            facts = work(job, tmp) or {}
            record = {"case": name, "source": str(job.folder.resolve()), "settings": job.settings,
                      "seconds": round(time.perf_counter() - started, 3), **facts}
            (tmp / RUN_FILE).write_text(json.dumps(record, indent=1, default=str) + "\n", encoding="utf-8")
    except (Cancelled, KeyboardInterrupt, CheckpointError):  # a model that does not load would fail every case
        raise
    except Exception as exc:  # noqa: BLE001 - one case's failure, whatever it is, must not stop the others
        message = f"{type(exc).__name__}: {exc}"
        _record_failure(root, name, message, traceback.format_exc())
        cohort.log(f"case {name} {count}: FAILED: {message}")
        return Outcome(name, "failed", message)
    _clear_failure(root, name)
    cohort.log(f"case {name} {count}: written in {time.perf_counter() - started:.1f} s")
    return Outcome(name, "written")


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def finished_settings(case_out: Path) -> Optional[dict]:
    """The settings a finished case folder was made with; None when it is not one."""
    return _json_field(Path(case_out) / RUN_FILE, "settings")


def _record_failure(root: Path, name: str, message: str, details: str) -> None:
    with atomic_path(root / FAILED / f"{name}.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps({"case": name, "error": message, "traceback": details}, indent=1) + "\n",
                       encoding="utf-8")


def _clear_failure(root: Path, name: str) -> None:
    (root / FAILED / f"{name}.json").unlink(missing_ok=True)


def failures(root: Path, names: Sequence[str]) -> dict[str, str]:
    """{case name: error} of the cases among `names` whose last run failed."""
    records = {name: Path(root) / FAILED / f"{name}.json" for name in names}
    return {name: _json_field(path, "error") or "failed (unreadable error record)"
            for name, path in records.items() if path.is_file()}


def summarise(cohort: Cohort, jobs: Sequence[CaseJob], root: Path) -> dict[str, str]:
    """Rank 0, after the barrier: log how many cases finished and each failure; returns the failures."""
    failed = failures(root, [job.folder.name for job in jobs])
    cohort.log(f"{len(jobs)} cases: {len(jobs) - len(failed)} finished, {len(failed)} failed")
    for name, message in failed.items():
        cohort.log(f"failed case {name}: {message} (details: {Path(root) / FAILED / (name + '.json')})")
    return failed


# Motion prediction and evaluation over a folder of cases.

PREDICTED = "predicted.seq.nrrd"  # OUT/<case>/ of `predict motion` (+ predicted_mean / predicted_std)
CASES_FOLDER = "cases"  # REPORT/cases/<case>/ of `evaluate motion`: that case's rows, seconds and heatmap


def is_case_dataset(path: Path) -> bool:
    """True when `path` is a folder of case folders (see `medlvm phantom`), not one 4D CT."""
    from MedLVMLib.imaging import cases

    path = Path(path)
    return path.is_dir() and bool(cases.list_cases(path))


def _lazy_model(model: Any, device: str, dtype: Any = None) -> Callable[[], Any]:
    """The MedLVM model of this process, loaded on the first call (never when every case is skipped)."""
    from MedLVMLib.tasks import motion

    return functools.lru_cache(maxsize=None)(lambda: motion.resolve_model(model, device, dtype))


def predict_motion_cases(data: Path, out: Path, method: str, n_observed: int, n_future: Optional[int],
                         options: dict, overwrite: bool = False, launch: Optional[Launch] = None) -> int:
    """`medlvm predict motion CASES --out OUT`: per case OUT/<case>/predicted.seq.nrrd (with several samples
    also predicted_mean / predicted_std) and cohort-run.json (settings, phases, motion-check warnings).

    options: predict_with_method's keyword arguments (MedLVM's; {} for a baseline). Returns the exit status.
    """
    from MedLVMLib.imaging import cases

    out = Path(out)
    jobs = [CaseJob(folder, {"method": method, "observed": n_observed, "future": n_future,
                             **{k: v for k, v in options.items() if k not in ("device", "batch_size")}})
            for folder in cases.list_cases(data)]
    check_settings(jobs, out, overwrite)
    with open_cohort(options.get("device", "auto"), launch) as cohort:
        prepare_output(cohort, out, "predict motion", overwrite)
        options = {**options, "device": cohort.device} if options else {}
        model = _lazy_model(options.get("model"), cohort.device, options.get("dtype")) if method == "medlvm" else None
        run_cases(cohort, jobs, out, lambda job, tmp: _predict_case(job, tmp, method, n_observed, n_future,
                                                                    options, model), overwrite)
        cohort.barrier()
        if not cohort.is_main:
            return 0
        failed = summarise(cohort, jobs, out)
        write_manifest(out)  # every entry is MedLVM's: a later --overwrite may replace the folder
    print(f"predicted: {out / '<case>' / PREDICTED} for {len(jobs) - len(failed)} of {len(jobs)} cases")
    return 1 if failed else 0


def _predict_case(job: CaseJob, tmp: Path, method: str, n_observed: int, n_future: Optional[int], options: dict,
                  model: Optional[Callable[[], Any]]) -> dict:
    from MedLVMLib.imaging.phases_io import read_phases, write_phases
    from MedLVMLib.tasks import motion, motion_guard

    phases = read_phases(job.folder / "ct.seq.nrrd")
    if model is not None:
        options = {**options, "model": model()}
    result = motion.predict_with_method(method, phases, n_observed, n_future, **options)
    write_phases(result.predicted, tmp / PREDICTED)
    if result.mean is not None:
        write_phases(result.mean, tmp / PREDICTED.replace(".seq", "_mean.seq"))
        write_phases(result.std, tmp / PREDICTED.replace(".seq", "_std.seq"), dtype="float32")
    check = motion_guard.check_prediction(phases.select(list(range(n_observed))), result.predicted)
    facts = {"phases": list(result.predicted.labels), "warnings": list(check.warnings)}
    return {**facts, "model": model().model_id} if model is not None else facts


def evaluate_motion_cases(data: Path, out: Path, config, overwrite: bool = False,
                          launch: Optional[Launch] = None) -> int:
    """`evaluate motion` over the processes: REPORT/cases/<case>/ per case (its CSV rows, seconds, heatmap), then
    rank 0 merges the finished cases into REPORT (motion_metrics.csv with rows ordered by case name, figures,
    report.html), the same report one process writes. config: a MotionEvalConfig. Returns the exit status."""
    from dataclasses import fields, replace

    from MedLVMLib.evaluation import motion as motion_eval

    out = Path(out)
    folders = motion_eval.list_dataset(data, config.n_cases)
    for method in config.methods:
        motion_eval.parse_method(method, config)
    ignored = ("model", "device", "batch_size", "n_cases", "heatmap_cases")
    base = {f.name: getattr(config, f.name) for f in fields(config) if f.name not in ignored}
    base["model"] = str(getattr(config.model, "model_id", config.model))
    jobs = [CaseJob(f, {**base, "heatmap": i < config.heatmap_cases}) for i, f in enumerate(folders)]
    root = out / CASES_FOLDER
    check_settings(jobs, root, overwrite)
    with open_cohort(config.device, launch) as cohort:
        config = replace(config, device=cohort.device)
        prepare_output(cohort, out, "evaluate motion", overwrite)
        loaded = functools.lru_cache(maxsize=None)(lambda: motion_eval.load_models(config))  # on the first case
        run_cases(cohort, jobs, root, lambda job, tmp: _evaluate_case(job, tmp, loaded), overwrite)
        cohort.barrier()
        if not cohort.is_main:
            return 0
        failed = summarise(cohort, jobs, root)
        runs = [root / f.name for f in folders if f.name not in failed]
        written = _merge_report(runs, out, replace(config, model=_model_id(runs) or config.model)) if runs else []
        write_manifest(out)
    for path in written:
        print(f"{'metrics' if path.suffix == '.csv' else 'report' if path.suffix == '.html' else 'figure'}: {path}")
    return 1 if failed else 0


def _evaluate_case(job: CaseJob, tmp: Path, loaded: Callable[[], Any]) -> dict:
    from MedLVMLib.evaluation import motion as motion_eval
    from MedLVMLib.evaluation import report
    from MedLVMLib.imaging import cases

    name = job.folder.name
    case = cases.load_case(job.folder)
    config = loaded()  # the MotionEvalConfig with its models loaded
    rows, predictions, seconds = motion_eval.evaluate_case(case, name, config)
    report.write_csv(rows, tmp / "motion_metrics.csv")
    times = {"cases": [name], "seconds": {m: [s] for m, s in seconds.items()}}
    (tmp / "seconds.json").write_text(json.dumps(times, indent=1), encoding="utf-8")
    if job.settings["heatmap"]:
        truth, slices, aspect, title = motion_eval.coronal_view(case, predictions, config.n_observed)
        report.plot_difference_grid(truth, slices, tmp / f"difference_{name}.png", title=f"{name}: {title}",
                                    aspect=aspect)
    model_id = getattr(config.model, "model_id", None)  # set when MedLVM ran (a loaded model)
    return {"model": model_id} if model_id else {}


def _model_id(runs: Sequence[Path]) -> Optional[str]:
    """The model id recorded by the finished cases (for the report), None without MedLVM methods."""
    return next((m for m in (_json_field(run / RUN_FILE, "model") for run in runs) if m), None)


def _merge_report(runs: Sequence[Path], out: Path, config) -> list[Path]:
    """merge_runs into a staging folder inside OUT, then each file renamed into OUT (each appears whole)."""
    from MedLVMLib.evaluation import motion as motion_eval
    from MedLVMLib.outputs import partial_dir

    staging = partial_dir(out / "report")  # .report.<pid>.<random>.partial inside OUT; killed runs' are removed
    try:
        result = motion_eval.merge_runs(runs, staging, config)
        made = {p.name for p in staging.iterdir()}
        for stale in out.glob("difference_*.png"):  # heatmaps of cases that no longer finish
            if stale.name not in made:
                stale.unlink()
        for name in sorted(made):
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / p.name for p in [result.csv, *result.figures, result.html] if p is not None]
