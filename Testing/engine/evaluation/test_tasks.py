"""evaluate_tasks.py: metric rows against hand-computed cases, example-slice choice, and small end-to-end runs."""

from __future__ import annotations

import numpy as np
import pytest

from MedLVMLib.engine import lvm
from MedLVMLib.errors import MedLVMError
from MedLVMLib.evaluation import report
from MedLVMLib.evaluation.common import (
    TaskEvalConfig,
    case_names,
    image_cases,
    image_rows,
    markdown_table,
    rerender_report,
)
from MedLVMLib.evaluation.denoise import evaluate_denoise
from MedLVMLib.evaluation.segment import evaluate_segment, example_slices, mask_rows
from MedLVMLib.evaluation.superres import evaluate_superres, evaluation_planes


def test_example_slices_span_first_to_last_labelled_slice():
    labels = np.zeros((20, 4, 4), np.uint8)
    labels[3:15, 1, 1] = 1
    assert example_slices(labels, 4) == [3, 7, 11, 14]


def test_mask_rows_by_hand():
    truth = np.zeros((1, 4, 8), np.uint8)
    truth[0, :, 0:4] = 1  # 16 voxels
    pred = np.zeros_like(truth)
    pred[0, :, 2:6] = 1  # shifted by 2 columns: overlap 8
    rows = mask_rows("c", "slices", "m", truth, pred, {1: "box", 2: "absent"}, (1.0, 1.0, 1.0),
                                    np.ones(truth.shape, bool))
    values = {(r["organ"], r["metric"]): r["value"] for r in rows}
    assert values[("box", "dsc")] == pytest.approx(0.5)
    assert values[("box", "hd95_mm")] == pytest.approx(2.0)
    assert values[("absent", "dsc")] == 1.0 and np.isnan(values[("absent", "hd95_mm")])


def test_image_rows_by_hand():
    truth = np.full((3, 8, 8), -1000.0, np.float32)
    truth[:, 2:6, 2:6] = 0.0
    image = truth + 20.0
    values = {r["metric"]: r["value"] for r in image_rows("c", "s", "m", truth, image)}
    # PSNR = 10 log10(2000^2 / 20^2) = 40 dB (voxels at -1000 + 20 stay inside the window)
    assert values["psnr_db"] == pytest.approx(40.0, abs=1e-3)
    assert values["mae_hu"] == pytest.approx(20.0)


def test_evaluation_planes_inside_the_body():
    volume = np.full((4, 30, 10), -1000.0, np.float32)
    volume[:, 10:20] = 0.0
    planes = evaluation_planes(volume, 3)
    assert len(planes) == 3 and all(10 <= p <= 19 for p in planes)


@pytest.fixture(scope="module")
def tiny_config():
    return TaskEvalConfig(model=lvm.random_model("tiny"), n_phantoms=1, real=False, n_phases=2,
                                         n_slices=1, photons=(1e4,), n_planes=2)


@pytest.mark.slow
@pytest.mark.parametrize("task, methods, metric", [
    ("segment", ("medlvm", "nearest"), "dsc"),
    ("denoise", ("medlvm", "tv"), "psnr_db"),
    ("superres", ("medlvm", "linear"), "ssim"),
])
def test_small_evaluations_write_csv_figures_and_html(tmp_path, tiny_config, task, methods, metric):
    from dataclasses import replace

    config = replace(tiny_config, methods=methods)
    evaluate = {"segment": evaluate_segment, "denoise": evaluate_denoise, "superres": evaluate_superres}[task]
    rows = evaluate(tmp_path, config)
    assert {r["method"] for r in rows} >= set(methods)
    csv_rows = report.read_csv(tmp_path / f"{task}_metrics.csv")
    assert len(csv_rows) == len(rows) and any(r["metric"] == metric for r in csv_rows)
    assert (tmp_path / "report.html").stat().st_size > 1000
    assert len(list(tmp_path.glob("*.png"))) >= 2
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert all(f"| {m} |" in summary for m in methods)
    rerender_report(tmp_path, task, "tiny")
    assert "tiny" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_baseline_order_on_the_simplest_denoising_case(tmp_path):
    config = TaskEvalConfig(methods=("nlm",), n_phantoms=1, real=False, n_slices=1, photons=(2.5e3,))
    rows = evaluate_denoise(tmp_path, config)
    psnr = {r["method"]: r["value"] for r in rows if r["metric"] == "psnr_db"}
    assert psnr["nlm"] > psnr["noisy input"]  # a real denoiser beats the noisy input it starts from


def test_real_data_cases_are_found(shared_data):
    config = TaskEvalConfig(shared_data=shared_data, n_phantoms=0)
    names = [c[0] for c in image_cases(config, 1, None)]
    assert names == ["real-totalseg-abdomen", "real-4dlung-p113"]


def test_markdown_table_means_over_cases():
    rows = [{"case": c, "phase": "s", "method": "m", "organ": "o", "metric": "dsc", "value": v}
            for c, v in (("a", 0.5), ("b", 0.7))]
    table = markdown_table(rows, "dsc", "o").splitlines()
    assert table[0] == "| method | s |" and table[2] == "| m | 0.6 |"


@pytest.mark.parametrize("evaluate", [evaluate_segment, evaluate_denoise, evaluate_superres])
def test_no_cases_is_refused_before_anything_is_made(tmp_path, evaluate):
    config = TaskEvalConfig(methods=("nearest",), n_phantoms=0, real=False)
    with pytest.raises(MedLVMError, match="no cases to evaluate: --phantoms 0 and --no-real"):
        evaluate(tmp_path / "out", config)
    assert list(tmp_path.iterdir()) == []  # no report folder, no stray CSV


def test_case_names_without_making_the_cases(tmp_path, shared_data):
    assert case_names(TaskEvalConfig(n_phantoms=2, real=False)) == ["phantom-1000", "phantom-1001"]
    assert case_names(TaskEvalConfig(n_phantoms=0, shared_data=tmp_path)) == []
    assert case_names(TaskEvalConfig(n_phantoms=0, shared_data=shared_data)) == ["real-totalseg-abdomen",
                                                                                 "real-4dlung-p113"]


def test_task_warnings_are_listed_at_the_top_of_the_report(tmp_path):
    from types import SimpleNamespace

    from MedLVMLib.evaluation.common import labelled_warnings, metric_row, write_task_report

    result = SimpleNamespace(warnings=["label 9 (vertebra): on no example slice, so not segmented"])
    warnings = labelled_warnings("phantom-1000", "medlvm", result) + labelled_warnings("x", "nearest", object())
    assert warnings == ["phantom-1000, medlvm: label 9 (vertebra): on no example slice, so not segmented"]
    rows = [metric_row("phantom-1000", "slices", m, "lungs", metric, v)
            for m in ("medlvm", "nearest") for metric, v in (("dsc", 0.9), ("hd95_mm", 2.0))]
    table = [("dsc", True, "DSC"), ("hd95_mm", False, "HD95 (mm)")]
    page = write_task_report(tmp_path, "segment", rows, [], {}, None, TaskEvalConfig(), table, warnings).read_text()
    assert page.index("Warnings") < page.index("<table") and "label 9 (vertebra): on no example slice" in page
    quiet = write_task_report(tmp_path, "segment", rows, [], {}, None, TaskEvalConfig(), table).read_text()
    assert "Warnings" not in quiet
