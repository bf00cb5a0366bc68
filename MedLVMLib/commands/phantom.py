"""`medlvm phantom OUT`: a breathing 4D CT phantom (or real CT + synthetic breathing) with ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from MedLVMLib.commands import flags

HELP = "make a breathing 4D CT phantom (or real CT + synthetic breathing) with labels and motion fields"
MAX_AMPLITUDE_MM = 50.0  # breathing amplitudes beyond this are not physiological (clinical: up to ~30 mm)
REAL_NAMES = {"4dlung": "4dlung_p113_phase40.nii.gz", "popi": "popi_phase00.nii.gz",
              "totalseg": "totalseg_abdomen_ct.nii.gz"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="case folder to write (ct.seq.nrrd, labels, dvf), or a .seq.nrrd for the CT only")
    parser.add_argument("--seed", type=flags.SEED, default=0, help="anatomy and breathing seed (default 0)")
    parser.add_argument("--phases", type=flags.POSITIVE_INT, default=10,
                        help="number of phases (default 10; 0 %% = end-inhale)")
    parser.add_argument("--shape", type=flags.whole(8, 512), nargs=3, metavar=("Z", "Y", "X"), default=(48, 64, 64),
                        help="phantom grid in voxels over a 264 x 280 x 340 mm field of view (default 48 64 64)")
    parser.add_argument("--tumour-diameter", type=flags.number(0.0, 80.0, above=True), default=25.0,
                        help="tumour diameter in mm, up to 80 (default 25)")
    parser.add_argument("--tumour-position", type=flags.FINITE, nargs=3, metavar=("X", "Y", "Z"), default=None,
                        help="tumour centre in LPS mm at end-exhale (default: random lower-lung point)")
    parser.add_argument("--diaphragm", type=flags.number(0.0, MAX_AMPLITUDE_MM), default=None,
                        help=f"diaphragm SI amplitude in mm, 0-{MAX_AMPLITUDE_MM:g} (typical 10-30; default random)")
    parser.add_argument("--tumour-si", type=flags.number(0.0, MAX_AMPLITUDE_MM), default=None,
                        help=f"tumour SI amplitude in mm, 0-{MAX_AMPLITUDE_MM:g} (typical 0-25; default random)")
    parser.add_argument("--noise", type=flags.NON_NEGATIVE, default=None,
                        help="CT noise std in HU (phantom 15, real CT 0)")
    parser.add_argument("--real", default=None, metavar="NAME_OR_PATH",
                        help="breathe a real CT instead: 4dlung, popi, totalseg (from ../shared/data) or a CT file")
    parser.add_argument("--preview", default=None, metavar="PNG", help="also write a coronal preview over all phases")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (MedLVM's own only)")


def resolve_real(name_or_path: str) -> Path:
    """A --real argument as a CT file path (names refer to the shared real-CT folder)."""
    from MedLVMLib.errors import InputError

    if name_or_path in REAL_NAMES:
        from MedLVMLib.paths import shared_data_dir

        path = shared_data_dir() / REAL_NAMES[name_or_path]
    else:
        path = Path(name_or_path)
    if not path.is_file():
        raise InputError(f"real CT '{name_or_path}' not found at '{path}' (set MEDLVM_SHARED_DATA or give a path)")
    return path


def run(args: argparse.Namespace, progress=None) -> int:
    from MedLVMLib.errors import MedLVMError
    from MedLVMLib.imaging.cases import save_case
    from MedLVMLib.imaging.phases_io import write_phases
    from MedLVMLib.outputs import atomic_path, check_output_path
    from MedLVMLib.progress import TqdmProgress
    from MedLVMLib.synthetic.phantom import breathe_real_ct, make_phantom, save_preview

    progress = progress if progress is not None else TqdmProgress()
    real_ct = resolve_real(args.real) if args.real else None
    for path in [args.out] + ([args.preview] if args.preview else []):
        if real_ct is not None and Path(path).resolve() == real_ct.resolve():
            raise MedLVMError(f"output '{path}' is the --real CT; choose another output path")
        check_output_path(path, args.overwrite)
    out = Path(args.out)
    amplitudes = {"diaphragm_mm": args.diaphragm, "tumour_si_mm": args.tumour_si}
    if args.real:
        case = breathe_real_ct(real_ct, seed=args.seed, n_phases=args.phases,
                               noise_hu=args.noise or 0.0, progress=progress, **amplitudes)
    else:
        position = tuple(args.tumour_position) if args.tumour_position else None
        case = make_phantom(args.seed, args.phases, tuple(args.shape), args.tumour_diameter, position,
                            noise_hu=15.0 if args.noise is None else args.noise, progress=progress, **amplitudes)
    progress.close()
    if out.name.endswith(".seq.nrrd"):
        write_phases(case.phases, out, overwrite=args.overwrite)
    else:
        save_case(case, out, overwrite=args.overwrite)
    print(f"4D CT: {case.phases.n_phases} phases of {case.phases.shape} voxels -> {out}")
    if args.preview:
        with atomic_path(args.preview, args.overwrite) as tmp:
            save_preview(case, tmp)
        print(f"preview -> {args.preview}")
    return 0
