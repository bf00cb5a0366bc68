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


def test_one_case_has_no_spread():
    one = [r for r in _rows() if r["case"] == "c0" and r["phase"] == "50%"]
    table = report.table_html(one, "dsc", "lungs")
    assert "±" not in table and "0.95" in table  # one value: its sd is unknown, not 0
    assert "± 0.01" in report.table_html(_rows(), "dsc", "lungs")  # two cases: mean ± sd
    assert report.mean_text(float("nan"), float("nan"), 0) == "-"


@pytest.mark.parametrize("shape, spacing", [((48, 256), (1.95, 3.0)), ((48, 160), (2.125, 5.5)),
                                            ((60, 40), (1.0, 1.0))])
def test_difference_grid_keeps_the_physical_aspect_and_fills_the_figure(tmp_path, monkeypatch, shape, spacing):
    """A coronal plane (rows: slices of thickness sz, columns: pixels of width sx) is drawn with its physical
    height / width, and the panels fill the figure instead of lying as thin strips in a tall, empty one."""
    import matplotlib.pyplot as plt

    boxes = {}
    save = plt.Figure.savefig

    def spy(fig, *args, **kwargs):
        save(fig, *args, **kwargs)
        box = fig.axes[0].get_window_extent()
        boxes.update(ratio=box.width / box.height, share=2 * box.height / (fig.get_size_inches()[1] * fig.dpi))

    monkeypatch.setattr(plt.Figure, "savefig", spy)
    truth = np.zeros(shape, np.float32)
    sx, sz = spacing
    report.plot_difference_grid(truth, {"a": truth, "b": truth}, tmp_path / "g.png", aspect=sz / sx)
    assert boxes["ratio"] == pytest.approx(shape[1] * sx / (shape[0] * sz), rel=0.02)
    assert boxes["share"] > 0.45  # two rows of panels take most of the figure's height
