"""`medlvm predict motion`: predict the next phases of a 4D CT (MedLVM or a baseline).

Outputs (all written atomically; an existing one is refused without --overwrite):
    OUT                    the predicted phases: a .seq.nrrd file, or a folder with one volume per phase
                           (phase_050.nrrd, ... named by phase so they sort after the input's phases)
    <OUT>_mean, <OUT>_std  with --samples N > 1: voxel-wise mean and standard deviation of the N samples
                           (same form as OUT, e.g. pred_mean.seq.nrrd)
    <OUT>_clinical/        with --labels: centroid trajectory (CSV + PNG), amplitude per axis, ITV, MIP
INPUT may also be a folder of case folders (see `medlvm phantom`): then OUT is a folder with OUT/<case>/ per case
(predicted.seq.nrrd and cohort-run.json), finished cases are skipped on a rerun, and the cases can be spread over
processes with `torchrun --nproc_per_node N -m MedLVMLib predict motion CASES --out OUT` (evaluation/cohort.py).
After the prediction, the motion check (tasks/motion_guard.py) compares the predicted breathing with the
observed phases; each finding is printed as a "Warning: ..." line (and sent to the Slicer panel).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Optional

from MedLVMLib.commands import flags

if TYPE_CHECKING:
    import numpy as np

HELP = "predict the next breathing phases of a 4D CT (MedLVM or a baseline)"
METHODS = ("medlvm", "copy-last", "mirror", "dvf", "pca", "convlstm", "rmsim")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="4D CT: .seq.nrrd, folder of per-phase volumes, DICOM folder")
    parser.add_argument("--out", type=Path, required=True, help="output .seq.nrrd or folder")
    parser.add_argument("--observed", type=flags.POSITIVE_INT, default=5,
                        help="phases given to the method (default 5)")
    parser.add_argument(
        "--future",
        type=flags.NON_NEGATIVE_INT,
        default=None,
        help="phases to predict (default: the rest of the input, or up to 10 phases in all)",
    )
    parser.add_argument("--method", choices=METHODS, default="medlvm", help="MedLVM or a baseline")
    parser.add_argument("--model", default=None, help="model id (see `medlvm models`) or folder (default: bundled)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--dtype", default=None, choices=("fp32", "bf16", "fp16"),
                        help="transformer weights (default: bf16 on CUDA, fp32 on CPU; bf16 on a CPU runs the "
                        "matmuls in bf16 and the rest in fp32: faster decoding of large models; see README)")
    parser.add_argument(
        "--axis",
        default=None,
        choices=("coronal", "sagittal", "axial", "multi"),
        help="slicing of the visual sentences (default: the evaluated best)",
    )
    parser.add_argument(
        "--render",
        default=None,
        choices=("direct", "warp"),
        help="direct: decoded frames; warp: native last phase warped by the predicted motion",
    )
    parser.add_argument("--samples", type=flags.POSITIVE_INT, default=1,
                        help="samples to draw (sampled, not greedy); >1 also writes mean and std")
    parser.add_argument("--combine", default="image", choices=("image", "field"),
                        help="with --samples > 1 and warp: the prediction is the first sample (image) or the last "
                        "phase warped by the voxel-wise median of the samples' motion fields (field)")
    parser.add_argument("--motion", default=None, choices=("free", "observed"),
                        help="with warp: free (the registered motion as predicted) or observed (each predicted field "
                        "projected on the observed phases' breathing mode, within their range; the default with warp)")
    parser.add_argument("--codes", default="nearby", choices=("any", "nearby", "same"),
                        help="the codes a predicted image may take per position: any code of the codebook, or only "
                        "those the observed phases hold within one code of it (nearby, the default) or exactly there "
                        "(same): the future phases are the observed tissue, moved")
    parser.add_argument("--grid", default="model", choices=("model", "native"),
                        help="model: encode, generate, decode and register on the model's working grid (slices at "
                        "the model resolution; fast on clinical-size CT), native: every native slice")
    parser.add_argument("--seed", type=flags.SEED, default=0)
    add_decoding_arguments(parser)
    parser.add_argument("--batch-size", type=flags.POSITIVE_INT, default=None,
                        help="slices per model call (default: automatic)")
    parser.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="label map of one observed phase (see --labels-phase) or a label sequence "
        "(.seq.nrrd / folder): adds the clinical outputs",
    )
    parser.add_argument(
        "--labels-phase",
        type=flags.NON_NEGATIVE_INT,
        default=None,
        help="observed phase the 3D --labels belong to (default: the last observed)",
    )
    parser.add_argument("--names", default=None,
                        help="structure names of --labels: '6=tumour,2=lungs' or a JSON file ({name: id}, or a case "
                        "folder's labels.json); default: a labels.json beside the labels")
    parser.add_argument("--structure", default=None,
                        help="label id or name to track (default: the tumour; with several other structures, "
                        "required)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (MedLVM's own only)")


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    """--temperature, --top-p and --greedy | --sample (args.greedy: None = greedy for one sample only)."""
    parser.add_argument("--temperature", type=flags.TEMPERATURE, default=1.0,
                        help="with sampling, > 0 (default 1, as LVM)")
    parser.add_argument("--top-p", type=flags.TOP_P, default=1.0, help="with sampling, in (0, 1] (default 1)")
    decoding = parser.add_mutually_exclusive_group()
    decoding.add_argument("--greedy", dest="greedy", action="store_const", const=True, default=None,
                          help="most likely token (the default for one sample)")
    decoding.add_argument("--sample", dest="greedy", action="store_const", const=False,
                          help="sample with --temperature/--top-p even for one sample (the default for several)")


def sibling(out: Path, tag: str) -> Path:
    """<out>_<tag> with the same form: pred.seq.nrrd -> pred_mean.seq.nrrd, pred/ -> pred_mean/."""
    name = out.name
    for suffix in (".seq.nrrd", ".nii.gz", ".nrrd"):
        if name.endswith(suffix):
            return out.with_name(name[: -len(suffix)] + f"_{tag}" + suffix)
    return out.with_name(f"{name}_{tag}")


def sibling_folder(out: Path, tag: str) -> Path:
    """<out stem>_<tag> as a folder: pred.seq.nrrd -> pred_clinical/, pred/ -> pred_clinical/."""
    return sibling(out, tag).with_name(sibling(out, tag).name.split(".")[0])


def output_paths(out: Path, samples: int, with_labels: bool) -> dict[str, Path]:
    paths = {"predicted": out}
    if samples > 1:
        paths.update(mean=sibling(out, "mean"), std=sibling(out, "std"))
    if with_labels:
        paths["clinical"] = sibling_folder(out, "clinical")
    return paths


def check_outputs(paths, inputs: list, overwrite: bool) -> None:
    """Every output can be written and is none of the inputs: checked before anything is read or computed."""
    from MedLVMLib.errors import MedLVMError
    from MedLVMLib.outputs import check_output_path

    sources = {Path(p).resolve() for p in inputs if p is not None}
    for path in paths:
        if Path(path).resolve() in sources:
            raise MedLVMError(f"output '{path}' is an input; choose another --out")
        check_output_path(path, overwrite)


def run(args: argparse.Namespace, progress=None) -> int:
    from MedLVMLib.errors import MedLVMError
    from MedLVMLib.evaluation import cohort
    from MedLVMLib.imaging.phases_io import read_phases, write_phases
    from MedLVMLib.imaging.volume import volume_suffix
    from MedLVMLib.progress import TqdmProgress
    from MedLVMLib.tasks import motion, motion_guard

    progress = progress or TqdmProgress()
    if args.method != "medlvm" and args.samples > 1:
        raise MedLVMError("--samples applies to --method medlvm only (the baselines are deterministic)")
    if volume_suffix(args.out) not in ("", ".seq.nrrd"):
        raise MedLVMError(f"--out '{args.out}': write a .seq.nrrd file or a folder")
    label_flags = {"--names": args.names, "--structure": args.structure, "--labels-phase": args.labels_phase}
    for flag, value in label_flags.items():
        if value is not None and args.labels is None:
            raise MedLVMError(f"{flag} applies to --labels; give the label map with --labels")
    if cohort.is_case_dataset(args.input):
        return _predict_cases(args)
    if cohort.detect_launch().world_size > 1:
        raise MedLVMError(f"INPUT '{args.input}' is one 4D CT: several torchrun processes need a folder of case "
                          "folders (see `medlvm phantom`); run one 4D CT without torchrun")
    paths = output_paths(args.out, args.samples, args.labels is not None)
    check_outputs(paths.values(), [args.input, args.labels], args.overwrite)
    phases = read_phases(args.input, progress=progress)
    n_future = motion.check_motion_args(
        phases,
        args.observed,
        args.future,
        args.axis or motion.DEFAULT_AXIS,
        args.render or motion.DEFAULT_RENDER,
        args.samples,
    )
    labels = read_labels(args, phases) if args.labels is not None else None
    options = medlvm_options(args) if args.method == "medlvm" else {}
    result = motion.predict_with_method(args.method, phases, args.observed, n_future, progress=progress, **options)
    write_phases(result.predicted, paths["predicted"], overwrite=args.overwrite, progress=progress)
    for projection in result.projections[:1]:
        progress.log(projection.describe())
    if result.mean is not None:
        write_phases(result.mean, paths["mean"], overwrite=args.overwrite)
        write_phases(result.std, paths["std"], overwrite=args.overwrite, dtype="float32")
    if labels is not None:
        _write_clinical(args, phases, result.predicted, labels, paths["clinical"], progress)
    check = motion_guard.check_prediction(phases.select(list(range(args.observed))), result.predicted)
    for warning in check.warnings:
        progress.log(f"Warning: {warning}")
    progress.close()
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def medlvm_options(args: argparse.Namespace) -> dict:
    """predict_with_method's keyword arguments for --method medlvm."""
    from MedLVMLib.tasks import motion

    return dict(model=args.model, axis=args.axis or motion.DEFAULT_AXIS, samples=args.samples, seed=args.seed,
                device=args.device, dtype=args.dtype, temperature=args.temperature, top_p=args.top_p,
                greedy=args.greedy, batch_size=args.batch_size, render=args.render or motion.DEFAULT_RENDER,
                grid=args.grid, combine=args.combine, motion=args.motion, codes=args.codes)


