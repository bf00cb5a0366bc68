"""Classical CT denoising baselines: total variation, non-local means, bilateral.

Each `fn(hu, hu_window=(-1000, 1000), slicewise=True, **kw) -> hu` takes a slice [Y, X] or a volume
[Z, Y, X] in HU and returns float32 HU of the same shape. Internally the HU values are mapped linearly by
the window to x = (HU - lo) / (hi - lo) (0..1 inside the window; values outside are kept, not clipped),
so the strength parameters below are in window units, then mapped back to HU. Volumes are denoised axial
slice by slice by default (the same unit of work as the model, and how noise is simulated by
`synthetic.lowdose.low_dose`); `slicewise=False` runs every method in 3D (better when slices are thin, NLM is slower).

- "tv": Chambolle total variation, `weight` (default 1.5 x the estimated noise SD, window units).
- "nlm": non-local means with the noise SD estimated per slice (`noise_sigma`), h = `h_factor`
  (default 1.2) x sigma, 5x5 patches searched within 6 pixels, fast mode.
- "bilateral": SimpleITK bilateral filter, spatial SD `spatial_sigma` in pixels (default 1.5) and
  range SD `range_sigma_hu` in HU (default: 3 x the estimated noise SD, at least 20 HU).
Defaults were tuned on phantom slices with `synthetic.lowdose.low_dose` at I0 = 1e5 / 1e4 / 1e3 (the noise SD estimate
reads low on streaky very-low-dose images, so stronger settings can win there).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from MedLVMLib.errors import MedLVMError

DEFAULT_HU_WINDOW = (-1000.0, 1000.0)


def _check(hu: np.ndarray, hu_window: Sequence[float]) -> tuple[float, float]:
    if np.ndim(hu) not in (2, 3):
        raise MedLVMError(f"denoising needs a slice [Y, X] or a volume [Z, Y, X], got shape {np.shape(hu)}")
    lo, hi = (float(v) for v in hu_window)
    if not hi > lo:
        raise MedLVMError(f"hu_window {tuple(hu_window)} must be (lo, hi) with hi > lo")
    return lo, hi


def _apply(
    hu: np.ndarray, hu_window: Sequence[float], slicewise: bool, fn: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Window -> fn per slice (or on the whole array) -> HU."""
    lo, hi = _check(hu, hu_window)
    x = (np.asarray(hu, dtype=np.float64) - lo) / (hi - lo)
    if x.ndim == 3 and slicewise:
        out = np.stack([fn(image) for image in x])
    else:
        out = fn(x)
    return (out * (hi - lo) + lo).astype(np.float32)


def noise_sigma(image: np.ndarray) -> float:
    """Gaussian noise SD of a 2D image (Immerkaer's Laplacian-difference estimate; 3D: median over slices).

    sigma = sqrt(pi / 2) / (6 (H - 2) (W - 2)) * sum |image * L|, L = [[1,-2,1],[-2,4,-2],[1,-2,1]]: the
    kernel cancels smooth structure, so what is left is mostly noise. Needs no wavelet package.
    """
    from scipy.ndimage import convolve

    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3:
        return float(np.median([noise_sigma(s) for s in image]))
    kernel = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
    response = convolve(image, kernel, mode="reflect")[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2.0) * np.abs(response).mean() / 6.0)


def total_variation(
    hu: np.ndarray,
    hu_window: Sequence[float] = DEFAULT_HU_WINDOW,
    slicewise: bool = True,
    weight: Optional[float] = None,
    weight_factor: float = 1.5,
) -> np.ndarray:
    """Chambolle total-variation denoising (skimage denoise_tv_chambolle).

    weight: in window units; default `weight_factor` x the estimated noise SD of each slice (or volume).
    """
    from skimage.restoration import denoise_tv_chambolle

    def run(x: np.ndarray) -> np.ndarray:
        strength = weight if weight else max(weight_factor * noise_sigma(x), 1e-4)  # 0 would divide by zero
        return denoise_tv_chambolle(x, weight=strength)

    return _apply(hu, hu_window, slicewise, run)


def non_local_means(
    hu: np.ndarray,
    hu_window: Sequence[float] = DEFAULT_HU_WINDOW,
    slicewise: bool = True,
    h_factor: float = 1.2,
    patch_size: int = 5,
    patch_distance: int = 6,
) -> np.ndarray:
    """Non-local means (skimage.restoration.denoise_nl_means) with a per-slice noise estimate."""
    from skimage.restoration import denoise_nl_means

    def run(x: np.ndarray) -> np.ndarray:
        sigma = noise_sigma(x)
        return denoise_nl_means(
            x, h=h_factor * sigma, sigma=sigma, patch_size=patch_size, patch_distance=patch_distance, fast_mode=True
        )

    return _apply(hu, hu_window, slicewise, run)


def bilateral(
    hu: np.ndarray,
    hu_window: Sequence[float] = DEFAULT_HU_WINDOW,
    slicewise: bool = True,
    spatial_sigma: float = 1.5,
    range_sigma_hu: Optional[float] = None,
) -> np.ndarray:
    """Edge-preserving bilateral filter (SimpleITK), range SD in HU (default from the noise estimate)."""
    import SimpleITK as sitk

    lo, hi = _check(hu, hu_window)

    def run(x: np.ndarray) -> np.ndarray:
        estimate = max(3.0 * noise_sigma(x), 20.0 / (hi - lo))
        range_sigma = range_sigma_hu / (hi - lo) if range_sigma_hu else estimate
        image = sitk.GetImageFromArray(x.astype(np.float32))
        filtered = sitk.Bilateral(image, domainSigma=float(spatial_sigma), rangeSigma=float(range_sigma))
        return sitk.GetArrayFromImage(filtered).astype(np.float64)

    return _apply(hu, hu_window, slicewise, run)


DENOISE_BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "tv": total_variation,
    "nlm": non_local_means,
    "bilateral": bilateral,
}
