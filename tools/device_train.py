"""The GPU training recipe of tools/device_run.sh: a tokenizer and a ~10M-parameter transformer for 4D CT motion,
trained on data made on the machine, inside a wall-clock deadline.

    python tools/device_train.py --work DIR --deadline EPOCH_SECONDS      # on the GPU machine
    python tools/device_train.py --work DIR --dry-run                     # 2 + 1 steps on the CPU, tiny data

1. phantoms: the 4D CT phantoms of data.ct_seeds (all < 1000) as coronal slices, one phantom per CPU core;
2. the transformer's sentences are made in background processes (they need no tokenizer) while
3. the tokenizer trains (Resources/configs/tokenizer_tiny_gpu.yaml) on images made by DataLoader workers;
4. the sentences are encoded by the new tokenizer into the token cache, in the same batches as
   `medlvm train transformer` would (`encode_sentences` equals `training.data.build_sentences`);
5. the transformer trains from that cache (Resources/configs/transformer_tiny_ct_gpu.yaml);
6. written to --work: export/<export_id>/ (tokenizer + transformer, MedLVM format: what comes home),
   curves.png (loss and PSNR against step) and train.json (steps, tokens, seconds of every stage).

Each training stage gets `trainer.max_minutes` from the time left before --deadline: Lightning stops cleanly and
the model is exported. train.json is written even when a stage fails.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing (the GPU machine)
    sys.path.insert(0, str(REPO))

from MedLVMLib.progress import TqdmProgress  # noqa: E402
from MedLVMLib.training import corpus  # noqa: E402
from MedLVMLib.training.recipe import Recipe, load_recipe, with_trainer  # noqa: E402

CONFIGS = REPO / "Resources" / "configs"
TOKENIZER_RECIPE = CONFIGS / "tokenizer_tiny_gpu.yaml"
TRANSFORMER_RECIPE = CONFIGS / "transformer_tiny_ct_gpu.yaml"
TOKENIZER_SHARE = 0.35  # of the training time left once the phantoms exist; the transformer gets the rest
RESERVE_S = 35.0  # encoding the sentences, two Lightning start-ups, export and curves
EXPORT_RESERVE_S = 12.0  # after the transformer: export, curves, train.json
SENTENCE_BATCH_IMAGES = 256  # images per encode call, as training.data.build_sentences
# --dry-run: the recipes' models (the export keeps its real size) on the CPU, a few steps on tiny data
DRY_RUN = ["trainer.accelerator=cpu", "trainer.precision=32", "trainer.max_minutes=0", "trainer.num_workers=0",
           "trainer.log_every_n_steps=1", "data.ct_seeds=[0, 2]"]
DRY_RUN_TOKENIZER = DRY_RUN + ["trainer.max_steps=2", "trainer.batch_size=2", "trainer.num_workers=1"]
DRY_RUN_TRANSFORMER = DRY_RUN + ["trainer.max_steps=1", "trainer.batch_size=2", "data.n_sentences=4",
                                 "data.n_images=4"]

_FORK = multiprocessing.get_context("fork")  # workers inherit the phantom pool instead of receiving it
_POOL: Optional[corpus.CTPool] = None  # the phantoms of the sentence workers (set before they fork)


def recipes(work: Path, dry_run: bool) -> tuple:
    """(tokenizer recipe, transformer recipe) with their run folders under `work`."""
    tok_sets = [f"trainer.out={work / 'tokenizer'}"] + (DRY_RUN_TOKENIZER if dry_run else [])
    tr_sets = [f"trainer.out={work / 'transformer'}", f"data.tokenizer={work / 'tokenizer' / 'model'}",
               f"data.cache={work / 'tokens.npz'}"] + (DRY_RUN_TRANSFORMER if dry_run else [])
    return (load_recipe(TOKENIZER_RECIPE, tok_sets, expect_kind="tokenizer"),
            load_recipe(TRANSFORMER_RECIPE, tr_sets, expect_kind="transformer"))


def _phantom_frames(job: tuple) -> np.ndarray:
    seed, size, preprocess = job
    return corpus.CTPool([seed], size, preprocess).frames[0]


def phantom_pool(seeds: tuple, size: int, preprocess, workers: int) -> corpus.CTPool:
    """`corpus.CTPool(range(*seeds), size, preprocess)`, one phantom per process: the same frames, in order."""
    start, stop = int(seeds[0]), int(seeds[1])
    if stop > corpus.HELD_OUT_SEED_START:
        raise ValueError(f"phantom seeds >= {corpus.HELD_OUT_SEED_START} are held out for evaluation: {list(seeds)}")
    pool = corpus.CTPool([], size, preprocess)
    with ProcessPoolExecutor(max(1, workers), mp_context=_FORK) as executor:
        pool.frames = list(executor.map(_phantom_frames, [(s, size, preprocess) for s in range(start, stop)]))
    return pool


def use_phantom_pool(pool: corpus.CTPool, seeds: tuple, size: int, preprocess) -> None:
    """Let the tokenizer's data module take `pool` instead of building the same phantoms again in one process
    (training.data builds its pool serially); any other request still goes to the library."""
    from MedLVMLib.training import data

    build = data.ct_pool_for

    def ct_pool_for(want_seeds, want_size: int, want_preprocess):
        if (tuple(want_seeds), want_size, want_preprocess) == (tuple(seeds), size, preprocess):
            return pool
        return build(want_seeds, want_size, want_preprocess)

    data.ct_pool_for = ct_pool_for


def _compact(batch: np.ndarray) -> tuple:
    """(n, T, 3, H, W) -> the first channel (n, T, H, W) plus {row: sentence} of the coloured ones (palette
    masks): grey sentences cross the process pipe at a third of their bytes."""
    colour = {i: s for i, s in enumerate(batch) if not (s == s[:, :1]).all()}
    return np.ascontiguousarray(batch[:, :, 0]), colour


def _expand(grey: np.ndarray, colour: dict) -> np.ndarray:
    out = np.repeat(grey[:, :, None], 3, axis=2)
    for row, sentence in colour.items():
        out[row] = sentence
    return out


def _sentences(job: tuple) -> tuple:
    """Sentences of `indices`, each from the generator training.data gives index i: default_rng([seed, i])."""
    seed, indices, size, n_images, weights, phase0 = job
    rngs = (np.random.default_rng([int(seed), int(i)]) for i in indices)
    return _compact(np.stack([corpus.sentence(rng, size, n_images, weights, _POOL, phase0) for rng in rngs]))


def start_sentences(recipe: Recipe, size: int, pool: Optional[corpus.CTPool], workers: int):
    """Submit the sentences of `recipe.data`, cut as build_sentences cuts them, to background processes.

    Returns: (executor, futures in sentence order).
    """
    global _POOL
    _POOL = pool
    d = recipe.data
    per_job = max(1, SENTENCE_BATCH_IMAGES // d.n_images)
    weights = {"video": d.video, "pairs": d.pairs, "ct": d.ct}
    jobs = [(d.seed, range(i, min(i + per_job, d.n_sentences)), size, d.n_images, weights, d.ct_phase0)
            for i in range(0, d.n_sentences, per_job)]
    executor = ProcessPoolExecutor(max(1, workers), mp_context=_FORK)
    return executor, [executor.submit(_sentences, job) for job in jobs]


def encode_sentences(futures: list, tokenizer, n_images: int) -> np.ndarray:
    """int16 codes [N, n_images, tokens_per_image] of the sentences of `futures`, one encode call per job."""
    import torch

    device = next(tokenizer.parameters()).device
    tokenizer.eval()
    out = []
    for future in futures:
        images = _expand(*future.result())
        flat = torch.from_numpy(images.reshape((-1,) + images.shape[2:]))  # (n*T, 3, H, W)
        with torch.no_grad():
            codes = tokenizer.encode(flat.to(device)).cpu()  # (n*T, h, w)
        out.append(codes.reshape(len(images), n_images, -1).numpy().astype(np.int16))
    return np.concatenate(out)


def fit_within(recipe: Recipe, seconds: Optional[float]):
    """Train `recipe`; with `seconds`, Lightning stops after that long (at least 10 s) and still exports."""
    from MedLVMLib.training.run import fit

    if seconds is not None:
        recipe = with_trainer(recipe, max_minutes=max(seconds, 10.0) / 60.0)
    return fit(recipe, progress=TqdmProgress(), enable_progress_bar=False)


def _fit_info(result, recipe: Recipe, tokens_per_step: int = 0) -> dict:
    t = recipe.trainer
    info = {"steps": result.global_step, "wall_s": round(result.wall_s, 1), "max_minutes": round(t.max_minutes, 2),
            "batch_size": t.batch_size, "metrics": {k: round(v, 4) for k, v in result.metrics.items()}}
    if tokens_per_step:
        info["tokens_seen"] = result.global_step * t.batch_size * t.accumulate * tokens_per_step
    return info


def train(work: Path, deadline: float, dry_run: bool, info: dict) -> None:
    """Stages 1-6 of the module docstring; `info` collects what train.json reports."""
    import torch

    tok_recipe, tr_recipe = recipes(work, dry_run)
    cpus = os.cpu_count() or 1
    size, d = tok_recipe.model.resolution, tr_recipe.data
    info.update(cpus=cpus, tokenizer_recipe=str(TOKENIZER_RECIPE.relative_to(REPO)),
                transformer_recipe=str(TRANSFORMER_RECIPE.relative_to(REPO)), stages={})
    stages = info["stages"]

    t0 = time.perf_counter()
    pool = phantom_pool(d.ct_seeds, size, tr_recipe.preprocess, cpus) if d.ct > 0 else None
    stages["phantoms"] = {"seconds": round(time.perf_counter() - t0, 1), "seeds": list(d.ct_seeds), "workers": cpus}
    sentence_workers = max(1, cpus - tok_recipe.trainer.num_workers - 2)
    executor, futures = start_sentences(tr_recipe, size, pool, sentence_workers)
    t_sentences = time.perf_counter()
    try:
        if pool is not None:
            use_phantom_pool(pool, d.ct_seeds, size, tr_recipe.preprocess)
        torch.backends.cudnn.benchmark = True  # fixed image sizes: pick the fastest convolutions once
        torch.set_float32_matmul_precision("high")  # TF32 for what autocast leaves in fp32
        budget = None if dry_run else TOKENIZER_SHARE * (deadline - time.time() - RESERVE_S)
        tok = fit_within(tok_recipe, budget)
        stages["tokenizer"] = _fit_info(tok, tok_recipe)

        t0 = time.perf_counter()
        from MedLVMLib.training.run import load_parts

        device = "cuda" if torch.cuda.is_available() and not dry_run else "cpu"
        codes = encode_sentences(futures, load_parts(str(tok.export_dir))[0].to(device), d.n_images)
    finally:
        executor.shutdown(cancel_futures=True)
    np.savez(d.cache, codes=codes)
    stages["sentences"] = {"n": int(codes.shape[0]), "images": d.n_images, "workers": sentence_workers,
                           "ready_after_s": round(t0 - t_sentences, 1),
                           "encode_s": round(time.perf_counter() - t0, 1), "cache_mb": round(codes.nbytes / 1e6, 1)}

    budget = None if dry_run else deadline - time.time() - EXPORT_RESERVE_S
    tr = fit_within(tr_recipe, budget)
    stages["transformer"] = _fit_info(tr, tr_recipe, d.n_images * tok_recipe.model.tokens_per_image - 1)
    export_and_curves(work, tok.run_dir, tr, tr_recipe, info)


def export_and_curves(work: Path, tokenizer_run: Path, result, recipe: Recipe, info: dict) -> None:
    from MedLVMLib.training.checks import loss_curves

    folder = work / "export" / (recipe.trainer.export_id or "model")
    shutil.rmtree(folder.parent, ignore_errors=True)
    shutil.copytree(result.export_dir, folder)
    info["model"] = {"folder": folder.name, "files": {f.name: f.stat().st_size for f in sorted(folder.iterdir())}}
    shutil.move(str(loss_curves([tokenizer_run, result.run_dir], work)), work / "curves.png")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (run folders, cache, export)")
    parser.add_argument("--deadline", type=float, default=None,
                        help="time.time() by which everything is written (default: 5 minutes from now)")
    parser.add_argument("--dry-run", action="store_true",
                        help="2 tokenizer steps and 1 transformer step on the CPU, tiny data (full-size models)")
    args = parser.parse_args(argv)
    deadline = args.deadline or time.time() + 300.0
    args.work.mkdir(parents=True, exist_ok=True)
    info: dict = {"dry_run": args.dry_run, "seconds_left_at_start": round(deadline - time.time(), 1)}
    try:
        train(args.work, deadline, args.dry_run, info)
        info["ok"] = True
    except BaseException as exc:  # train.json says where it stopped; the exit status says it failed
        info.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        (args.work / "train.json").write_text(json.dumps(info, indent=2) + "\n")
        print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
