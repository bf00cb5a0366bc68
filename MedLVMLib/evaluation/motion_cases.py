"""The motion evaluation's cases: held-out phantoms, phantoms of the second breathing model, real anatomy.

    phantom-<seed>   `synthetic.phantom.make_phantom` (seeds from 1000: never trained on)
    second-<seed>    the same anatomy breathing with `synthetic.second_breathing` (tuned on by no method)
    real-<name>      a real CT from the shared data with synthetic breathing (`breathe_real_ct`), resampled to
                     at most `real_max_shape` voxels, or at its native grid with `real_native`
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from MedLVMLib.errors import MedLVMError
from MedLVMLib.paths import shared_data_dir
from MedLVMLib.progress import Progress, ensure

REAL_CT = {  # shared-data files used by `make_evaluation_set(real=True)`: CT, labels
    "real-4dlung-p113": ("4dlung_p113_phase40.nii.gz", "4dlung_p113_phase40_labels.nii.gz"),
    "real-popi": ("popi_phase00.nii.gz", None),  # no labels: lungs by threshold, no tumour
}


def make_evaluation_set(folder: Path, n_phantoms: int = 5, first_seed: int = 1000, real: bool = True,
                        shared_data: Optional[Path] = None, shape: Optional[tuple[int, int, int]] = None,
                        real_max_shape: tuple[int, int, int] = (48, 64, 64), overwrite: bool = False,
                        progress: Optional[Progress] = None, second: int = 0, real_native: bool = False) -> list[Path]:
    """Write the standard motion evaluation set: `n_phantoms` phantom cases with seeds first_seed.. (held out
    from training, which uses low seeds), `second` cases of the second breathing model (same seeds), and, with
    `real`, real-anatomy cases (real CT + labels from `shared_data`, breathing applied by
    `phantom.breathe_real_ct`, resampled to at most `real_max_shape` voxels so that a CPU evaluation of every
    method takes minutes per case, or at the CT's own grid with `real_native`; cases named '-native').

    Returns the case folders (in `folder`, created).
    """
    from MedLVMLib.imaging import cases
    from MedLVMLib.imaging.volume_io import read_volume
    from MedLVMLib.synthetic import phantom, second_breathing

    progress = ensure(progress)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(f"phantom-{first_seed + i}", "phantom", first_seed + i) for i in range(n_phantoms)]
    jobs += [(f"second-{first_seed + i}", "second", first_seed + i) for i in range(second)]
    if real:
        data = Path(shared_data) if shared_data is not None else shared_data_dir()
        for name, (ct, labels) in REAL_CT.items():
            if not (data / ct).exists():
                raise MedLVMError(f"real CT '{data / ct}' not found; pass shared_data= (or --shared-data)")
            jobs.append((name + ("-native" if real_native else ""),
                         (data / ct, None if labels is None else data / labels), first_seed))
    progress.stage("making cases", len(jobs))
    written = []
    for name, source, seed in jobs:
        kwargs = {"shape": shape} if shape is not None else {}
        if source == "phantom":
            case = phantom.make_phantom(seed=seed, n_phases=10, **kwargs)
        elif source == "second":
            case = second_breathing.make_case(seed=seed, n_phases=10, **kwargs)
        else:
            max_shape = tuple(read_volume(source[0]).array.shape) if real_native else real_max_shape
            case = phantom.breathe_real_ct(source[0], source[1], seed=seed, n_phases=10, max_shape=max_shape)
        written.append(cases.save_case(case, folder / name, overwrite=overwrite))
        progress.advance()
    return written
