"""`medlvm predict denoise`: denoise a (low-dose) CT with MedLVM in-context examples or a classic filter.

    medlvm predict denoise NOISY.nii.gz --out DENOISED.nii.gz [--method medlvm|tv|nlm|bilateral]
                           [--examples NOISY_EXAMPLE.nii.gz CLEAN_EXAMPLE.nii.gz] [--photons 1e4]

Example pairs: the shipped prompt library (phantom slices with simulated low-dose noise; the dose level
nearest the input's noise is used, or --photons) or --examples: a noisy and a clean volume on one grid.
Output: the denoised CT on the input grid (written atomically; an existing one needs --overwrite).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from MedLVMLib.commands import flags

HELP = "denoise a low-dose CT (MedLVM in-context examples or a classic filter)"
METHODS = ("medlvm", "tv", "nlm", "bilateral")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="noisy CT volume (.nii.gz, .nrrd, .mha, DICOM folder)")
    parser.add_argument("--out", type=Path, required=True, help="output volume (.nii.gz, .nrrd, .mha)")
    parser.add_argument("--method", choices=METHODS, default="medlvm", help="MedLVM or a baseline")
    parser.add_argument("--examples", type=Path, nargs=2, metavar=("NOISY", "CLEAN"), default=None,
                        help="example volumes (same grid): noisy and clean")
    parser.add_argument("--photons", type=flags.POSITIVE, default=None,
                        help="library dose level to use (default: the one nearest the input's noise)")
    parser.add_argument("--n-examples", type=flags.POSITIVE_INT, default=3,
                        help="example pairs per sentence (default 3)")
    parser.add_argument("--no-tiles", action="store_true", help="resize slices to the model instead of tiling")
    add_model_arguments(parser)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Model and sampling flags shared by the segment, denoise and super-resolution commands."""
    parser.add_argument("--model", default=None, help="model id or folder (default: bundled)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--sample", action="store_true", help="sample tokens (temperature/top-p) instead of greedy")
    parser.add_argument("--temperature", type=flags.TEMPERATURE, default=1.0, help="with --sample, > 0 (default 1)")
    parser.add_argument("--top-p", type=flags.TOP_P, default=1.0, help="with --sample, in (0, 1] (default 1)")
    parser.add_argument("--seed", type=flags.SEED, default=0)
    parser.add_argument("--batch-size", type=flags.POSITIVE_INT, default=32, help="sentences per model call")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (MedLVM's own only)")


def sampling(args: argparse.Namespace):
    from MedLVMLib.tasks.segment import Sampling

    return Sampling(greedy=not args.sample, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                    batch_size=args.batch_size)


def check_out(args: argparse.Namespace, inputs: list) -> None:
    from MedLVMLib.errors import MedLVMError
    from MedLVMLib.imaging.volume import volume_suffix
    from MedLVMLib.outputs import check_output_path

    if any(Path(args.out).resolve() == Path(p).resolve() for p in inputs):
        raise MedLVMError(f"output '{args.out}' is an input; choose another --out")
    if volume_suffix(args.out) in ("", ".seq.nrrd"):
        raise MedLVMError(f"--out '{args.out}': write a volume file (.nii.gz, .nrrd, .mha)")
    check_output_path(args.out, args.overwrite)


def run(args: argparse.Namespace, progress=None) -> int:
    from MedLVMLib.imaging.volume import Volume
    from MedLVMLib.imaging.volume_io import read_volume, write_volume
    from MedLVMLib.progress import TqdmProgress
    from MedLVMLib.tasks import denoise

    progress = progress or TqdmProgress()
    check_out(args, [args.input] + list(args.examples or []))
    ct = read_volume(args.input)
    denoise.check_volume(ct.array, f"'{args.input}'")
    pixel = float(sum(ct.geometry.spacing[:2]) / 2)
    examples = None
    if args.examples is not None:
        noisy, clean = (read_volume(p) for p in args.examples)
        examples = denoise.volume_pairs(noisy.array, clean.array)
    elif args.method == "medlvm":
        from MedLVMLib.tasks import prompts

        examples = prompts.denoise_pairs(ct.array, pixel_mm=pixel, photons=args.photons)
    result = denoise.denoise_volume(ct.array, method=args.method, model=args.model, device=args.device,
                                    examples=examples, pixel_mm=pixel, n_examples=args.n_examples,
                                    tile=not args.no_tiles, sampling=sampling(args), progress=progress)
    write_volume(Volume(result.denoised, ct.geometry), args.out, overwrite=args.overwrite)
    progress.close()
    print(f"denoised: {args.out}")
    return 0
