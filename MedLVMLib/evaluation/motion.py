"""Motion evaluation: the seed paper's protocol over a dataset, MedLVM against the baselines.

For every case (a folder written by `cases.save_case`: phases + per-phase ground-truth labels) and
every method, phases 0..k-1 go in and phases k.. come out. Then, per predicted phase:

Organ masks on a predicted image (the same for every method): the labels of the LAST OBSERVED phase
are propagated to the predicted image by deformable registration (`registration.propagate_labels`,
moving = last observed image, fixed = predicted image, default demons settings) and compared with the
ground-truth labels of that phase. A method whose image moves the anatomy correctly gets masks that
moved correctly. The row `method = "reference"` applies the same protocol to the TRUE image of the
phase: the best any method can score under this protocol (the registration's own error).

Metrics (rows of the long CSV: case, phase, method, organ, metric, value):
    dsc, hd95_mm per organ; centroid_error_mm for the tumour (and every organ, for completeness);
    mae_hu, rmse_hu inside the body (ground-truth labels > 0 of that phase), psnr_db, ssim over the
    body with the HU window IMAGE_WINDOW (organ = "body").

Method names: "medlvm" (options from `MotionEvalConfig`), variants "medlvm:<axis>:<render>"
(e.g. "medlvm:coronal:warp", "medlvm:multi:direct") to compare settings, "medlvm@<model>" (any of these with
another model than the config's: a registry id or a folder, e.g. "medlvm@medlvm-tiny-ct-breathing") to compare
models in one run, and the baselines "copy-last", "mirror", "dvf", "pca", "convlstm", "rmsim".
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from MedLVMLib.errors import MedLVMError
from MedLVMLib.evaluation import metrics
from MedLVMLib.evaluation.motion_cases import REAL_CT, make_evaluation_set  # noqa: F401 (re-exported)
from MedLVMLib.imaging.volume import Phases
from MedLVMLib.progress import Progress, ensure

IMAGE_WINDOW = (-1000.0, 1000.0)  # HU window of PSNR and SSIM
DEFAULT_METHODS = ("medlvm", "copy-last", "mirror", "dvf", "pca")
SKIP_ORGANS = ("body", "bone")  # body: the image-metric mask; bone: near-rigid, not a target organ
# The scoring's registration (mask propagation and landmarks) stops at the pyramid level whose grid holds at most
# this many voxels; the field is resampled to the case's grid, where masks and metrics stay. Phantom and reduced
# real cases (under 1 M voxels) are registered at full resolution; a native 256 x 256 CT at about half of it.
SCORE_REGISTER_VOXELS = 2_500_000


@dataclass(frozen=True)
class MotionEvalConfig:
    """Settings of one evaluation run (every method sees the same cases and phases)."""

    methods: tuple[str, ...] = DEFAULT_METHODS
    n_observed: int = 5
    model: Any = None
    axis: Optional[str] = None
    render: Optional[str] = None
    samples: int = 1
    combine: str = "image"  # with samples > 1 and warp: "image" (the first sample) or "field" (median of the fields)
    motion: Optional[str] = None  # "free" | "observed" (tasks/motion_space.py); None: predict_motion's default
    codes: Optional[str] = None  # "any" | "nearby" | "same" (tasks/motion.CODE_CHOICES); None: predict_motion's
    seed: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    greedy: Optional[bool] = None  # None: as predict_motion (greedy for one sample)
    device: str = "auto"
    batch_size: Optional[int] = None
    n_cases: Optional[int] = None
    heatmap_cases: int = 3
    reference: bool = True
    models: tuple = ()  # (spec, loaded model) of the "medlvm@<spec>" methods, filled by `evaluate_motion`
    register_voxels: int = SCORE_REGISTER_VOXELS  # the scoring registration's largest pyramid level (voxels)


@dataclass
class EvalOutputs:
    rows: list[dict]
    csv: Path
    figures: list[Path] = field(default_factory=list)
    html: Optional[Path] = None
    seconds: dict = field(default_factory=dict)


def canonical_organ(name: str) -> str:
    """'Tumor_c40' -> 'tumour', 'Lung' -> 'lungs': one spelling across phantom and real cases."""
    low = name.lower()
    if low.startswith(("tumour", "tumor", "gtv")):
        return "tumour"
    if low.startswith("lung"):
        return "lungs"
    return low


def parse_sampling(spec: str, config: MotionEvalConfig) -> dict:
    """The sampling part of a method name: '' (the config's), 'greedy', 't0.5' or 't0.7p0.9' (temperature, top-p)."""
    if not spec:
        return dict(temperature=config.temperature, top_p=config.top_p, greedy=config.greedy)
    if spec == "greedy":
        return dict(temperature=config.temperature, top_p=config.top_p, greedy=True)
    match = re.fullmatch(r"t([0-9.]+)(?:p([0-9.]+))?", spec)
    try:
        temperature, top_p = float(match.group(1)), float(match.group(2) or 1.0)
    except (AttributeError, ValueError):
        raise MedLVMError(f"sampling '{spec}' must be 'greedy', 't<temperature>' or 't<temperature>p<top-p>', "
                          "e.g. t0.7p0.9") from None
    if temperature <= 0 or not 0 < top_p <= 1:
        raise MedLVMError(f"sampling '{spec}': temperature must be > 0 and top-p in (0, 1]")
    return dict(temperature=temperature, top_p=top_p, greedy=False)


def model_spec(method: str) -> Optional[str]:
    """The model of a "medlvm@<model>[:...]" method ("medlvm@x:coronal:warp" -> "x"); None for every other method."""
    head, at, rest = method.partition("@")
    if not at:
        return None
    spec = rest.split(":")[0]
    if head != "medlvm" or not spec:
        raise MedLVMError(f"method '{method}': only medlvm takes a model, written medlvm@<model id or folder>"
                          "[:<axis>:<render>[:<sampling>]]")
    return spec


def parse_method(method: str, config: MotionEvalConfig) -> tuple[str, dict]:
    """'medlvm[@model]:coronal:warp[:sampling][:motion][:codes]' -> ('medlvm', options); a baseline -> (name, {}).

    motion: "free" or "observed" (tasks/motion_space.py), codes: "any", "nearby" or "same" (tasks/motion.py), each
    in any place after the render; defaults the config's."""
    from MedLVMLib.tasks import motion, motion_space

    spec = model_spec(method)
    parts = method.replace(f"@{spec}", "", 1).split(":") if spec else method.split(":")
    if parts[0] != "medlvm":
        if method not in motion.METHODS:
            raise MedLVMError(f"unknown method '{method}'; choose from {', '.join(motion.METHODS)} "
                              "or medlvm:<axis>:<render>[:<sampling>]")
        return method, {}
    axis = parts[1] if len(parts) > 1 and parts[1] else (config.axis or motion.DEFAULT_AXIS)
    render = parts[2] if len(parts) > 2 and parts[2] else (config.render or motion.DEFAULT_RENDER)
    if axis not in motion.AXIS_CHOICES or render not in motion.RENDER_CHOICES:
        raise MedLVMError(f"method '{method}': axis must be one of {motion.AXIS_CHOICES}, render one of "
                          f"{motion.RENDER_CHOICES}")
    rest = parts[3:]
    motions = [p for p in rest if p in motion_space.MOTION_CHOICES]
    codes = [p for p in rest if p in motion.CODE_CHOICES]
    rest = [p for p in rest if p not in motion_space.MOTION_CHOICES and p not in motion.CODE_CHOICES]
    if len(rest) > 1 or len(motions) > 1 or len(codes) > 1:
        raise MedLVMError(f"method '{method}' has more than medlvm:<axis>:<render>:<sampling>:<motion>:<codes>")
    motion_choice = motion.check_motion_choice(motions[0] if motions else config.motion, render, config.n_observed)
    sampling = parse_sampling(rest[0] if rest else "", config)
    model = dict(config.models).get(spec, spec) if spec else config.model
    if config.combine == "field" and (render != "warp" or config.samples < 2):
        raise MedLVMError(f"method '{method}': --combine field (the median of several samples' motion fields) needs "
                          "the warp render and --samples 2 or more")
    return "medlvm", dict(model=model, axis=axis, render=render, samples=config.samples, combine=config.combine,
                          motion=motion_choice, codes=codes[0] if codes else (config.codes or motion.DEFAULT_CODES),
                          seed=config.seed, device=config.device, batch_size=config.batch_size, **sampling)


def mask_rows(case_name: str, phase: str, method: str, truth: np.ndarray, predicted: np.ndarray,
              label_names: dict[int, str], spacing) -> list[dict]:
    """DSC, HD95 and centroid error per organ for one predicted phase."""
    rows = []
    for label_id, name in sorted(label_names.items()):
        if name.lower() in SKIP_ORGANS:
            continue
        t, p = truth == label_id, predicted == label_id
        if not t.any():
            continue
        organ = canonical_organ(name)
        values = {"dsc": metrics.dice(t, p),
                  "hd95_mm": metrics.hd95(t, p, spacing) if p.any() else float("nan"),
                  "centroid_error_mm": metrics.centroid_error_mm(t, p, spacing) if p.any() else float("nan")}
        rows += [dict(case=case_name, phase=phase, method=method, organ=organ, metric=k, value=float(v))
                 for k, v in values.items()]
    return rows


def image_rows(case_name: str, phase: str, method: str, truth: np.ndarray, predicted: np.ndarray,
               body: Optional[np.ndarray]) -> list[dict]:
    """MAE / RMSE (HU) inside the body, PSNR / SSIM over the body with IMAGE_WINDOW."""
    mask = body if body is not None and body.any() else None
    values = {"mae_hu": metrics.mae(predicted, truth, mask), "rmse_hu": metrics.rmse(predicted, truth, mask),
              "psnr_db": metrics.psnr(predicted, truth, IMAGE_WINDOW, mask),
              "ssim": metrics.ssim(predicted, truth, IMAGE_WINDOW, mask) if min(truth.shape) >= 3 else float("nan")}
    return [dict(case=case_name, phase=phase, method=method, organ="body", metric=k, value=float(v))
            for k, v in values.items()]


def score_prediction(case, case_name: str, method: str, predicted: Phases, n_observed: int,
                     progress: Optional[Progress] = None, register_voxels: int = SCORE_REGISTER_VOXELS) -> list[dict]:
    """All rows of one method on one case (labels propagated from the last observed phase; the registration
    stops at the pyramid level of at most `register_voxels` voxels, see SCORE_REGISTER_VOXELS)."""
    from MedLVMLib.evaluation.diaphragm import diaphragm_rows
    from MedLVMLib.evaluation.landmarks import case_landmarks, landmark_rows
    from MedLVMLib.imaging import registration

    geometry = case.phases.geometry
    last_image = case.phases.array[n_observed - 1]
    last_labels = case.labels[n_observed - 1] if case.labels is not None else None
    lung_ids = [i for i, n in case.label_names.items() if canonical_organ(n) == "lungs"]
    marks = case_landmarks(case, n_observed - 1)  # None without ground-truth motion
    levels = registration.capped_levels(last_image.shape, geometry.spacing, register_voxels)
    rows = []
    for j, image in enumerate(predicted.array):
        p = n_observed + j
        truth_image, phase = case.phases.array[p], case.phases.labels[p]
        body = case.labels[p] > 0 if case.labels is not None else None
        rows += image_rows(case_name, phase, method, truth_image, image, body)
        lungs = np.isin(case.labels[p], lung_ids) if case.labels is not None and lung_ids else None
        rows += diaphragm_rows(case_name, phase, method, truth_image, image, lungs, geometry.spacing[2])
        need_field = last_labels is not None or marks is not None  # one registration serves masks and landmarks
        field = registration.register(image, last_image, geometry, levels=levels) if need_field else None
        rows += landmark_rows(case, case_name, p, method, marks, field)
        if last_labels is not None:
            propagated = registration.warp_labels(last_labels, field, geometry)
            rows += mask_rows(case_name, phase, method, case.labels[p], propagated, case.label_names,
                              geometry.spacing)
        ensure(progress).advance()
    return rows


def _truth_as_prediction(case, n_observed: int, n_future: int) -> Phases:
    return case.phases.select(list(range(n_observed, n_observed + n_future)))


def run_methods(case, config: MotionEvalConfig, progress: Optional[Progress] = None
                ) -> tuple[dict[str, Phases], dict[str, float]]:
    """Predictions and seconds per method on one case. A "direct" MedLVM variant whose axis and sampling also
    have a "warp" variant reuses that run's decoded frames (the same generation, rendered both ways)."""
    from MedLVMLib.tasks import motion

    progress = ensure(progress)
    k = config.n_observed
    n_future = case.phases.n_phases - k
    parsed = {m: parse_method(m, config) for m in config.methods}
    warp_keys = {_generation_key(o) for _, o in parsed.values() if o.get("render") == "warp"}
    predictions, seconds, warp_runs = {}, {}, {}
    for method in sorted(config.methods, key=lambda m: parsed[m][1].get("render") != "warp"):
        name, options = parsed[method]
        t0 = time.perf_counter()
        if name == "medlvm" and options["render"] == "direct" and _generation_key(options) in warp_keys:
            result = warp_runs[_generation_key(options)]
            predictions[method] = result.decoded
            seconds[method] = sum(result.timings.get(s, 0.0) for s in ("tokenize", "generate", "decode"))
            progress.advance()
            continue
        result = motion.predict_with_method(name, case.phases, k, n_future, **options)
        if name == "medlvm" and options["render"] == "warp":
            warp_runs[_generation_key(options)] = result
        seconds[method] = time.perf_counter() - t0
        predictions[method] = result.predicted
        progress.advance()
    return {m: predictions[m] for m in config.methods}, seconds


def _generation_key(options: dict) -> tuple:
    """What makes two MedLVM variants share one generation: model, axis and sampling."""
    model = options["model"]
    return (getattr(model, "model_id", model), options["axis"], options["temperature"], options["top_p"],
            options["greedy"])


def evaluate_case(case, case_name: str, config: MotionEvalConfig, progress: Optional[Progress] = None
                  ) -> tuple[list[dict], dict[str, Phases], dict[str, float]]:
    """Run and score every method on one case. Returns (rows, predictions by method, seconds by method).
    With `progress`: a stage "<case>: predicting" (one step per method), then "<case>: scoring" (one per method
    and predicted phase)."""
    k = config.n_observed
    if case.phases.n_phases <= k:
        raise MedLVMError(f"case '{case_name}' has {case.phases.n_phases} phases; need more than {k} observed")
    progress = ensure(progress)
    progress.stage(f"{case_name}: predicting", len(config.methods))
    predictions, seconds = run_methods(case, config, progress)
    scored = dict(predictions)
    if config.reference:
        scored["reference"] = _truth_as_prediction(case, k, case.phases.n_phases - k)
    progress.stage(f"{case_name}: scoring", len(scored) * (case.phases.n_phases - k))
    rows = []
    for method, predicted in scored.items():
        rows += score_prediction(case, case_name, method, predicted, k, progress, config.register_voxels)
    return rows, predictions, seconds


def coronal_view(case, predictions: dict[str, Phases], n_observed: int, phase_offset: int = -1):
    """(truth slice, {method: slice}, aspect, title) for a Figure-5-like grid: the coronal slice through
    the tumour centroid (else the middle) of a predicted phase (default: the last), superior up."""
    from MedLVMLib.imaging import frames

    p = n_observed + (phase_offset % next(iter(predictions.values())).n_phases)
    y = case.phases.shape[1] // 2
    if case.labels is not None:
        tumour = [i for i, n in case.label_names.items() if canonical_organ(n) == "tumour"]
        where = np.argwhere(case.labels[p] == tumour[0]) if tumour else np.empty((0, 3))
        if len(where):
            y = int(round(where[:, 1].mean()))
    truth = frames.to_frames(case.phases.array[p], "coronal")[y]
    slices = {m: frames.to_frames(ph.array[p - n_observed], "coronal")[y] for m, ph in predictions.items()}
    sx, _, sz = case.phases.geometry.spacing
    return truth, slices, sz / sx, f"phase {case.phases.labels[p]}, coronal slice y={y}"


def list_dataset(data: Path, n_cases: Optional[int] = None) -> list[Path]:
    from MedLVMLib.imaging import cases

    if n_cases is not None and n_cases < 1:
        raise MedLVMError(f"--cases must be at least 1, got {n_cases} (leave it out to evaluate every case)")
    folders = cases.list_cases(Path(data))
    if not folders:
        raise MedLVMError(f"'{data}' holds no case folders (make some with --make-phantoms or `medlvm phantom`)")
    return folders[:n_cases] if n_cases is not None else folders


def evaluate_motion(data: Path, out: Path, config: MotionEvalConfig = MotionEvalConfig(),
                    progress: Optional[Progress] = None) -> EvalOutputs:
    """Evaluate every method on every case of `data`; write CSV, figures and report.html into `out`."""
    from MedLVMLib.evaluation import report
    from MedLVMLib.imaging import cases

    progress = ensure(progress)
    folders = list_dataset(data, config.n_cases)
    for method in config.methods:
        parse_method(method, config)
    config = load_models(config)  # every model loaded (or refused) before any work
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, figures, seconds = [], [], {}
    for i, folder in enumerate(folders):
        progress.log(f"case {i + 1}/{len(folders)}: {folder.name}")
        case = cases.load_case(folder)
        case_rows, predictions, case_seconds = evaluate_case(case, folder.name, config, progress)
        rows += case_rows
        for m, s in case_seconds.items():
            seconds.setdefault(m, []).append(s)
        if i < config.heatmap_cases:
            truth, slices, aspect, title = coronal_view(case, predictions, config.n_observed)
            figures.append(report.plot_difference_grid(truth, slices, out / f"difference_{folder.name}.png",
                                                       title=f"{folder.name}: {title}", aspect=aspect))
    csv_path = report.write_csv(rows, out / "motion_metrics.csv")
    mean_seconds = {m: float(np.mean(v)) for m, v in seconds.items()}
    (out / "seconds.json").write_text(json.dumps({"cases": [f.name for f in folders], "seconds": seconds}, indent=1))
    result = EvalOutputs(rows, csv_path, figures, None, mean_seconds)
    write_motion_report(result, out, config, [f.name for f in folders])
    return result


def merge_runs(runs: Sequence[Path], out: Path, config: MotionEvalConfig, embed: bool = True) -> EvalOutputs:
    """One report from several evaluation folders (e.g. a dataset split over processes, or other methods run on the
    same cases): CSVs concatenated, difference figures copied (of a case in several runs, the first run's),
    summary plots and report.html rebuilt."""
    import shutil

    from MedLVMLib.evaluation import report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, figures, seconds, names, copied = [], [], {}, [], set()
    for run in map(Path, runs):
        rows += report.read_csv(run / "motion_metrics.csv")
        info = json.loads((run / "seconds.json").read_text(encoding="utf-8"))
        names += info["cases"]
        for m, values in info["seconds"].items():
            seconds.setdefault(m, []).extend(values)
        for fig in sorted(run.glob("difference_*.png")):
            if fig.name not in copied:  # the same case in several runs: the first run's figure
                copied.add(fig.name)
                figures.append(Path(shutil.copy(fig, out / fig.name)))
    csv_path = report.write_csv(rows, out / "motion_metrics.csv")
    (out / "seconds.json").write_text(json.dumps({"cases": names, "seconds": seconds}, indent=1))
    result = EvalOutputs(rows, csv_path, figures, None, {m: float(np.mean(v)) for m, v in seconds.items()})
    write_motion_report(result, out, config, names, embed)
    return result


def load_models(config: MotionEvalConfig) -> MotionEvalConfig:
    """`config` with its model and the model of every "medlvm@<model>" method loaded; unchanged without MedLVM."""
    from dataclasses import replace

    from MedLVMLib.tasks import motion

    if not any(m.startswith("medlvm") for m in config.methods):
        return config
    specs = dict.fromkeys(s for s in map(model_spec, config.methods) if s)
    return replace(config, model=motion.resolve_model(config.model, config.device),
                   models=tuple((s, motion.resolve_model(s, config.device)) for s in specs))


def write_motion_report(result: EvalOutputs, out: Path, config: MotionEvalConfig, case_names: Sequence[str],
                        embed: bool = True) -> None:
    """Figure-3 plot (DSC per phase per organ, bootstrap CI bands), other per-phase plots, paired statistics
    (motion_paired.csv, `statistics.report_parts`), and report.html (pictures embedded, or linked by name beside
    it with embed=False), which opens with the cases where MedLVM is not better than copy-last."""
    from MedLVMLib.evaluation import report, statistics

    rows = result.rows
    dsc_png = report.plot_per_phase(rows, "dsc", out / "dsc_per_phase.png", ylabel="DSC", spread="ci",
                                    title="DSC per predicted phase (labels of the last observed phase propagated; "
                                    "band: bootstrap 95 % CI)")
    image_png = report.plot_per_phase(rows, "mae_hu", out / "mae_per_phase.png", ylabel="MAE inside body (HU)",
                                      title="Image error per predicted phase (band: bootstrap 95 % CI)", spread="ci")
    result.figures[:0] = [dsc_png, image_png]
    stats = statistics.report_parts(rows, out)
    model_id = getattr(config.model, "model_id", config.model) or "bundled default"
    sections = [("MedLVM against copy-last", stats.verdict_html)] if stats.verdict_html else []
    sections += [("Setup", _setup_html(config, case_names, model_id, result.seconds)),
                 ("DSC per predicted phase (Figure 3)", report.image_tag(dsc_png, embed)),
                 ("Paired differences per case", stats.paired_html)]
    organs = report.ordered(r["organ"] for r in rows if r["metric"] == "dsc")
    for organ in organs:
        sections.append((f"DSC: {organ}", report.table_html(rows, "dsc", organ)))
    for organ in organs:
        sections.append((f"HD95 (mm): {organ}", report.table_html(rows, "hd95_mm", organ, higher_is_better=False)))
    if "tumour" in organs:
        sections.append(("Tumour centroid error (mm)",
                         report.table_html(rows, "centroid_error_mm", "tumour", higher_is_better=False)))
    sections.append(("Diaphragm error (mm)", report.table_html(rows, "diaphragm_error_mm", "diaphragm", False)))
    if any(r["metric"] == "tre_mm" for r in rows):
        sections.append(("Landmark error, TRE (mm): mean / largest over the landmarks",
                         report.table_html(rows, "tre_mm", "landmarks", False)
                         + report.table_html(rows, "tre_max_mm", "landmarks", False)))
    for metric, higher in (("mae_hu", False), ("rmse_hu", False), ("psnr_db", True), ("ssim", True)):
        sections.append((f"{metric} inside the body", report.table_html(rows, metric, "body", higher)))
    sections.append(("Image error per predicted phase", report.image_tag(image_png, embed)))
    for fig in result.figures[2:]:
        sections.append((f"Differences: {fig.stem.replace('difference_', '')}", report.image_tag(fig, embed)))
    result.html = report.write_html(out / "report.html", "MedLVM motion evaluation", sections)


def _setup_html(config: MotionEvalConfig, case_names: Sequence[str], model_id: str, seconds: dict) -> str:
    import html

    timing = ", ".join(f"{m}: {s:.1f} s" for m, s in seconds.items())
    return (f"<p>{len(case_names)} cases ({html.escape(', '.join(case_names))}); phases 0..{config.n_observed - 1} "
            f"observed, the rest predicted. Model: {html.escape(str(model_id))}. Methods: "
            f"{html.escape(', '.join(config.methods))}. Mean seconds per case: {html.escape(timing)}.</p>"
            "<p>Organ masks on each predicted phase: the labels of the last observed phase propagated to the "
            "predicted image by deformable registration (SimpleITK demons, identical settings for every "
            "method), compared with the ground-truth labels of that phase. 'reference' applies the same "
            "propagation to the true image: the ceiling of this protocol. Image metrics inside the body "
            f"(ground-truth labels &gt; 0); PSNR and SSIM with the HU window {IMAGE_WINDOW}. Values: mean ± sd "
            "over cases; best per column in bold.</p>")
