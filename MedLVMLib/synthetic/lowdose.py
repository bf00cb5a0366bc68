"""Low-dose CT simulation in the projection domain (Poisson + electronic noise, filtered back-projection).

Per axial slice [Y, X]:
1. HU -> linear attenuation mu = MU_WATER * (1 + HU / 1000), MU_WATER = 0.0193 / mm (water at about
   70 keV, the effective energy of a 120 kVp spectrum); values below -1000 HU are clipped to mu = 0.
2. Parallel-beam forward projection with `skimage.transform.radon`, one detector bin per pixel,
   `n_views` angles over 180 degrees (default: as many as pixels along the longer side), line integrals
   in mm (radon sums times the pixel size).
3. Counts N = Poisson(I0 exp(-p)) + Normal(0, sigma_e^2): I0 = `photons` incident photons per ray,
   sigma_e = `electronic_std` counts (default sqrt(10), i.e. electronic noise variance 10). Counts are
   floored at 1 photon before p_noisy = -log(N / I0) (photon starvation gives streaks and a small bias,
   as on a scanner).
4. Filtered back-projection (`iradon`, ramp filter, linear interpolation), back to HU.

Circle handling: the slice is padded to a square of air, and radon / iradon run with circle=False, so the
whole square (not only its inscribed disc) is in the field of view; the result is cropped back.

mode="insert" (default) adds only the noise: HU + FBP(p_noisy) - FBP(p_clean), so the input's detail is
not blurred by the discrete projector; mode="reconstruct" returns FBP(p_noisy) itself.
Image noise scales roughly like 1/sqrt(I0 * n_views * pixel size^3). Measured in the centre of a 20 cm
water disc with 1 mm pixels and 256 views: noise SD about 40 HU at I0 = 1e5, 130 HU at 1e4, 520 HU at 1e3
(electronic noise and photon starvation make the lowest dose worse than 1/sqrt(I0)); 0.5 s per slice.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numpy as np

from MedLVMLib.errors import MedLVMError
from MedLVMLib.imaging.volume import Geometry
from MedLVMLib.progress import Progress, ensure

MU_WATER = 0.0193  # 1/mm, water at ~70 keV
DEFAULT_ELECTRONIC_STD = math.sqrt(10.0)  # counts; electronic noise variance 10
MODES = ("insert", "reconstruct")


def hu_to_mu(hu: np.ndarray, mu_water: float = MU_WATER) -> np.ndarray:
    """Linear attenuation (1/mm) of HU values, clipped at 0 for values below -1000 HU."""
    return np.maximum(mu_water * (1.0 + np.asarray(hu, dtype=np.float64) / 1000.0), 0.0)


def mu_to_hu(mu: np.ndarray, mu_water: float = MU_WATER) -> np.ndarray:
    return 1000.0 * (np.asarray(mu, dtype=np.float64) / mu_water - 1.0)


def _pixel_mm(spacing: Union[Geometry, Sequence[float], float, None]) -> float:
    """In-plane pixel size in mm (mean of x and y; radon assumes square pixels)."""
    if spacing is None:
        return 1.0
    if isinstance(spacing, Geometry):
        spacing = spacing.spacing
    values = np.atleast_1d(np.asarray(spacing, dtype=float))[:2]
    if np.any(values <= 0):
        raise MedLVMError(f"spacing {tuple(values)} must be positive (mm)")
    return float(values.mean())


def _check(hu: np.ndarray, photons: float, electronic_std: float, mode: str) -> None:
    if np.ndim(hu) not in (2, 3) or min(np.shape(hu)) < 2:
        raise MedLVMError(f"low_dose needs a 2D slice [Y, X] or a volume [Z, Y, X], got shape {np.shape(hu)}")
    if not photons > 0:
        raise MedLVMError(f"photons (incident photons per ray) must be positive, got {photons}")
    if electronic_std < 0:
        raise MedLVMError(f"electronic_std must be >= 0 counts, got {electronic_std}")
    if mode not in MODES:
        raise MedLVMError(f"mode must be one of {MODES}, got {mode!r}")


def _pad_square(image: np.ndarray, fill: float) -> tuple[np.ndarray, tuple[slice, slice]]:
    h, w = image.shape
    n = max(h, w)
    top, left = (n - h) // 2, (n - w) // 2
    square = np.full((n, n), fill, dtype=np.float64)
    window = (slice(top, top + h), slice(left, left + w))
    square[window] = image
    return square, window


def _low_dose_slice(
    hu: np.ndarray,
    photons: float,
    pixel_mm: float,
    electronic_std: float,
    n_views: Optional[int],
    rng: np.random.Generator,
    mode: str,
) -> np.ndarray:
    from skimage.transform import iradon, radon

    mu, window = _pad_square(hu_to_mu(hu), 0.0)
    size = mu.shape[0]
    theta = np.linspace(0.0, 180.0, int(n_views or size), endpoint=False)
    clean = radon(mu, theta, circle=False) * pixel_mm  # (bins, views) line integrals
    counts = rng.poisson(photons * np.exp(-clean)).astype(np.float64)
    if electronic_std > 0:
        counts += rng.normal(0.0, electronic_std, counts.shape)
    noisy = -np.log(np.maximum(counts, 1.0) / photons)

    def fbp(projections: np.ndarray) -> np.ndarray:
        return iradon(projections, theta, output_size=size, filter_name="ramp", circle=False) / pixel_mm

    if mode == "insert":
        delta_mu = fbp(noisy - clean)  # FBP is linear: FBP(noisy) - FBP(clean)
        return np.asarray(hu, dtype=np.float64) + 1000.0 * delta_mu[window] / MU_WATER
    return mu_to_hu(fbp(noisy)[window])


def low_dose(
    hu: np.ndarray,
    photons: float = 1e4,
    spacing: Union[Geometry, Sequence[float], float, None] = None,
    electronic_std: float = DEFAULT_ELECTRONIC_STD,
    n_views: Optional[int] = None,
    seed: Optional[int] = None,
    mode: str = "insert",
    progress: Optional[Progress] = None,
) -> np.ndarray:
    """Simulate a low-dose acquisition of a (noise-free or full-dose) CT slice or volume.

    Args:
        hu: [Y, X] slice or [Z, Y, X] volume in HU; volumes are processed axial slice by slice.
        photons: incident photons per ray I0 (e.g. 1e5 full dose, 1e4 and 1e3 low dose).
        spacing: in-plane pixel size: a Geometry, an ITK-order spacing (x, y[, z]) or one number (mm).
        electronic_std: standard deviation of the Gaussian electronic noise, in detector counts.
        n_views: projection angles over 180 degrees (default: pixels along the longer side).
        seed: seed of the noise generator (same seed, same noise).
        mode: "insert" (input + simulated noise) or "reconstruct" (FBP of the noisy sinogram).
    Returns:
        float32 array of the input's shape, in HU.
    """
    _check(hu, photons, electronic_std, mode)
    pixel_mm = _pixel_mm(spacing)
    rng = np.random.default_rng(seed)
    slices = np.asarray(hu)[None] if np.ndim(hu) == 2 else np.asarray(hu)
    progress = ensure(progress)
    progress.stage("simulating low dose", len(slices))
    out = np.empty(slices.shape, np.float32)
    for z, image in enumerate(slices):
        out[z] = _low_dose_slice(image, photons, pixel_mm, electronic_std, n_views, rng, mode)
        progress.advance()
    return out[0] if np.ndim(hu) == 2 else out
