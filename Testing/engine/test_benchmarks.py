"""The decode benchmark runs end to end on a tiny preset and prints one row per engine and batch."""

from __future__ import annotations

import re

import pytest

from MedLVMLib.engine.models import cpu_kernels
from Testing.engine import scripts


def load_script(name: str):
    return scripts.load_script("benchmarks", name)


def test_decode_benchmark_rows(capsys):
    pytest.importorskip("transformers")
    decode = load_script("decode")
    assert decode.main(["--config", "tiny", "--prompt", "32", "--new-tokens", "4", "--batch", "1", "3",
                        "--dtype", "fp32", "bf16"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if re.match(r"\| [13] \|", line)]
    engines = ["kernels", "torch ops"] if cpu_kernels.unsupported_reason() is None else ["torch ops"]
    expected = {(b, d, e) for b in "13" for d in ("fp32", "bf16") for e in engines}
    found = set()
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        batch, engine = cells[0], cells[1]
        dtype, ops = engine.split(" / ")[0], engine.split(", ")[-1]
        found.add((batch, dtype, ops))
        assert float(cells[2]) > 0 and float(cells[4]) > 0  # ours and HF static tok/s
        assert cells[6].endswith("x")  # the ratio to HF static
    assert found == expected
    assert "copy bandwidth" in out and "read-only" in out
    assert "top-1 agreement" in out


def test_decode_benchmark_times_only_the_asked_hf_cache(capsys):
    pytest.importorskip("transformers")
    decode = load_script("decode")
    assert decode.main(["--config", "tiny", "--prompt", "16", "--new-tokens", "3", "--batch", "2", "--kernels", "off",
                        "--hf-cache", "static", "--hf-compile", "off"]) == 0
    out = capsys.readouterr().out
    cells = [c.strip() for c in next(r for r in out.splitlines() if r.startswith("| 2 |")).strip("|").split("|")]
    assert cells[3] == "-" and float(cells[4]) > 0 and cells[5] == "-"  # no HF default timing, no ratio to it
    assert "static cache eager" in out


def test_motion_benchmark_prints_stages_and_the_bandwidth_bound(capsys):
    motion = load_script("motion")
    assert motion.main(["--preset", "tiny", "--slices", "8", "--size", "32", "--phases", "3", "--observed", "2",
                        "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "**total per 4D CT**" in out and "tokens/s" in out
    number = r"([\d.]+(?:e[+-]\d+)?)"  # three significant digits: a fast machine's tiny bound is not 0.00
    bound = re.search(rf"bound of the generate stage: {number} s .*batches 4, 4\); measured {number} s", out)
    assert bound and 0 < float(bound.group(1)) < float(bound.group(2))


def test_baselines_benchmark_prints_every_superres_method(capsys):
    baselines = load_script("baselines")
    assert baselines.main(["--only", "superres", "--shape", "16", "32", "32"]) == 0
    out = capsys.readouterr().out
    for axis in ("z x2", "z x4", "xy x2"):
        for method in ("nearest", "linear", "cubic"):
            line = next(row for row in out.splitlines() if f"{axis} {method}" in row)
            assert float(line.split("MAE")[1].split("HU")[0]) >= 0.0


def test_motion_scoring_benchmark_compares_full_and_capped_registration(tmp_path, capsys):
    from MedLVMLib.imaging import cases
    from Testing.engine.evaluation.test_motion import tiny_case

    cases.save_case(tiny_case(0, n_phases=6, shape=(16, 24, 24)), tmp_path / "case0")
    bench = load_script("motion_scoring")
    assert bench.main([str(tmp_path / "case0"), "--observed", "4", "--voxels", "500"]) == 0
    out = capsys.readouterr().out
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if line.startswith("| mirror |") or line.startswith("| reference |")]
    metrics = {(r[0], r[1]) for r in rows}
    assert ("reference", "dsc (tumour)") in metrics and ("mirror", "mae_hu (body)") in metrics
    mae = [r for r in rows if r[1] == "mae_hu (body)"]
    assert all(float(r[4]) == 0.0 for r in mae)  # image metrics involve no registration
    assert "x faster" in out
