"""Checks of trained models, printed as figures and drawn as PNGs (for the model cards and docs/training/).

    python -m MedLVMLib.training.checks tokenizer MODEL_DIR [--data ../shared/data] [--out docs/training]
    python -m MedLVMLib.training.checks continuation MODEL_DIR [--seed 1000] [--out docs/training]
    python -m MedLVMLib.training.checks curves RUN_DIR [RUN_DIR ...] [--out docs/training]

tokenizer: reconstruction PSNR (HU window [-1000, 1000], i.e. peak = 2000 HU) of coronal slices of the real
CTs in the shared data folder, of a held-out phantom (seed 1000) and of natural validation images, at the
model resolution (the frames the transformer sees), plus a PNG of originals over reconstructions.
continuation: a held-out phantom's coronal slices, phases 0-4 given, 5-9 generated; MAE (HU) of the
prediction against the truth and against copying the last observed phase; a PNG grid.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from MedLVMLib.engine.config import PreprocessConfig
from MedLVMLib.paths import shared_data_dir

REAL_CT = ("4dlung_p113_phase40.nii.gz", "popi_phase00.nii.gz", "totalseg_abdomen_ct.nii.gz")


def psnr01(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of frames in [0, 1] (a window of width W maps to peak W): per-set MSE."""
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def coronal_frames(volume_hu: np.ndarray, preprocess: PreprocessConfig, size: int, min_mean: float = 0.08):
    """Coronal frames [N, size, size] in [0, 1] with some body in them (mean above `min_mean`)."""
    from MedLVMLib.tasks.common import volume_to_frames

    frames = volume_to_frames(volume_hu, "coronal", preprocess, size)
    keep = frames.reshape(len(frames), -1).mean(axis=1) > min_mean
    return frames[keep]


