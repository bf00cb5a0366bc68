"""The CLI's progress output: live bars on a terminal, one line per finished stage in a log file."""

from __future__ import annotations

import io

from MedLVMLib.progress import TqdmProgress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_stages(progress: TqdmProgress) -> None:
    progress.stage("encoding images", 4)
    for _ in range(4):
        progress.advance()
    progress.log("a note")
    progress.stage("writing")
    progress.advance(3)
    progress.close()


def test_a_log_file_gets_one_line_per_stage():
    out = io.StringIO()
    run_stages(TqdmProgress(stream=out))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 3
    assert lines[0] == "a note"  # logged during the stage, which reports when it ends
    assert lines[1].startswith("encoding images: 4/4 in ") and lines[1].endswith(" s")
    assert lines[2].startswith("writing: 3 in ")


def test_a_terminal_gets_one_bar_per_stage_drawn_once_at_zero():
    out = Terminal()
    run_stages(TqdmProgress(stream=out))
    text = out.getvalue()
    assert text.count("encoding images:   0%") == 1  # the bar is not drawn twice when the stage starts
    assert "encoding images: 100%" in text and "4/4" in text
    assert "a note" in text


def test_disabled_prints_nothing():
    out = io.StringIO()
    run_stages(TqdmProgress(disable=True, stream=out))
    assert out.getvalue() == ""


def test_a_stage_without_a_total_reports_no_count_of_zero():
    out = io.StringIO()
    progress = TqdmProgress(stream=out)
    progress.stage("denoising")
    progress.stage("writing")
    progress.advance(2)
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("denoising: done in ") and ": 0 " not in lines[0]
    assert lines[1].startswith("writing: 2 in ")