def _predict_cases(args: argparse.Namespace) -> int:
    """INPUT is a folder of cases: one prediction per case in OUT/<case>/, over torchrun's processes if any."""
    from MedLVMLib.errors import MedLVMError
    from MedLVMLib.evaluation import cohort
    from MedLVMLib.imaging.volume import volume_suffix

    if args.labels is not None:
        raise MedLVMError("--labels applies to one 4D CT, not to a folder of cases")
    if volume_suffix(args.out) or Path(args.out).resolve() == Path(args.input).resolve():
        raise MedLVMError(f"--out '{args.out}': with a folder of cases INPUT, --out is a new folder (one subfolder "
                          "per case), not a file nor INPUT itself")
    options = medlvm_options(args) if args.method == "medlvm" else {}
    return cohort.predict_motion_cases(args.input, args.out, args.method, args.observed, args.future, options,
                                       args.overwrite)


class ObservedLabels(NamedTuple):
    """uint8 label maps of the observed phases [k, Z, Y, X]; `source`: the phase a 3D map was drawn on (the
    others are propagated from it), None for a label sequence; the structures present and the one tracked."""

    labels: np.ndarray
    source: Optional[int]
    names: dict
    structure: str


def read_labels(args: argparse.Namespace, phases) -> ObservedLabels:
    """--labels checked against the phases, with its names and the structure to track: all before heavy work."""
    import numpy as np

    from MedLVMLib.commands import labels as label_args
    from MedLVMLib.errors import MedLVMError

    path = Path(args.labels)
    labels, source = _observed_label_maps(path, args.observed, args.labels_phase)
    if labels.shape[1:] != phases.shape:
        raise MedLVMError(f"--labels '{path}' has shape {labels.shape[1:]} but the phases are {phases.shape}")
    if not labels.any():
        raise MedLVMError(f"--labels '{path}' is empty (all zero)")
    given = label_args.parse_names(args.names, path) if args.names else label_args.sidecar_names(path)
    names = label_args.structure_names([int(v) for v in np.unique(labels) if v], given)
    _, structure = label_args.choose_structure(names, args.structure, f"--labels '{path}'")
    return ObservedLabels(labels, source, names, structure)