def _roundtrip(tokenizer, frames: np.ndarray, batch: int = 64) -> np.ndarray:
    """Frames [N, s, s] at the model resolution -> encode -> decode -> grey frames (channel mean)."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(frames), batch):
            x = torch.from_numpy(np.ascontiguousarray(frames[i:i + batch]))[:, None].expand(-1, 3, -1, -1)
            out.append(tokenizer.decode(tokenizer.encode(x.float())).mean(dim=1).numpy())
    return np.concatenate(out)


def tokenizer_report(folder: str, data_dir: Optional[Path], out: Optional[Path]) -> Dict[str, float]:
    """PSNR per source; writes tokenizer_recon.png and tokenizer_psnr.json to `out`."""
    import SimpleITK as sitk

    from MedLVMLib.engine.checkpoints.formats import load_checkpoint
    from MedLVMLib.synthetic import phantom
    from MedLVMLib.training import natural

    ckpt = load_checkpoint(folder)
    tokenizer, pre = ckpt.tokenizer, ckpt.preprocess
    size = tokenizer.config.resolution
    sets: Dict[str, np.ndarray] = {}
    for name in REAL_CT if data_dir is not None else ():
        path = Path(data_dir) / name
        if path.is_file():
            hu = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)
            sets[name.split(".")[0]] = coronal_frames(hu, pre, size)
    case = phantom.make_phantom(seed=1000)
    sets["phantom_seed1000"] = coronal_frames(np.asarray(case.phases.array[0]), pre, size)
    rng = np.random.default_rng(999)
    sets["natural_val"] = np.stack([natural.random_crop(rng, size, (0.15, 1.0)) for _ in range(64)])
    recon = {k: _roundtrip(tokenizer, v) for k, v in sets.items()}
    scores = {k: round(psnr01(sets[k], recon[k]), 2) for k in sets}
    scores["window_hu"] = [pre.hu_min, pre.hu_max]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "tokenizer_psnr.json").write_text(json.dumps(scores, indent=2) + "\n")
        _grid([np.concatenate([v[:: max(1, len(v) // 6)][:6], recon[k][:: max(1, len(v) // 6)][:6]])
               for k, v in sets.items()], out / "tokenizer_recon.png", list(sets), ncol=6)
    return scores


def continuation_report(folder: str, seed: int, out: Optional[Path], n_observed: int = 5,
                        n_future: int = 5, n_slices: int = 6) -> Dict[str, float]:
    """Generate phases n_observed.. of a held-out phantom's central coronal slices; MAE in HU."""
    from MedLVMLib.engine import lvm
    from MedLVMLib.synthetic import phantom

    model = lvm.load_model(folder, device="cpu")
    case = phantom.make_phantom(seed=seed)
    pre, size = model.preprocess, model.image_size
    from MedLVMLib.tasks.common import volume_to_frames

    vols = np.asarray(case.phases.array)  # (P, Z, Y, X)
    frames = np.stack([volume_to_frames(v, "coronal", pre, size) for v in vols])  # (P, N, s, s)
    mid = frames.shape[1] // 2
    rows = list(range(mid - n_slices // 2 * 3, mid + n_slices // 2 * 3, 3))[:n_slices]
    truth = frames[:, rows]  # (P, S, s, s)
    codes = lvm.encode_images(model, truth[:n_observed].reshape(-1, size, size)).reshape(n_observed, len(rows), -1)
    prompt = codes.transpose(1, 0, 2).reshape(len(rows), -1)  # (S, k * tpi)
    result = {}
    for mode, kwargs in (("greedy", {"greedy": True}), ("sampled", {"temperature": 1.0, "seed": 0})):
        gen = lvm.generate(model, prompt, n_future, **kwargs)  # (S, n_future, tpi)
        pred = lvm.decode_codes(model, gen.reshape(-1, gen.shape[-1])).reshape(len(rows), n_future, size, size)
        result[mode] = pred.transpose(1, 0, 2, 3)  # (n_future, S, s, s)
    hu = pre.hu_max - pre.hu_min
    future = truth[n_observed:n_observed + n_future]
    scores = {f"mae_hu_{m}": round(float(np.abs(result[m] - future).mean()) * hu, 1) for m in result}
    scores["mae_hu_copy_last"] = round(float(np.abs(truth[n_observed - 1][None] - future).mean()) * hu, 1)
    recon_last = lvm.decode_codes(model, codes[-1]).reshape(len(rows), size, size)
    scores["mae_hu_copy_last_reconstructed"] = round(float(np.abs(recon_last[None] - future).mean()) * hu, 1)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        name = f"continuation_{model.model_id}_seed{seed}"
        (out / f"{name}.json").write_text(json.dumps(scores, indent=2) + "\n")
        panels = [np.concatenate([truth[:, r], np.concatenate([truth[:n_observed, r], result["greedy"][:, r]]),
                                  np.concatenate([truth[:n_observed, r], result["sampled"][:, r]])])
                  for r in range(min(3, len(rows)))]
        _grid(panels, out / f"{name}.png", [f"slice {rows[r]}: truth / greedy / sampled" for r in range(len(panels))],
              ncol=n_observed + n_future)
    return scores


def loss_curves(runs: List[Path], out: Path) -> Path:
    """One panel per run: training loss (and PSNR for tokenizer runs) against step, from the CSV logs."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.2), squeeze=False)
    for ax, run in zip(axes[0], runs):
        files = sorted(Path(run).glob("logs/version_*/metrics.csv"))  # a resumed run adds a version
        rows = [r for f in files for r in csv.DictReader(open(f, newline="", encoding="utf-8"))]
        for key, colour in (("train/loss", "C0"), ("train/psnr", "C1")):
            pts = sorted((int(r["step"]), float(r[key])) for r in rows if r.get(key))
            if pts:
                side = ax if key.endswith("loss") else ax.twinx()
                side.plot(*zip(*pts), label=key, color=colour, lw=1)
                side.set_ylabel(key, fontsize=8, color=colour)
        ax.set_title(Path(run).name, fontsize=9)
        ax.set_xlabel("step")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "loss_curves.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _grid(blocks: List[np.ndarray], path: Path, titles: List[str], ncol: int) -> None:
    """Each block is [k * ncol, H, W] frames drawn as k rows; blocks stacked vertically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nrow = sum(int(np.ceil(len(b) / ncol)) for b in blocks)
    fig, axes = plt.subplots(nrow, ncol, figsize=(ncol * 1.2, nrow * 1.3), squeeze=False)
    r = 0
    for block, title in zip(blocks, titles):
        for i, frame in enumerate(block):
            axes[r + i // ncol, i % ncol].imshow(frame, cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_title(title, fontsize=7, loc="left")
        r += int(np.ceil(len(block) / ncol))
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m MedLVMLib.training.checks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("check", choices=["tokenizer", "continuation", "curves"])
    parser.add_argument("model", nargs="+", help="model folder (MedLVM format); run folders for `curves`")
    parser.add_argument("--data", type=Path, default=shared_data_dir())
    parser.add_argument("--seed", type=int, default=1000, help="held-out phantom seed (>= 1000)")
    parser.add_argument("--out", type=Path, default=Path("docs/training"))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.check == "curves":
        print(loss_curves([Path(p) for p in args.model], args.out))
    elif args.check == "tokenizer":
        data = args.data if args.data.is_dir() else None
        print(json.dumps(tokenizer_report(args.model[0], data, args.out), indent=2))
    else:
        print(json.dumps(continuation_report(args.model[0], args.seed, args.out), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
