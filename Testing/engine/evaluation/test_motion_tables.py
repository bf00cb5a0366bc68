"""tools/motion_tables.py: the docs' tables from a motion report folder."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from Testing.engine.scripts import load_script


@pytest.fixture(scope="module")
def tool():
    return load_script("tools", "motion_tables")


def _write(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_group_means_use_the_late_phases_and_the_right_organ(tool, tmp_path, capsys):
    rows = []
    for case, base in (("phantom-1000", 1.0), ("phantom-1001", 3.0), ("real-popi", 10.0)):
        for phase, extra in (("50%", 100.0), ("60%", 0.0), ("90%", 2.0)):  # 50 % is left out by default
            rows.append(dict(case=case, phase=phase, method="copy-last", organ="diaphragm",
                             metric="diaphragm_error_mm", value=base + extra))
            rows.append(dict(case=case, phase=phase, method="copy-last", organ="liver", metric="dsc", value=0.1))
            rows.append(dict(case=case, phase=phase, method="copy-last", organ="lungs", metric="dsc", value=0.9))
    _write(tmp_path / "motion_metrics.csv", rows)
    paired = [dict(metric="diaphragm_error_mm", organ="diaphragm", method="rmsim", comparison="copy-last",
                   against="copy-last", n_cases=3, mean_difference=-1.234, ci_low=-2.0, ci_high=0.25, wins=3,
                   losses=0, ties=0, better_is="lower", note="")]
    _write(tmp_path / "motion_paired.csv", paired)
    assert tool.main([str(tmp_path), "--methods", "copy-last,rmsim"]) == 0
    out = capsys.readouterr().out
    assert "| 2 phantoms | copy-last | 3.00 | 0.900 | - | - | - |" in out  # mean of 1, 3, 3, 5
    assert "| 1 real anatomy | copy-last | 11.00 | 0.900 |" in out
    assert "| rmsim | -1.23 [-2.00, +0.25], 3 / 0 (n 3) |" in out
    assert "second-model" not in out
    assert tool.main([str(tmp_path), "--methods", "copy-last", "--by-case"]) == 0
    out = capsys.readouterr().out
    assert "| phantom-1000 | copy-last | 2.00 | 0.900 |" in out and "| phantom-1001 | copy-last | 4.00 |" in out
    assert "| real-popi | copy-last | 11.00 |" in out and "phantoms" not in out
