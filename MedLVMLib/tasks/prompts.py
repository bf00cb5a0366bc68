"""The prompt library: example (degraded, clean) CT slice pairs shipped with MedLVM, and how they are made.

`Resources/prompts/ct_slices.npz` holds a few axial slices of the procedural breathing phantom
(`phantom.make_phantom`, never patient data) as int16 HU:
    clean            [E, H, W]   the noise-free phantom slices
    noisy_<photons>  [E, H, W]   the same slices after `lowdose.low_dose` (Poisson + electronic noise in the
                                 projection domain) at <photons> incident photons per ray
    photons          [L]         the dose levels present; pixel_mm: their in-plane pixel size
`build_library` regenerates it (`python -m MedLVMLib.tasks.prompts OUT_DIR`); the result is deterministic.

Denoising examples (`denoise_pairs`) are the library slices at the dose level whose noise is nearest the
query's (noise SD estimated from a Laplacian residual, in HU), brought to the query's pixel size.
Super-resolution examples (`superres_pairs`) are the clean slices, F x F block-averaged and interpolated
back, at the target fine pixel size.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import numpy as np

from MedLVMLib.errors import MedLVMError
from MedLVMLib.paths import prompts_dir

LIBRARY_NAME = "ct_slices.npz"
DEFAULT_PHOTONS = (5e4, 1e4, 2.5e3)


def library_dir() -> Path:
    """Resources/prompts (override with MEDLVM_PROMPTS)."""
    return prompts_dir()


class Pairs(NamedTuple):
    """Example pairs as HU slices: degraded [E, H, W] and clean [E, H, W], and the pixel size (mm)."""

    degraded: np.ndarray
    clean: np.ndarray
    pixel_mm: Optional[float] = None


class Library(NamedTuple):
    clean: np.ndarray  # float32 HU [E, H, W]
    noisy: dict  # photons (float) -> float32 HU [E, H, W]
    pixel_mm: float


def load_library(path: Optional[Path] = None) -> Library:
    """Read the prompt library (default: the shipped one)."""
    path = Path(path) if path is not None else library_dir() / LIBRARY_NAME
    if not path.exists():
        raise MedLVMError(f"prompt library '{path}' not found; rebuild it with `python -m MedLVMLib.tasks.prompts "
                          f"{path.parent}` or pass example volumes with --examples")
    with np.load(path) as data:
        photons = [float(p) for p in data["photons"]]
        noisy = {p: data[f"noisy_{int(p)}"].astype(np.float32) for p in photons}
        return Library(data["clean"].astype(np.float32), noisy, float(data["pixel_mm"]))


def noise_sigma_hu(slices: np.ndarray, hu_window: tuple = (-1000.0, 1000.0)) -> float:
    """Noise standard deviation (HU) of HU slices [N, H, W] (`baselines.denoise.noise_sigma`, median over slices)."""
    from MedLVMLib.baselines.denoise import noise_sigma

    lo, hi = hu_window
    return float(noise_sigma(np.clip(np.asarray(slices, np.float32), lo, hi)))


def resample_pixels(slices: np.ndarray, from_mm: float, to_mm: Optional[float], order: int = 1) -> np.ndarray:
    """HU slices [N, H, W] from pixel size `from_mm` to `to_mm` (None: unchanged)."""
    if to_mm is None or abs(to_mm - from_mm) < 1e-3 * from_mm:
        return np.asarray(slices, np.float32)
    from MedLVMLib.imaging import frames

    n, h, w = slices.shape
    shape = (max(int(round(h * from_mm / to_mm)), 4), max(int(round(w * from_mm / to_mm)), 4))
    return np.asarray(frames.resize_frames(np.asarray(slices, np.float32), shape, order=order), np.float32)


def denoise_pairs(ct_slices: Optional[np.ndarray] = None, pixel_mm: Optional[float] = None,
                  photons: Optional[float] = None, library: Optional[Library] = None):
    """(noisy, clean) library pairs for a query.

    Args:
        ct_slices: the noisy query slices, used to pick the dose level with the nearest noise level.
        pixel_mm: the query's in-plane pixel size; library slices are resampled to it.
        photons: force a dose level instead.
    Returns:
        Pairs (HU).
    """
    library = library or load_library()
    levels = sorted(library.noisy)
    if photons is None and ct_slices is not None:
        target = noise_sigma_hu(ct_slices)
        sigmas = {p: noise_sigma_hu(library.noisy[p]) for p in levels}
        photons = min(levels, key=lambda p: abs(sigmas[p] - target))
    elif photons is None:
        photons = levels[len(levels) // 2]
    if photons not in library.noisy:
        raise MedLVMError(f"no library pairs at {photons:g} photons; levels: {', '.join(f'{p:g}' for p in levels)}")
    noisy = resample_pixels(library.noisy[photons], library.pixel_mm, pixel_mm)
    clean = resample_pixels(library.clean, library.pixel_mm, pixel_mm)
    return Pairs(noisy, clean, pixel_mm or library.pixel_mm)


def superres_pairs(factor: int, pixel_mm: Optional[float] = None, library: Optional[Library] = None):
    """(degraded, clean) in-plane pairs teaching an F x F block average, at fine pixel size `pixel_mm`."""
    from MedLVMLib.imaging.slabs import interpolate, slab_average

    library = library or load_library()
    clean = resample_pixels(library.clean, library.pixel_mm, pixel_mm)
    h, w = (clean.shape[1] // factor) * factor, (clean.shape[2] // factor) * factor
    clean = clean[:, :h, :w]
    degraded = interpolate(slab_average(clean, factor, (1, 2)), factor, (1, 2), order=1)
    return Pairs(degraded, clean, pixel_mm or library.pixel_mm)


def build_library(out_dir: Path, n_slices: int = 4, shape: tuple = (40, 132, 160),
                  photons: Sequence[float] = DEFAULT_PHOTONS, seed: int = 0) -> Path:
    """Make the library from the noise-free procedural phantom: `n_slices` axial slices from lung apex to
    upper abdomen (about 2.1 mm square pixels for the default shape), each at every dose level.
    Returns the written .npz path (library.json beside it records the recipe)."""
    from MedLVMLib.synthetic import lowdose, phantom

    case = phantom.make_phantom(seed=seed, n_phases=1, shape=tuple(shape), noise_hu=0.0)
    volume = np.asarray(case.phases.array[0], np.float32)  # (Z, Y, X)
    pixel_mm = float(np.mean(case.phases.geometry.spacing[:2]))
    idx = np.linspace(volume.shape[0] * 0.2, volume.shape[0] * 0.8, n_slices).round().astype(int)
    clean = volume[idx]
    arrays = {"clean": np.round(clean).astype(np.int16), "photons": np.asarray(photons, np.float64),
              "pixel_mm": np.float64(pixel_mm)}
    for k, p in enumerate(photons):
        noisy = lowdose.low_dose(clean, photons=p, spacing=pixel_mm, seed=seed + k)
        arrays[f"noisy_{int(p)}"] = np.round(np.clip(noisy, -1024, 3071)).astype(np.int16)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LIBRARY_NAME
    np.savez_compressed(path, **arrays)
    recipe = {"source": "MedLVMLib.synthetic.phantom.make_phantom (noise_hu=0)", "seed": seed, "shape": list(shape),
              "slices": [int(i) for i in idx], "pixel_mm": pixel_mm, "photons": [float(p) for p in photons],
              "noise": "noise.low_dose, mode insert, default electronic noise",
              "noise_sigma_hu": {f"{p:g}": round(noise_sigma_hu(arrays[f"noisy_{int(p)}"]), 1) for p in photons}}
    (out_dir / "library.json").write_text(json.dumps(recipe, indent=2))
    return path


if __name__ == "__main__":
    print(build_library(Path(sys.argv[1]) if len(sys.argv) > 1 else library_dir()))
