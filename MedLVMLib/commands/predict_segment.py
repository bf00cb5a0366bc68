"""`medlvm predict segment`: complete a segmentation from a few labelled slices, or carry it through a 4D CT.

    medlvm predict segment CT.nii.gz --labels LABELS.nii.gz [--slices 10,20,30] [--axis axial] --out SEG.nii.gz
    medlvm predict segment 4DCT.seq.nrrd --labels PHASE0_LABELS.nii.gz --from-phase 0 --out SEG.seq.nrrd

Outputs (written atomically; an existing one is refused without --overwrite):
    OUT                     the label map (the input's label ids) on the CT grid; with --from-phase a label
                            sequence (.seq.nrrd or a folder, one label map per phase)
    <OUT stem>.segments.json  {"segments": [{"name", "label", "colour": [r, g, b] in 0..1}]}: what the
                            Slicer module turns into named, coloured segments
"""

from __future__ import annotations

import argparse
from pathlib import Path

from MedLVMLib.commands import flags
from MedLVMLib.commands.labels import parse_names
from MedLVMLib.commands.predict_denoise import add_model_arguments, sampling

HELP = "complete a segmentation from labelled slices or carry it to every phase of a 4D CT"
METHODS = ("medlvm", "nearest", "registration")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="CT volume (.nii.gz, .nrrd, .mha, DICOM folder); a 4D CT with "
                                                 "--from-phase")
    parser.add_argument("--labels", type=Path, required=True, help="label map on the CT grid (with --from-phase: "
                                                                   "on that phase)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--slices", default=None, help="labelled slices to learn from, e.g. 10,25,40 or 10-12 "
                                                      "(default: every slice with a label)")
    group.add_argument("--from-phase", type=flags.NON_NEGATIVE_INT, default=None,
                       help="phase the labels were drawn on: propagate them to every other phase")
    parser.add_argument("--axis", default="axial", choices=("axial", "coronal", "sagittal"),
                        help="slicing of the visual sentences (default axial)")
    parser.add_argument("--out", type=Path, default=None, help="output label map (.nii.gz, .nrrd) or, with "
                                                               "--from-phase, .seq.nrrd / folder")
    parser.add_argument("--method", choices=METHODS, default="medlvm", help="MedLVM or a baseline")
    parser.add_argument("--names", default=None, help="structure names: '5=liver,1=spleen' or a JSON file ({name: id}, "
                        "or a case folder's labels.json as `medlvm phantom` writes)")
    parser.add_argument("--examples", type=flags.POSITIVE_INT, default=3, help="example pairs per sentence (default 3)")
    add_model_arguments(parser)


def default_out(ct_path: Path, phases: bool) -> Path:
    stem = ct_path.name.split(".")[0] if ct_path.is_file() else ct_path.name
    return ct_path.with_name(f"{stem}_segmentation" + (".seq.nrrd" if phases else ".nii.gz"))


def segments_path(out: Path) -> Path:
    name = out.name
    for suffix in (".seq.nrrd", ".nii.gz", ".nrrd", ".nii", ".mha"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return out.with_name(name + ".segments.json")


def _check_grid(ct_geometry, ct_shape, labels, label_path: Path, what: str) -> None:
    from MedLVMLib.errors import MedLVMError

    if labels.array.shape != tuple(ct_shape) or not labels.geometry.is_close(ct_geometry):
        raise MedLVMError(
            f"--labels '{label_path}': its grid (size {labels.array.shape[::-1]}, spacing {labels.geometry.spacing}, "
            f"origin {labels.geometry.origin}) differs from the {what} (size {tuple(ct_shape)[::-1]}, spacing "
            f"{ct_geometry.spacing}, origin {ct_geometry.origin}); resample the labels onto the CT grid first"
        )


def run(args: argparse.Namespace, progress=None) -> int:
    from MedLVMLib.errors import MedLVMError
    from MedLVMLib.imaging.phases_io import read_phases, write_phases
    from MedLVMLib.imaging.volume import Phases, Volume, volume_suffix
    from MedLVMLib.imaging.volume_io import read_volume, write_volume
    from MedLVMLib.outputs import check_output_path
    from MedLVMLib.progress import TqdmProgress
    from MedLVMLib.tasks import segment

    progress = progress or TqdmProgress()
    phases_mode = args.from_phase is not None
    out = Path(args.out) if args.out is not None else default_out(Path(args.input), phases_mode)
    seg_json = segments_path(out)
    for path in (out, seg_json):
        if path.resolve() in (Path(args.input).resolve(), Path(args.labels).resolve()):
            raise MedLVMError(f"output '{path}' is an input; choose another --out")
        check_output_path(path, args.overwrite)
    if phases_mode and volume_suffix(out) not in ("", ".seq.nrrd"):
        raise MedLVMError(f"--out '{out}': with --from-phase write a .seq.nrrd file or a folder")
    if not phases_mode and volume_suffix(out) in ("", ".seq.nrrd"):
        raise MedLVMError(f"--out '{out}': write a label map file (.nii.gz, .nrrd, .mha)")
    labels = read_volume(args.labels, labels=True)
    names = parse_names(args.names, Path(args.labels))
    if phases_mode:
        phases = read_phases(args.input, progress=progress)
        _check_grid(phases.geometry, phases.shape, labels, args.labels, f"4D CT '{args.input}'")
        segment.check_inputs(phases.array[0], labels.array, "4D CT", f"--labels '{args.labels}'")
        result = segment.propagate_phases(phases.array, labels.array, args.from_phase, axis=args.axis,
                                          method=args.method, model=args.model, device=args.device,
                                          n_examples=args.examples,
                                          spacing=phases.geometry.spacing, names=names, sampling=sampling(args),
                                          progress=progress)
        label_seq = Phases(result.labels.astype(labels.array.dtype), phases.geometry, list(phases.labels),
                                   list(phases.index_values), phases.index_name, phases.index_unit)
        write_phases(label_seq, out, overwrite=args.overwrite)
    else:
        ct = read_volume(args.input)
        _check_grid(ct.geometry, ct.array.shape, labels, args.labels, f"CT '{args.input}'")
        segment.check_inputs(ct.array, labels.array, f"CT '{args.input}'", f"--labels '{args.labels}'")
        result = segment.propagate_slices(ct.array, labels.array, slices=segment.parse_slices(args.slices),
                                          axis=args.axis, method=args.method, model=args.model, device=args.device,
                                          n_examples=args.examples,
                                          spacing=ct.geometry.spacing, names=names, sampling=sampling(args),
                                          progress=progress)
        write_volume(Volume(result.labels, ct.geometry), out, overwrite=args.overwrite)
    from MedLVMLib.outputs import atomic_path

    with atomic_path(seg_json, args.overwrite) as tmp:
        segment.write_segment_list(result.segments, tmp)
    progress.close()
    print(f"segmentation: {out}")
    print(f"segments: {seg_json}")
    return 0