def _observed_label_maps(path: Path, k: int, labels_phase: Optional[int]):
    """(uint8 [k, Z, Y, X], source phase or None) from a 3D label map or a label sequence."""
    import numpy as np

    from MedLVMLib.errors import MedLVMError
    from MedLVMLib.imaging.phases_io import read_phases
    from MedLVMLib.imaging.volume import check_label_map, volume_suffix
    from MedLVMLib.imaging.volume_io import read_volume

    if path.is_dir() or volume_suffix(path) == ".seq.nrrd":
        seq = read_phases(path, check_hu_values=False).array
        check_label_map(seq, path)
        if seq.shape[0] < k:
            raise MedLVMError(f"--labels '{path}' has {seq.shape[0]} phases; the {k} observed phases need labels")
        return _uint8_labels(seq[:k], path), None
    volume = read_volume(path, labels=True)
    source = k - 1 if labels_phase is None else labels_phase
    if not 0 <= source < k:
        raise MedLVMError(f"--labels-phase {source} is not an observed phase (0..{k - 1})")
    labels = np.zeros((k,) + volume.array.shape, np.uint8)
    labels[source] = _uint8_labels(volume.array, path)
    return labels, source


def _uint8_labels(array, path: Path):
    import numpy as np

    from MedLVMLib.errors import MedLVMError

    if array.size and array.max() > 255:
        raise MedLVMError(f"--labels '{path}' has label ids up to {int(array.max())}; motion prediction takes ids "
                          "0..255 (renumber the structures)")
    return np.rint(array).astype(np.uint8)


def _write_clinical(args, phases, predicted, observed: ObservedLabels, folder: Path, progress) -> None:
    import numpy as np

    from MedLVMLib.imaging import registration
    from MedLVMLib.outputs import atomic_path
    from MedLVMLib.tasks import clinical

    labels, source = observed.labels, observed.source
    k = args.observed
    observed_hu = phases.array[:k]
    progress.stage("propagating labels", (k - 1 if source is not None else 0) + predicted.n_phases)
    if source is not None:
        for i in range(k):
            if i != source:
                labels[i] = registration.propagate_labels(
                    labels[source], observed_hu[source], observed_hu[i], phases.geometry, progress=progress
                )
    future = [
        registration.propagate_labels(labels[-1], observed_hu[-1], image, phases.geometry, progress=progress)
        for image in predicted.array
    ]
    all_labels = np.concatenate([labels, np.stack(future)])
    everything = phases.select(list(range(k)))
    everything.array = np.concatenate([everything.array, predicted.array])
    everything.labels = everything.labels + predicted.labels
    everything.index_values = list(everything.index_values) + list(predicted.index_values)
    with atomic_path(folder, args.overwrite) as tmp:
        clinical.write_clinical(tmp, everything, all_labels, observed.names, k, observed.structure)
