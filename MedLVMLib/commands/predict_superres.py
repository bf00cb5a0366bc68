"""`medlvm predict superres`: thick slices to thin slices (--axis z) or finer in-plane pixels (--axis xy).

    medlvm predict superres THICK.nii.gz --factor 2 [--axis z] --out THIN.nii.gz [--method medlvm|nearest|linear|cubic]

Thick slices are slabs: the output has F times as many slices, each 1/F as thick, covering the same extent.
MedLVM learns the factor in context from the input's own in-plane detail (z) or from the shipped library
(xy), at native pixel size in model-sized tiles. --no-consistency keeps the raw model output (by default
it is corrected so that its slab means equal the input).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from MedLVMLib.commands import flags
from MedLVMLib.commands.predict_denoise import add_model_arguments, check_out, sampling

HELP = "super-resolve a CT: thick to thin slices, or finer in-plane pixels"
METHODS = ("medlvm", "nearest", "linear", "cubic")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="CT volume (.nii.gz, .nrrd, .mha, DICOM folder)")
    parser.add_argument("--out", type=Path, required=True, help="output volume (.nii.gz, .nrrd, .mha)")
    parser.add_argument("--factor", type=flags.FINITE, required=True, help="whole number >= 2")
    parser.add_argument("--axis", choices=("z", "xy"), default="z", help="z: thinner slices; xy: finer pixels")
    parser.add_argument("--method", choices=METHODS, default="medlvm", help="MedLVM or an interpolation baseline")
    parser.add_argument("--n-examples", type=flags.POSITIVE_INT, default=3,
                        help="example pairs per sentence (default 3)")
    parser.add_argument("--no-tiles", action="store_true", help="resize slices to the model instead of tiling")
    parser.add_argument("--no-consistency", action="store_true", help="skip the slab-mean consistency step")
    add_model_arguments(parser)


def run(args: argparse.Namespace, progress=None) -> int:
    from MedLVMLib.imaging.volume import Volume
    from MedLVMLib.imaging.volume_io import read_volume, write_volume
    from MedLVMLib.progress import TqdmProgress
    from MedLVMLib.tasks import denoise, superres

    progress = progress or TqdmProgress()
    superres.check_factor(args.factor, args.axis)
    check_out(args, [args.input])
    ct = read_volume(args.input)
    denoise.check_volume(ct.array, f"'{args.input}'")
    result = superres.superres_volume(ct.array, args.factor, axis=args.axis, method=args.method, model=args.model,
                                      device=args.device, geometry=ct.geometry, n_examples=args.n_examples,
                                      tile=not args.no_tiles, consistent=not args.no_consistency,
                                      sampling=sampling(args), progress=progress)
    write_volume(Volume(result.volume, result.geometry), args.out, overwrite=args.overwrite)
    progress.close()
    print(f"super-resolved: {args.out} (size {result.volume.shape[::-1]}, spacing {result.geometry.spacing})")
    return 0
