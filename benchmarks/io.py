"""Read/write timing of a 4D CT in every supported form (default: 10 phases of 512 x 512 x 120, int16 HU).

    python benchmarks/io.py            # the full 10 x 512 x 512 x 120 case (~630 MB of int16 voxels)
    python benchmarks/io.py --small    # 10 x 128 x 128 x 40, a quick check
    python benchmarks/io.py --formats seq.nrrd nii.gz

The CT is the breathing phantom's anatomy resampled to the grid with fresh CT noise per phase (so files
compress like real CT, not like a constant). Prints one row per format: write s, read s, MB on disk.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from MedLVMLib.imaging.phases_io import read_phases, write_phases
from MedLVMLib.imaging.volume import Geometry, Phases
from MedLVMLib.synthetic.phantom import build_anatomy

FORMATS = {  # name -> (output name, write_phases suffix option, gzip)
    "seq.nrrd": ("ct.seq.nrrd", ".nrrd", True),
    "seq.nrrd-raw": ("raw.seq.nrrd", ".nrrd", False),
    "nii.gz": ("folder_niigz", ".nii.gz", True),
    "nrrd": ("folder_nrrd", ".nrrd", True),
    "mha": ("folder_mha", ".mha", True),
    "dicom": ("folder_dicom", "dicom", False),
}


def make_ct(n_phases: int, shape: tuple[int, int, int], seed: int = 0) -> Phases:
    """Phantom anatomy on a 1/2-size grid, upsampled by voxel repetition, + 15 HU noise per phase (int HU)."""
    half = tuple(max(8, s // 2) for s in shape)
    anatomy, geometry = build_anatomy(seed, half)
    reference = anatomy.hu.repeat(2, 0).repeat(2, 1).repeat(2, 2)[: shape[0], : shape[1], : shape[2]]
    rng = np.random.default_rng(seed)
    array = np.empty((n_phases,) + reference.shape, dtype=np.float32)
    for p in range(n_phases):
        array[p] = np.round(reference + rng.normal(0.0, 15.0, reference.shape).astype(np.float32))
    spacing = tuple(s / 2 for s in geometry.spacing)
    return Phases(array, Geometry(spacing, geometry.origin))


def disk_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(f.stat().st_size for f in files) / 1e6


class Timing(NamedTuple):
    write_s: float
    write_cpu_s: float
    read_s: float
    read_cpu_s: float
    disk_mb: float


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench(phases: Phases, name: str, folder: Path) -> Timing:
    """Write then read back one format; CPU time is shown too because wall time on a shared machine lies."""
    out_name, suffix, compress = FORMATS[name]
    out = folder / out_name
    write = _timed(lambda: write_phases(phases, out, suffix=suffix, compress=compress))
    result = {}
    read = _timed(lambda: result.setdefault("back", read_phases(out)))
    assert np.array_equal(result["back"].array, phases.array), f"{name}: read-back differs"
    size = disk_mb(out)
    shutil.rmtree(out) if out.is_dir() else out.unlink()
    return Timing(write[0], write[1], read[0], read[1], size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="10 x 128 x 128 x 40 instead of 10 x 512 x 512 x 120")
    parser.add_argument("--phases", type=int, default=10)
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS))
    args = parser.parse_args()
    shape = (40, 128, 128) if args.small else (120, 512, 512)
    phases = make_ct(args.phases, shape)
    raw_mb = phases.array.size * 2 / 1e6
    print(f"4D CT: {args.phases} phases x {shape[2]} x {shape[1]} x {shape[0]} (x, y, z), {raw_mb:.0f} MB as int16")
    print(f"{'format':<13}{'write s':>9}{'(cpu s)':>9}{'read s':>9}{'(cpu s)':>9}{'MB on disk':>12}"
          f"{'write MB/s':>12}{'read MB/s':>11}")
    with tempfile.TemporaryDirectory(prefix="medlvm_io_") as tmp:
        for name in args.formats:
            t = bench(phases, name, Path(tmp))
            print(f"{name:<13}{t.write_s:>9.2f}{t.write_cpu_s:>9.2f}{t.read_s:>9.2f}{t.read_cpu_s:>9.2f}"
                  f"{t.disk_mb:>12.1f}{raw_mb / t.write_s:>12.0f}{raw_mb / t.read_s:>11.0f}")
    print("MB/s: int16 megabytes per wall second. Wall > cpu means the process waited for a core.")


if __name__ == "__main__":
    main()
