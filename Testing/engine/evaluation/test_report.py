"""Shared report pieces: long CSV round trip, summaries, tables, figures, a self-contained HTML page."""

from __future__ import annotations

import math

import numpy as np
import pytest

from MedLVMLib.evaluation import report


def _rows():
    rows = []
    for case in ("c0", "c1"):
        for phase, base in (("50%", 0.9), ("60%", 0.8)):
            for method, delta in (("medlvm", 0.05), ("copy-last", 0.0)):
                for organ in ("lungs", "tumour"):
                    value = base + delta + (0.02 if case == "c1" else 0.0)
                    rows.append(dict(case=case, phase=phase, method=method, organ=organ, metric="dsc", value=value))
    rows.append(dict(case="c0", phase="50%", method="medlvm", organ="body", metric="mae_hu", value=float("nan")))
    return rows


def test_csv_round_trip(tmp_path):
    path = report.write_csv(_rows(), tmp_path / "m.csv")
    back = report.read_csv(path)
    assert open(path, encoding="utf-8").readline().strip() == ",".join(report.COLUMNS)
    assert len(back) == len(_rows())
    assert back[0]["value"] == pytest.approx(0.95)
    assert math.isnan(back[-1]["value"])


def test_summarize_mean_sd_ignoring_nan():
    stats = report.summarize(_rows(), ("method", "phase", "organ", "metric"))
    mean, sd, n = stats[("medlvm", "50%", "lungs", "dsc")]
    assert (mean, n) == (pytest.approx(0.96), 2)
    assert sd == pytest.approx(0.01)
    assert stats[("medlvm", "50%", "body", "mae_hu")][2] == 0


@pytest.mark.parametrize("higher, best", [(True, "medlvm"), (False, "copy-last")])
def test_table_marks_best_method(higher, best):
    table = report.table_html(_rows(), "dsc", "lungs", higher_is_better=higher)
    bold_row = [line for line in table.splitlines() if "<b>" in line]
    assert bold_row and all(best in line for line in bold_row)
    assert "50%" in table and "60%" in table
    assert report.table_html(_rows(), "hd95", "lungs") == ""


def test_figures_and_html(tmp_path):
    fig = report.plot_per_phase(_rows(), "dsc", tmp_path / "dsc.png")
    truth = np.zeros((20, 30), np.float32)
    grid = report.plot_difference_grid(truth, {"a": truth + 100, "b": truth - 300}, tmp_path / "diff.png")
    assert fig.stat().st_size > 5000 and grid.stat().st_size > 5000
    sections = [("Figure", report.image_tag(fig)), ("Table", report.table_html(_rows(), "dsc", "lungs"))]
    page = report.write_html(tmp_path / "r.html", "Motion <eval>", sections)
    text = page.read_text(encoding="utf-8")
    assert "data:image/png;base64," in text and "&lt;eval&gt;" in text and "<table>" in text
    assert 'src="dsc.png"' in report.image_tag(fig, embed=False)
