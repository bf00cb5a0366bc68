"""Train the learned motion baselines (ConvLSTM, RMSim-style) on training phantoms and write their model folders.

    python tools/train_motion_baselines.py                       # both kinds, shipped into Resources/models/baselines
    python tools/train_motion_baselines.py --kind rmsim --minutes 2 --seeds 0 20 --out /tmp/baselines   # a quick one

Run it with the machine to itself. The frames are built once (phantoms in worker processes) and cached as
.npy in the run folder, so a second kind, or a rerun, does not rebuild them. Each model folder gets
config.json, model.safetensors and README.md (the model card: data, steps, minutes, final losses).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

try:
    from MedLVMLib.baselines import learned_motion
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from MedLVMLib.baselines import learned_motion
from MedLVMLib.progress import TqdmProgress
from MedLVMLib.training import motion_baselines

CARD = """# {kind}: learned motion baseline of MedLVM

{what}

- Architecture: 2D sequence-to-sequence ConvLSTM (`MedLVMLib/baselines/learned_motion.py`), hidden {hidden},
  frames {size} x {size} of coronal slices on the model's working grid, {params:,} parameters.
- Data: breathing phantoms `synthetic.phantom.make_phantom(seed)` for seeds {seeds[0]}-{last} (evaluation
  phantoms are seeds >= 1000 and were not used), {sequences:,} slice positions, phases 0-4 in, 5-9 out.
- Training: {steps} steps of batch {batch} in {minutes} min on CPU (`python tools/train_motion_baselines.py
  --kind {kind}`); final L1 (change-weighted, [0, 1] frames) {l1:.4f} against {copy:.4f} for copy-last.
- Differences from the published model: 2D instead of 3D, about 0.1 M parameters, synthetic training data
  only, no anterior-posterior motion (coronal slices).
- Evaluate: `medlvm evaluate motion --make-phantoms DATA OUT --methods copy-last,{kind}` (docs/motion/).
"""

WHAT = {
    "convlstm": "Predicts the future phases' images directly (image in, images out), after Shi et al. 2015.",
    "rmsim": "Predicts a displacement field per future phase and warps the last observed phase with it "
             "(after Lee et al., RMSim, PMB 68(4) 2023).",
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=(*learned_motion.KINDS, "both"), default="both")
    parser.add_argument("--seeds", type=int, nargs=2, default=[0, 160], metavar=("START", "STOP"))
    parser.add_argument("--minutes", type=float, default=12.0, help="wall-clock limit per kind")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=None, help="parent folder (default: the shipped models)")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/motion_baselines"))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    kinds = learned_motion.KINDS if args.kind == "both" else (args.kind,)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    cache = args.run_dir / f"frames_seeds{args.seeds[0]}-{args.seeds[1]}.npy"
    base = motion_baselines.MotionTrainConfig(seeds=tuple(args.seeds), max_steps=args.steps, max_minutes=args.minutes)
    if cache.is_file():
        frames = np.load(cache)
    else:
        frames = motion_baselines.build_frames(base, TqdmProgress())
        np.save(cache, frames)
    print(f"{len(frames)} slice sequences from phantom seeds {args.seeds[0]}-{args.seeds[1] - 1}")
    for kind in kinds:
        config = motion_baselines.MotionTrainConfig(**{**base.__dict__, "kind": kind})
        net, summary = motion_baselines.fit(config, args.run_dir / kind, frames)
        card = CARD.format(kind=kind, what=WHAT[kind], hidden=config.hidden, size=config.frame_size,
                           params=sum(p.numel() for p in net.parameters()), seeds=config.seeds,
                           last=config.seeds[1] - 1, sequences=summary["slice_sequences"], steps=summary["steps"],
                           batch=config.batch_size, minutes=summary["minutes"], l1=summary["final"]["l1"],
                           copy=summary["final"]["l1_copy_last"])
        folder = (args.out / kind) if args.out else learned_motion.default_folder(kind)
        learned_motion.save(net, folder, card)
        (args.run_dir / f"{kind}_summary.json").write_text(json.dumps(summary, indent=1))
        print(f"{kind}: {json.dumps(summary)} -> {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
