"""tools/device_run.sh, the prepared GPU script, and its training recipe tools/device_train.py.

The dry run is the whole script on the CPU with tiny sizes and SimpleITK / pydicom made unimportable, as on the
GPU machine: what it returns must pass the device tool's limits (8 files, 16 MiB each, plain names), and the
model parts must rejoin into a folder that `load_model` loads.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from Testing.engine.scripts import load_script

REPO = Path(__file__).resolve().parents[2]
MAX_FILES, MAX_BYTES = 8, 16 * 2**20


def load_tool(name: str):
    return load_script("tools", name)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """(OUT folder, log) of one dry run of the whole script."""
    pytest.importorskip("pytorch_lightning")
    pytest.importorskip("transformers")
    pytest.importorskip("nrrd")
    base = tmp_path_factory.mktemp("device_run")
    env = {**os.environ, "MEDLVM_DEVICE_DRY_RUN": "1", "OUT": str(base / "out"),
           "MEDLVM_DEVICE_WORK": str(base / "work"), "PY": sys.executable}
    done = subprocess.run(["bash", str(REPO / "tools" / "device_run.sh")], env=env, cwd=REPO, capture_output=True,
                          text=True, encoding="utf-8", errors="replace", timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return base / "out", done.stdout


@pytest.mark.slow
def test_dry_run_returns_what_the_device_tool_can_bring_back(dry_run):
    out, log = dry_run
    files = [p for p in out.rglob("*") if p.is_file()]
    assert 5 <= len(files) <= MAX_FILES, sorted(p.name for p in files)
    for path in files:
        assert path.stat().st_size <= MAX_BYTES, path
        assert re.fullmatch(r"[A-Za-z0-9._-]+", path.name), path
        assert len(path.relative_to(out).parts) <= 3
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["failed_steps"] == [], log[-3000:]
    assert {s["name"] for s in summary["steps"] if s["status"] == 0} >= {"decode-tiny", "motion", "train"}
    assert summary["train"]["ok"] and summary["train"]["stages"]["transformer"]["steps"] >= 1
    assert (out / "curves.png").stat().st_size > 0
    assert "device_run.sh: dry run 1" in (out / "device_run.log").read_text(encoding="utf-8")


@pytest.mark.slow
def test_dry_run_benchmark_tables_have_their_rows(dry_run):
    out, _ = dry_run
    decode = (out / "decode.md").read_text(encoding="utf-8")
    rows = [line for line in decode.splitlines() if re.match(r"\| [12] \| bf16 / ", line)]
    assert len(rows) >= 3  # B 1 and 2 against eager HF, B 2 against the compiled-HF step
    assert all(float(row.split("|")[3]) > 0 for row in rows)
    motion = (out / "motion.md").read_text(encoding="utf-8")
    assert "**total per 4D CT**" in motion and "tokens/s" in motion
    assert re.search(r"\*\*\d+ % of the bandwidth bound\*\*", motion)


@pytest.mark.slow
def test_dry_run_model_parts_rejoin_into_a_loadable_model(dry_run, tmp_path):
    from MedLVMLib.api import load_model

    out, _ = dry_run
    parts = sorted(out.glob("model.tar.part*"))
    assert len(parts) >= 2  # ~28 MB: the split into 15 MB parts is exercised
    joined = b"".join(p.read_bytes() for p in parts)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert hashlib.sha256(joined).hexdigest() == summary["model"]["sha256"]
    with tarfile.open(fileobj=io.BytesIO(joined)) as tar:
        tar.extractall(tmp_path, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    folder = tmp_path / summary["model"]["folder"]
    model = load_model(folder, device="cpu")
    assert (model.transformer.config.dim, model.transformer.config.n_layer) == (320, 8)
    assert model.tokens_per_image == 64 and model.image_size == 64
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 32 * 2**20


def test_sentence_workers_build_the_library_sentences(tmp_path):
    """The background sentences, encoded job by job, equal training.data.build_sentences (the same token cache)."""
    import torch

    from MedLVMLib.engine.config import TokenizerConfig
    from MedLVMLib.engine.models.vqgan import VQGAN
    from MedLVMLib.training.data import build_sentences
    from MedLVMLib.training.recipe import build_recipe

    tool = load_tool("device_train")
    recipe = build_recipe({"kind": "transformer", "model": {"preset": "tiny"},
                           "data": {"seed": 3, "n_sentences": 6, "n_images": 4, "video": 0.3, "pairs": 0.3,
                                    "ct": 0.4, "ct_seeds": [0, 1]}})
    torch.manual_seed(0)
    tokenizer = VQGAN(TokenizerConfig.from_name("tiny")).eval()
    expected = build_sentences(recipe, tokenizer)
    pool = tool.phantom_pool((0, 1), 32, recipe.preprocess, workers=1)
    executor, futures = tool.start_sentences(recipe, 32, pool, workers=1)
    with executor:
        codes = tool.encode_sentences(futures, tokenizer, n_images=4)
    np.testing.assert_array_equal(codes, expected)


def test_phantom_pool_refuses_held_out_seeds():
    tool = load_tool("device_train")
    with pytest.raises(ValueError, match="held out"):
        tool.phantom_pool((990, 1001), 64, None, workers=1)


def test_grey_sentences_cross_the_pipe_as_one_channel():
    tool = load_tool("device_train")
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.random((3, 4, 1, 8, 8), dtype=np.float32), 3, axis=2)
    grey[1] = rng.random((4, 3, 8, 8), dtype=np.float32)  # a coloured (palette mask) sentence
    compact, colour = tool._compact(grey)
    assert compact.shape == (3, 4, 8, 8) and list(colour) == [1]
    np.testing.assert_array_equal(tool._expand(compact, colour), grey)


def test_recipes_point_the_transformer_at_the_new_tokenizer(tmp_path):
    tool = load_tool("device_train")
    tok, tr = tool.recipes(tmp_path, dry_run=False)
    assert tok.trainer.accelerator == tr.trainer.accelerator == "gpu"
    assert tr.data.tokenizer == str(tmp_path / "tokenizer" / "model") and tr.data.ct_seeds[1] <= 1000
    assert tok.model.codebook_size == tr.model.codebook_size
    assert tr.data.n_images * tok.model.tokens_per_image <= tr.model.block_size
