"""Speed and quality figures of the registration and the classical baselines, printed as tables.

    python benchmarks/baselines.py [--cases 3] [--shape 48 64 64] [--threads 1]

Motion: phantom cases (`phantom.make_phantom`), phases 0-4 observed, 5-9 predicted; masks on a
prediction are the last observed phase's labels propagated by registration (the evaluation protocol);
"truth" scores the true phases through the same protocol (its ceiling). Denoising and super-resolution
use phantom slices / volumes with simulated low dose (`lowdose.low_dose`) and slab downsampling.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

try:
    from MedLVMLib.baselines.denoise import DENOISE_BASELINES
except ImportError:  # run from a checkout without installing
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from MedLVMLib.baselines.denoise import DENOISE_BASELINES
from MedLVMLib.baselines.motion import MOTION_BASELINES
from MedLVMLib.baselines.superres import SUPERRES_BASELINES, downsample
from MedLVMLib.evaluation import metrics
from MedLVMLib.imaging import registration
from MedLVMLib.synthetic import lowdose

ORGANS = {2: "lungs", 3: "heart", 4: "liver", 6: "tumour"}


def _timed(fn, *args, **kw):
    start = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - start


def bench_registration(shape=(64, 64, 64)) -> None:
    from MedLVMLib.synthetic.phantom import make_phantom

    case = make_phantom(seed=0, n_phases=10, shape=shape)
    fixed, moving = case.phases.array[5], case.phases.array[0]
    field, seconds = _timed(registration.register, fixed, moving, case.phases.geometry)
    warped = registration.warp(moving, field, case.phases.geometry)
    before, after = metrics.mae(moving, fixed), metrics.mae(warped, fixed)
    print(f"registration {shape}: {seconds:.2f} s, MAE {before:.1f} -> {after:.1f} HU (0% -> 50%)")


def _score(case, predicted, n_obs: int, scores: dict, name: str) -> None:
    geometry = case.phases.geometry
    last_labels, last_image = case.labels[n_obs - 1], case.phases.array[n_obs - 1]
    for j, image in enumerate(predicted):
        truth = case.labels[n_obs + j]
        labels = registration.propagate_labels(last_labels, last_image, image, geometry)
        for label, organ in ORGANS.items():
            if (truth == label).any():
                scores[name, organ, "dsc"].append(metrics.dice(labels == label, truth == label))
        tumour = metrics.centroid_error_mm(labels == 6, truth == 6, geometry)
        scores[name, "tumour", "centroid_mm"].append(tumour)
        scores[name, "body", "mae_hu"].append(metrics.mae(image, case.phases.array[n_obs + j], truth > 0))


def bench_motion(n_cases: int, shape) -> None:
    from MedLVMLib.synthetic.phantom import make_phantom

    scores, seconds = defaultdict(list), defaultdict(float)
    for seed in range(n_cases):
        case = make_phantom(seed=seed, n_phases=10, shape=shape)
        observed = case.phases.select([0, 1, 2, 3, 4])
        _score(case, case.phases.array[5:], 5, scores, "truth")
        for name, fn in MOTION_BASELINES.items():
            predicted, dt = _timed(fn, observed, 5, 10)
            seconds[name] += dt / n_cases
            _score(case, predicted.array, 5, scores, name)
    columns = [("lungs", "dsc"), ("heart", "dsc"), ("liver", "dsc"), ("tumour", "dsc"), ("tumour", "centroid_mm")]
    columns.append(("body", "mae_hu"))
    print(f"\nmotion baselines, {n_cases} phantom cases {tuple(shape)}, phases 5-9 from 0-4 (mean over phases)")
    print(f"{'method':<10}{'s/case':>8}" + "".join(f"{o + ' ' + m:>20}" for o, m in columns))
    for name in ["truth"] + list(MOTION_BASELINES):
        values = "".join(f"{np.nanmean(scores[name, o, m]):>20.3f}" for o, m in columns)
        print(f"{name:<10}{seconds.get(name, 0.0):>8.2f}{values}")


def _ssim_2d(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([metrics.ssim(x, y) for x, y in zip(a, b)]))


def bench_denoise(size: int = 128) -> None:
    from MedLVMLib.synthetic.phantom import make_phantom

    case = make_phantom(seed=1, n_phases=1, shape=(8, size, size), noise_hu=0.0)
    clean = case.phases.array[0, 4:6]  # (2, size, size)
    pixel_mm = case.phases.geometry.spacing[0]
    print(f"\nlow dose + denoising, 2 phantom slices {size}x{size} ({pixel_mm:.1f} mm pixels), window -1000..1000")
    for photons in (1e5, 1e4, 1e3):
        noisy, dt = _timed(lowdose.low_dose, clean, photons, pixel_mm, seed=0)
        body = clean > -500
        print(
            f"I0={photons:>7.0e}: {dt / 2:.2f} s/slice, noisy: RMSE {metrics.rmse(noisy, clean, body):6.1f} HU  "
            f"PSNR {metrics.psnr(noisy, clean):5.2f}  SSIM {_ssim_2d(noisy, clean):.3f}"
        )
        for name, fn in DENOISE_BASELINES.items():
            out, dt = _timed(fn, noisy)
            print(
                f"    {name:<10} {dt / 2:.2f} s/slice  RMSE {metrics.rmse(out, clean, body):6.1f} HU  "
                f"PSNR {metrics.psnr(out, clean):5.2f}  SSIM {_ssim_2d(out, clean):.3f}"
            )


def bench_superres(shape=(48, 64, 64)) -> None:
    from MedLVMLib.synthetic.phantom import make_phantom

    case = make_phantom(seed=2, n_phases=1, shape=shape, noise_hu=0.0)
    volume, geometry = case.phases.array[0], case.phases.geometry
    print(f"\nsuper-resolution of slab-downsampled phantom {tuple(shape)}")
    for axis, factor in (("z", 2), ("z", 4), ("xy", 2)):
        low = downsample(volume, geometry, factor, axis)
        for name, fn in SUPERRES_BASELINES.items():
            high, dt = _timed(fn, low.array, low.geometry, factor, axis)
            print(
                f"  {axis} x{factor} {name:<8} {dt:.3f} s  MAE {metrics.mae(high.array, volume):6.1f} HU  "
                f"PSNR {metrics.psnr(high.array, volume):5.2f}  SSIM {metrics.ssim(high.array, volume):.3f}"
            )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=3, default=(48, 64, 64))
    parser.add_argument("--threads", type=int, default=1, help="SimpleITK threads (0: all cores)")
    parser.add_argument("--only", choices=("registration", "motion", "denoise", "superres"))
    args = parser.parse_args(argv)
    if args.threads:
        import SimpleITK as sitk

        sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(args.threads)
    benches = {
        "registration": bench_registration,
        "motion": lambda: bench_motion(args.cases, tuple(args.shape)),
        "denoise": bench_denoise,
        "superres": lambda: bench_superres(tuple(args.shape)),
    }
    for name, bench in benches.items():
        if args.only in (None, name):
            bench()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
