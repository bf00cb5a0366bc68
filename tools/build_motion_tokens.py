"""Token sentences of breathing for the transformer, from the learned baselines' frames cache.

    python tools/build_motion_tokens.py                                   # runs/motion_tokens/tokens.npz
    python tools/build_motion_tokens.py --frames F.npy --limit 64 --out /tmp/t.npz   # a quick one
    python tools/build_motion_tokens.py --real-ct ../shared/data/totalseg_abdomen_ct.nii.gz --real-seeds 0 60

The frames cache (`tools/train_motion_baselines.py` writes it: coronal slices of the training phantoms,
seeds 0-159, on the model's working grid, [N, 10 phases, 64, 64] in [0, 1]) holds the frames that MedLVM's
motion task feeds the transformer at inference. Each slice position becomes `--rotations` sentences of 10
images: the first in the 4D CT order (phase 0 = end-inhale first, as the motion task prompts), the others
cyclic from a random start phase, so a sentence can begin anywhere in the cycle. `--real-ct` adds real anatomy:
the CT breathing with the synthetic breathing model, one draw per seed of `--real-seeds` (the motion
evaluation's real CTs are refused). `--mix` appends the
sentences of another token cache (video, analogy pairs) so the other in-context tasks are not forgotten.
The result is `data.cache` for `medlvm train transformer` (Resources/configs/transformer_tiny_ct_breathing.yaml).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

try:
    from MedLVMLib.progress import TqdmProgress
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from MedLVMLib.progress import TqdmProgress
from MedLVMLib.engine import lvm
from MedLVMLib.training import motion_baselines


def sentence_orders(n_sequences: int, n_phases: int, rotations: int, seed: int) -> np.ndarray:
    """[n_sequences * rotations, 2]: (sequence, start phase); rotation 0 starts at phase 0, the others at a
    random phase."""
    rng = np.random.default_rng(seed)
    rows = [(i, 0) for i in range(n_sequences)]
    for _ in range(rotations - 1):
        rows += [(i, int(rng.integers(1, n_phases))) for i in range(n_sequences)]
    return np.asarray(rows, dtype=np.int64)


def encode(model, frames: np.ndarray, progress) -> np.ndarray:
    """frames [N, P, S, S] in [0, 1] -> codes [N, P, tokens_per_image] int16, with the engine's encoder."""
    n, p = frames.shape[:2]
    codes = lvm.encode_images(model, np.asarray(frames, np.float32).reshape(n * p, *frames.shape[2:]),
                              progress=progress)
    return codes.astype(np.int16).reshape(n, p, -1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=Path, default=Path("runs/motion_baselines/frames_seeds0-160.npy"))
    ap.add_argument("--model", default="medlvm-tiny-ct", help="the tokenizer of this model (folder or id)")
    ap.add_argument("--rotations", type=int, default=2)
    ap.add_argument("--mix", type=Path, help="a token cache .npz whose sentences are appended")
    ap.add_argument("--stride", type=int, default=1, help="every STRIDE-th slice position (neighbours are alike)")
    ap.add_argument("--limit", type=int, help="only the first N slice positions (a quick run)")
    ap.add_argument("--real-ct", type=Path, action="append", default=[],
                    help="a real CT (NIfTI, labels beside it) to add breathing synthetically; repeatable")
    ap.add_argument("--real-seeds", type=int, nargs=2, default=(0, 40), metavar=("START", "STOP"),
                    help="breathing draws per real CT: seeds [START, STOP) (default 0 40)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/motion_tokens/tokens.npz"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    frames = np.load(args.frames, mmap_mode="r")
    frames = frames[:: args.stride]
    if args.limit is not None:  # 0: no phantom slices (e.g. real anatomy only, --mix the rest)
        frames = frames[: args.limit]
    for ct in args.real_ct:
        real = motion_baselines.build_real_frames(ct, tuple(args.real_seeds), workers=args.threads,
                                                  progress=TqdmProgress())
        print(f"{len(real)} slice sequences of {ct.name} (breathing seeds {args.real_seeds[0]}-"
              f"{args.real_seeds[1] - 1}), every {args.stride}")
        frames = np.concatenate([np.asarray(frames, np.float16), real[:: args.stride]])
    codes = encode(lvm.load_model(args.model, device="cpu"), frames, TqdmProgress())
    orders = sentence_orders(len(codes), codes.shape[1], args.rotations, args.seed)
    phases = (orders[:, 1:2] + np.arange(codes.shape[1])[None]) % codes.shape[1]
    sentences = codes[orders[:, :1], phases]  # (M, P, tpi)
    if args.mix:
        mixed = np.load(args.mix)["codes"]
        if mixed.shape[1:] != sentences.shape[1:]:
            raise SystemExit(f"--mix {args.mix}: sentences {mixed.shape[1:]} differ from {sentences.shape[1:]}")
        sentences = np.concatenate([sentences, mixed])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.stem + ".partial.npz")
    np.savez_compressed(tmp, codes=sentences.astype(np.int16), orders=orders)
    tmp.replace(args.out)
    print(f"{len(sentences)} sentences {sentences.shape[1:]} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
