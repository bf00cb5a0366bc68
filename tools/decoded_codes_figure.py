"""A picture of what the transformer draws: the decoded predicted phases of one case for each `--codes` choice.

    python tools/decoded_codes_figure.py CASE docs/motion/codes/decoded_p113.png
    python tools/decoded_codes_figure.py CASE OUT.png --model medlvm-tiny-ct --codes any nearby same

CASE is a case folder of `medlvm evaluate motion` (ct.seq.nrrd, phases 0-9). One row per choice plus the truth;
columns are the phases, 0-40 % the observed ones (the input), 50-90 % the decoded frames of the prediction (the
`direct` render of the same generation that the warp render registers), on the middle coronal slice.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", type=Path, help="a case folder with ct.seq.nrrd")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--model", default="medlvm-tiny-ct-breathing")
    parser.add_argument("--codes", nargs="+", default=["any", "nearby"], choices=("any", "nearby", "same"))
    parser.add_argument("--observed", type=int, default=5)
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from MedLVMLib.imaging.frames import to_frames
    from MedLVMLib.imaging.phases_io import read_phases
    from MedLVMLib.tasks.motion import predict_motion, resolve_model

    phases = read_phases(args.case / "ct.seq.nrrd")
    model = resolve_model(args.model)
    rows = {"truth": phases.array}
    for codes in args.codes:
        result = predict_motion(phases, args.observed, model=model, codes=codes)
        rows[f"codes {codes}"] = np.concatenate([phases.array[:args.observed], result.decoded.array])
    y = phases.array.shape[2] // 2  # the middle coronal slice (the Y index of [P, Z, Y, X])
    aspect = phases.geometry.spacing[2] / phases.geometry.spacing[0]
    n = phases.n_phases
    fig, axes = plt.subplots(len(rows), n, figsize=(1.5 * n, 1.9 * len(rows)), squeeze=False)
    for i, (name, array) in enumerate(rows.items()):
        for k in range(n):
            ax = axes[i, k]
            ax.imshow(to_frames(array[k], "coronal")[y], cmap="gray", vmin=-1000, vmax=400, aspect=aspect)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(phases.labels[k] + (" (observed)" if k < args.observed else ""), fontsize=8)
            if k == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle(f"{args.case.name}, coronal slice {y}: the observed phases, then the frames {model.model_id} "
                 "decodes (greedy)", fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"figure: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
