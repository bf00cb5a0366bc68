"""MedLVMLib.evaluation.statistics: bootstrap intervals, paired differences, wins, the report's verdict;
MedLVMLib.evaluation.diaphragm: the image-based diaphragm error."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from MedLVMLib.errors import MedLVMError
from MedLVMLib.evaluation import diaphragm, statistics
from MedLVMLib.evaluation import motion as motion_eval


def test_bootstrap_ci_covers_the_true_mean_in_most_repetitions():
    """Normal(2, 1) samples of 12 cases: the 95 % interval holds 2 in roughly 95 % of 200 repetitions
    (percentile bootstrap under-covers a little at n = 12, so at least 85 %)."""
    rng = np.random.default_rng(123)
    hits = 0
    for repetition in range(200):
        interval = statistics.bootstrap_ci(rng.normal(2.0, 1.0, size=12), n_resamples=1000, seed=repetition)
        assert interval.low <= interval.mean <= interval.high and interval.n == 12
        hits += interval.low <= 2.0 <= interval.high
    assert 0.85 <= hits / 200 <= 0.99, hits


def test_bootstrap_ci_width_shrinks_with_more_cases_and_is_reproducible():
    rng = np.random.default_rng(0)
    small, large = rng.normal(0, 1, 8), rng.normal(0, 1, 200)
    width = [statistics.bootstrap_ci(x).high - statistics.bootstrap_ci(x).low for x in (small, large)]
    assert width[1] < 0.5 * width[0]
    assert statistics.bootstrap_ci(small) == statistics.bootstrap_ci(small)


@pytest.mark.parametrize("values, expected", [
    ([0.7], (0.7, 0.7, 0.7, 1)),  # one case: the interval is the point
    ([0.7, float("nan")], (0.7, 0.7, 0.7, 1)),  # NaN ignored
    ([3.0, 3.0, 3.0], (3.0, 3.0, 3.0, 3)),  # no spread
])
def test_bootstrap_ci_degenerate(values, expected):
    assert tuple(statistics.bootstrap_ci(values)) == pytest.approx(expected)


def test_bootstrap_ci_of_nothing_and_bad_level():
    interval = statistics.bootstrap_ci([float("nan")])
    assert interval.n == 0 and math.isnan(interval.mean) and math.isnan(interval.low)
    with pytest.raises(MedLVMError, match="level"):
        statistics.bootstrap_ci([1.0, 2.0], level=95)


def _rows(cases=("c0", "c1", "c2", "c3"), medlvm_gain=0.02, nan_case=None):
    """DSC (higher better) and diaphragm error (lower better) for medlvm, copy-last and mirror."""
    rows = []
    for k, case in enumerate(cases):
        for phase in ("50%", "60%"):
            values = {"copy-last": (0.80 + 0.01 * k, 4.0), "mirror": (0.85 + 0.01 * k, 2.0),
                      "medlvm": (0.80 + 0.01 * k + medlvm_gain * (1 if k != 1 else -1), 3.0 + 2.0 * (k == 1)),
                      "reference": (0.99, 0.0)}
            for method, (dsc, error) in values.items():
                if method == "medlvm" and case == nan_case:
                    dsc = float("nan")
                rows.append(dict(case=case, phase=phase, method=method, organ="lungs", metric="dsc", value=dsc))
                rows.append(dict(case=case, phase=phase, method=method, organ="diaphragm",
                                 metric="diaphragm_error_mm", value=error))
                rows.append(dict(case=case, phase=phase, method=method, organ="body", metric="mae_hu",
                                 value=10.0 * error))
    return rows


def _find(table, metric, method, comparison):
    match = [p for p in table if (p.metric, p.method, p.comparison) == (metric, method, comparison)]
    assert len(match) == 1
    return match[0]


def test_paired_differences_sign_wins_and_best_baseline():
    table = statistics.paired_differences(_rows())
    dsc = _find(table, "dsc", "medlvm", "copy-last")
    assert dsc.against == "copy-last" and dsc.n_cases == 4 and dsc.better_is == "higher"
    assert dsc.mean_difference == pytest.approx((0.02 * 3 - 0.02) / 4)
    assert (dsc.wins, dsc.losses, dsc.ties) == (3, 1, 0)
    assert dsc.ci_low <= dsc.mean_difference <= dsc.ci_high
    best = _find(table, "dsc", "medlvm", "best baseline")
    assert best.against == "mirror" and best.mean_difference < 0 and best.losses == 4
    error = _find(table, "diaphragm_error_mm", "medlvm", "copy-last")
    assert error.better_is == "lower" and error.mean_difference == pytest.approx((-1 * 3 + 1) / 4)
    assert (error.wins, error.losses) == (3, 1)
    assert _find(table, "diaphragm_error_mm", "mirror", "copy-last").wins == 4
    assert not [p for p in table if p.method == "reference" or p.method == p.against]


def test_missing_values_are_left_out_with_a_note():
    table = statistics.paired_differences(_rows(nan_case="c2"))
    dsc = _find(table, "dsc", "medlvm", "copy-last")
    assert dsc.n_cases == 3 and "left out: c2" in dsc.note
    assert _find(table, "diaphragm_error_mm", "medlvm", "copy-last").note == ""


def test_one_case_is_flagged():
    dsc = _find(statistics.paired_differences(_rows(cases=("c0",))), "dsc", "medlvm", "copy-last")
    assert dsc.n_cases == 1 and dsc.ci_low == dsc.ci_high == pytest.approx(dsc.mean_difference)
    assert "one case" in dsc.note


def test_verdict_names_the_cases_where_medlvm_is_not_better():
    sentences = statistics.not_better_sentences(_rows())
    assert len(sentences) == 1 and "c1" in sentences[0] and "not better than copy-last" in sentences[0]
    assert "diaphragm error 5 mm against 4 mm" in sentences[0] and "lungs DSC" in sentences[0]
    assert statistics.not_better_sentences(_rows(medlvm_gain=-0.05))[0].count("On case") == 1
    assert len(statistics.not_better_sentences(_rows(medlvm_gain=-0.05))) == 4


def test_write_motion_report_has_paired_csv_bands_and_verdict(tmp_path):
    rows = _rows()
    result = motion_eval.EvalOutputs(rows, tmp_path / "motion_metrics.csv")
    config = motion_eval.MotionEvalConfig(methods=("medlvm", "copy-last", "mirror"))
    motion_eval.write_motion_report(result, tmp_path, config, ["c0", "c1", "c2", "c3"])
    with open(tmp_path / "motion_paired.csv", newline="", encoding="utf-8") as f:
        paired = list(csv.DictReader(f))
    assert tuple(paired[0]) == statistics.PAIRED_COLUMNS
    row = [r for r in paired if (r["metric"], r["method"], r["comparison"]) == ("dsc", "medlvm", "copy-last")][0]
    assert (row["wins"], row["losses"]) == ("3", "1") and float(row["ci_low"]) <= float(row["ci_high"])
    page = result.html.read_text(encoding="utf-8")
    top = page.split("<h2>Setup</h2>")[0]
    assert "On case c1, medlvm is not better than copy-last" in top
    assert "95 % CI" in page and "Diaphragm error (mm)" in page
    assert (tmp_path / "dsc_per_phase.png").stat().st_size > 5000


def test_plot_per_phase_rejects_an_unknown_spread(tmp_path):
    from MedLVMLib.evaluation import report

    with pytest.raises(ValueError, match="spread"):
        report.plot_per_phase(_rows(), "dsc", tmp_path / "x.png", spread="iqr")
    intervals = report.phase_intervals([r for r in _rows() if r["metric"] == "dsc"])
    interval = intervals[("medlvm", "50%", "lungs")]
    assert interval.n == 4 and interval.low <= interval.mean <= interval.high


# ---------------------------------------------------------------------------------------------- diaphragm

def _thorax(base_k: float, blur_voxels: float = 0.0, shape=(40, 6, 6)) -> np.ndarray:
    """Tissue (40 HU) below a lung (-850 HU) whose base lies at continuous index base_k: partial volume only
    (a sharp edge) or an edge blurred by a Gaussian point-spread function of `blur_voxels` sd."""
    from scipy.special import erf

    k = np.arange(shape[0], dtype=np.float64)[:, None, None]
    if blur_voxels > 0:
        air = 0.5 * (1.0 + erf((k - base_k) / (blur_voxels * np.sqrt(2.0))))
    else:
        air = np.clip(k + 0.5 - base_k, 0.0, 1.0)  # fraction of each voxel above the base
    return np.broadcast_to(40.0 + air * (-850.0 - 40.0), shape).astype(np.float32)


@pytest.mark.parametrize("shift_voxels, tolerance_voxels", [(0.0, 1e-6), (1.0, 1e-6), (-3.0, 1e-6), (0.4, 0.35),
                                                         (2.5, 0.35), (-3.2, 0.35)])
def test_diaphragm_error_recovers_a_known_shift(shift_voxels, tolerance_voxels):
    """Whole-voxel shifts exactly; a sub-voxel part within a third of a voxel (the partial-volume estimate
    of a perfectly sharp edge)."""
    spacing_z = 2.5
    truth = _thorax(12.0)
    lungs = truth < -400
    error = diaphragm.diaphragm_error_mm(_thorax(12.0 + shift_voxels), truth, lungs, spacing_z)
    assert error == pytest.approx(abs(shift_voxels) * spacing_z, abs=tolerance_voxels * spacing_z + 1e-4)


def test_diaphragm_error_of_a_blurred_edge_is_accurate_and_grows_with_the_shift():
    truth = _thorax(12.0, blur_voxels=0.8)
    shifts = np.arange(0.0, 3.0, 0.2)
    errors = np.array([diaphragm.diaphragm_error_mm(_thorax(12.0 + s, 0.8), truth, truth < -400, 5.0) for s in shifts])
    assert np.all(np.diff(errors) > 0)
    assert np.allclose(errors, 5.0 * shifts, atol=0.1 * 5.0)


def test_diaphragm_error_ignores_density_change_and_needs_tall_lungs():
    truth = _thorax(12.0)
    darker = np.where(truth < -700, truth - 40.0, truth)  # inhale parenchyma, same geometry
    assert diaphragm.diaphragm_error_mm(darker, truth, truth < -400, 2.5) == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(diaphragm.diaphragm_error_mm(truth, truth, truth < -400, 2.5, search_mm=200.0))
    assert diaphragm.diaphragm_rows("c", "50%", "m", truth, truth, np.zeros_like(truth, bool), 2.5) == []
    with pytest.raises(MedLVMError, match="shapes differ"):
        diaphragm.diaphragm_error_mm(truth[:-1], truth, truth < -400, 2.5)
