"""`medlvm demo`: motion prediction on the bundled demo 4D CT with the bundled default model.

Writes into OUT (default ./medlvm-demo):
    input.seq.nrrd        the demo 4D CT (all 10 phases; phases 0-4 are given to the model)
    predicted.seq.nrrd    MedLVM's phases 5-9
    clinical/             tumour centroid trajectory (CSV + PNG), amplitude per axis, ITV, MIP
    demo.png              coronal slices: observed, predicted by MedLVM, copy-last, mirror, ground truth
    report.html           the picture plus MAE / SSIM per method and phase, and the tumour trajectory
    metrics.csv           the image metrics (organ DSC per method: `medlvm evaluate motion`)
A folder written by an earlier demo run is replaced; any other existing folder needs --overwrite.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "run motion prediction on the bundled demo 4D CT and write a small report"
MARKER = "demo.json"
DEMO_METHODS = ("copy-last", "mirror")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from MedLVMLib.commands import flags

    parser.add_argument("--out", type=flags.writable_output, default="medlvm-demo",
                        help="output folder (default ./medlvm-demo); a folder holding files MedLVM did not write "
                        "is never replaced")
    parser.add_argument("--model", default=None, help="model id or folder (default: the bundled model)")
    parser.add_argument("--device", default="auto", help="auto (a GPU if there is one) | cpu | cuda (default auto)")
    parser.add_argument("--observed", type=flags.whole(1, 9), default=5,
                        help="phases of the 10-phase demo 4D CT given to the model; it predicts the rest (default 5)")
    parser.add_argument("--seed", type=flags.SEED, default=0, help="random seed of the prediction (default 0)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing MedLVM output folder that is not a demo output")


def run(args: argparse.Namespace, progress=None) -> int:
    import json
    import time

    from MedLVMLib.errors import MedLVMError
    from MedLVMLib.outputs import atomic_path
    from MedLVMLib.progress import TqdmProgress
    from MedLVMLib.synthetic import phantom
    from MedLVMLib.tasks import motion

    progress = progress or TqdmProgress()
    out = Path(args.out)
    replace = args.overwrite or (out / MARKER).exists()
    if out.exists() and not replace:
        raise MedLVMError(f"'{out}' exists and is not a demo output; choose another --out or pass --overwrite")
    t0, cpu0 = time.perf_counter(), time.process_time()
    case = phantom.demo_case()
    model = motion.resolve_model(args.model, args.device)
    result = motion.predict_motion(case.phases, args.observed, model=model, seed=args.seed, progress=progress)
    baselines = {m: motion.predict_with_method(m, case.phases, args.observed).predicted for m in DEMO_METHODS}
    with atomic_path(out, overwrite=True) as tmp:
        tmp.mkdir(parents=True)
        summary = write_demo(tmp, case, result, baselines, args.observed, progress)
        summary.update(model=result.model_id, seconds=round(time.perf_counter() - t0, 1),
                       cpu_seconds=round(time.process_time() - cpu0, 1),
                       timings={k: round(v, 2) for k, v in result.timings.items()})
        (tmp / MARKER).write_text(json.dumps(summary, indent=1))
    progress.close()
    _print_summary(out, summary)
    return 0


def write_demo(folder: Path, case, result, baselines: dict, n_observed: int, progress) -> dict:
    """Every demo output into `folder`; returns a JSON-able summary."""
    import numpy as np

    from MedLVMLib.evaluation import motion as motion_eval
    from MedLVMLib.evaluation import report
    from MedLVMLib.imaging import registration
    from MedLVMLib.imaging.phases_io import write_phases
    from MedLVMLib.tasks import clinical, motion_guard

    write_phases(case.phases, folder / "input.seq.nrrd")
    write_phases(result.predicted, folder / "predicted.seq.nrrd")
    predictions = {"MedLVM": result.predicted, **baselines}
    rows = []  # image metrics only: the organ-mask protocol (a registration per phase and method) is
    for name, predicted in predictions.items():  # `medlvm evaluate motion`'s job and would double the run time
        for j, image in enumerate(predicted.array):
            p = n_observed + j
            rows += motion_eval.image_rows("demo", case.phases.labels[p], name, case.phases.array[p], image,
                                        case.labels[p] > 0)
    report.write_csv(rows, folder / "metrics.csv")
    labels = case.labels
    future = [registration.propagate_labels(labels[n_observed - 1], case.phases.array[n_observed - 1], image,
                                            case.phases.geometry) for image in result.predicted.array]
    everything = case.phases.select(list(range(n_observed)))
    everything.array = np.concatenate([everything.array, result.predicted.array])
    everything.labels = everything.labels + result.predicted.labels
    everything.index_values = list(everything.index_values) + list(result.predicted.index_values)
    all_labels = np.concatenate([labels[:n_observed], np.stack(future)])
    paths = clinical.write_clinical(folder / "clinical", everything, all_labels, case.label_names, n_observed)
    y = plot_demo(case, predictions, n_observed, folder / "demo.png")
    figures = _motion_figures(folder, case, predictions, future, n_observed, y)
    check = motion_guard.check_prediction(case.phases.select(list(range(n_observed))), result.predicted)
    means = report.summarize(rows, ("method", "metric"))
    summary = {"mae_hu": {m: round(means[(m, "mae_hu")][0], 1) for m in predictions},
               "ssim": {m: round(means[(m, "ssim")][0], 3) for m in predictions},
               "tumour_amplitude_mm": clinical.read_amplitude(paths["amplitude_csv"]),
               "motion_check": check.to_dict(), "motion": result.motion, "codes": result.codes,
               "projection": result.projections[0].describe() if result.projections else ""}
    summary["verdict"] = verdict(summary)
    write_demo_html(folder, rows, paths, figures, summary)
    return summary


def _motion_figures(folder: Path, case, predictions: dict, future_labels: list, n_observed: int, y: int) -> dict:
    """The predicted motion against the truth: breathing traces and difference images."""
    import numpy as np

    from MedLVMLib.evaluation import motion_figures
    from MedLVMLib.evaluation.motion import canonical_organ

    tumour = [i for i, n in case.label_names.items() if canonical_organ(n) == "tumour"]
    truth_si = tumour_si = None
    if tumour:
        geometry = case.phases.geometry
        truth_si = motion_figures.tumour_si_mm(case.labels, tumour[0], geometry)
        tumour_si = {"MedLVM": motion_figures.tumour_si_mm(np.stack(future_labels), tumour[0], geometry),
                     "copy-last": [truth_si[n_observed - 1]] * (case.phases.n_phases - n_observed)}
    return {"breathing": motion_figures.plot_breathing(case.phases, predictions, n_observed, folder / "motion.png",
                                                       truth_si, tumour_si),
            "difference": motion_figures.plot_differences(case.phases, predictions, n_observed, y,
                                                          folder / "difference.png")}


def verdict(summary: dict) -> list[str]:
    """What the demo shows, in words, for the top of the report and the terminal."""
    mae = summary["mae_hu"]
    lines = [f"MedLVM's predicted phases are {'better' if mae['MedLVM'] < mae['copy-last'] else 'NOT better'} than "
             f"copying the last observed phase (MAE in the body {mae['MedLVM']} vs {mae['copy-last']} HU)."]
    if summary.get("projection"):  # --motion observed, the default: where the model put the predicted phases
        lines.append(f"MedLVM's {summary['projection']}.")
    return lines + [f"Warning: {w}" for w in summary["motion_check"]["warnings"]]


def plot_demo(case, predictions: dict, n_observed: int, path: Path) -> int:
    """Grid of coronal slices through the tumour: observed phases, then each method's predicted phases and
    the ground truth (one row each). Returns the coronal plane shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from MedLVMLib.evaluation.motion import canonical_organ
    from MedLVMLib.imaging import frames

    tumour = [i for i, n in case.label_names.items() if canonical_organ(n) == "tumour"]
    where = np.argwhere(case.labels[n_observed - 1] == tumour[0]) if tumour else np.empty((0, 3))
    y = int(round(where[:, 1].mean())) if len(where) else case.phases.shape[1] // 2
    sx, _, sz = case.phases.geometry.spacing
    n_future = case.phases.n_phases - n_observed
    truth = case.phases.select(list(range(n_observed, case.phases.n_phases)))
    rows = [("observed", case.phases.select(list(range(n_observed))))] + list(predictions.items()) + \
        [("ground truth", truth)]
    ncol = max(n_observed, n_future)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(1.7 * ncol, 1.75 * len(rows)), dpi=110, squeeze=False)
    for r, (name, phases) in enumerate(rows):
        for c in range(ncol):
            ax = axes[r, c]
            ax.axis("off")
            if c < phases.n_phases:
                image = frames.to_frames(phases.array[c], "coronal")[y]
                ax.imshow(image, cmap="gray", vmin=-1000, vmax=400, aspect=sz / sx)
                ax.set_title(phases.labels[c], fontsize=7)
        axes[r, 0].text(-0.08, 0.5, name, transform=axes[r, 0].transAxes, rotation=90, ha="right", va="center",
                        fontsize=9)
    fig.suptitle(f"coronal slice y={y}: observed phases, then predicted phases per method", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return y


def write_demo_html(folder: Path, rows: list, clinical_paths: dict, figures: dict, summary: dict) -> None:
    import html

    from MedLVMLib.evaluation import report

    said = "".join(f"<p><b>{html.escape(line)}</b></p>" for line in summary["verdict"])
    sections = [("What this shows", said),
                ("Predicted motion against the ground truth", report.image_tag(figures["breathing"])),
                ("Where the predictions differ from the truth", report.image_tag(figures["difference"])),
                ("Observed and predicted phases", report.image_tag(folder / "demo.png")),
                ("MAE inside the body (HU)", report.table_html(rows, "mae_hu", "body", higher_is_better=False)),
                ("SSIM inside the body (HU window -1000..1000)", report.table_html(rows, "ssim", "body")),
                ("Tumour trajectory (observed + MedLVM)", report.image_tag(clinical_paths["trajectory_png"]))]
    report.write_html(folder / "report.html", "MedLVM demo: 4D CT motion prediction", sections)


def _print_summary(out: Path, summary: dict) -> None:
    print(f"model: {summary['model']}  ({summary['seconds']} s)")
    for line in summary["verdict"]:
        print(line)
    print("MAE inside the body (HU): " + ", ".join(f"{m} {v}" for m, v in summary["mae_hu"].items()))
    print("tumour motion amplitude (observed + MedLVM, mm): "
          + ", ".join(f"{k} {v}" for k, v in summary["tumour_amplitude_mm"].items()))
    for name in ("predicted.seq.nrrd", "input.seq.nrrd", "clinical", "demo.png", "report.html", "metrics.csv"):
        print(f"{name}: {out / name}")
