"""Denoising baselines on a small simulated low-dose phantom."""

from __future__ import annotations

import numpy as np
import pytest

from MedLVMLib.baselines import denoise
from MedLVMLib.errors import MedLVMError
from MedLVMLib.evaluation import metrics
from MedLVMLib.synthetic import lowdose


@pytest.fixture(scope="module")
def phantom():
    """Water disc with a bone and a lung insert, 3 slices of 48x48, and its simulated low-dose version."""
    yy, xx = np.indices((48, 48)) - 23.5
    hu = np.where(xx**2 + yy**2 < 20**2, 0.0, -1000.0)
    hu[(xx - 7) ** 2 + yy**2 < 25] = 400.0
    hu[(xx + 7) ** 2 + (yy - 4) ** 2 < 16] = -600.0
    clean = np.stack([hu, hu, hu]).astype(np.float32)
    return clean, lowdose.low_dose(clean, 1e4, spacing=2.0, seed=0)


@pytest.mark.parametrize("name", sorted(denoise.DENOISE_BASELINES))
@pytest.mark.parametrize("slicewise", [True, False])
def test_baselines_reduce_the_error(phantom, name, slicewise):
    clean, noisy = phantom
    out = denoise.DENOISE_BASELINES[name](noisy, slicewise=slicewise)
    assert out.shape == clean.shape and out.dtype == np.float32
    assert metrics.rmse(out, clean) < 0.7 * metrics.rmse(noisy, clean)
    assert metrics.ssim(out, clean) > metrics.ssim(noisy, clean)


@pytest.mark.parametrize("name", sorted(denoise.DENOISE_BASELINES))
def test_single_slice_and_values_outside_the_window(name):
    image = np.full((24, 24), 1500.0, np.float32)  # above the default window: kept, not clipped
    out = denoise.DENOISE_BASELINES[name](image)
    assert out.shape == image.shape
    np.testing.assert_allclose(out, 1500.0, atol=1.0)


@pytest.mark.parametrize("sigma", [0.02, 0.1])
def test_noise_sigma_estimate(sigma):
    rng = np.random.default_rng(0)
    yy, xx = np.indices((128, 128))
    image = 0.3 + 0.002 * xx + rng.normal(0, sigma, (128, 128))  # smooth ramp + white noise
    assert denoise.noise_sigma(image) == pytest.approx(sigma, rel=0.1)


@pytest.mark.parametrize(
    "kwargs", [{"hu": np.zeros(8)}, {"hu": np.zeros((2, 2, 2, 2))}, {"hu": np.zeros((8, 8)), "hu_window": (5, 0)}]
)
def test_bad_input_raises(kwargs):
    with pytest.raises(MedLVMError):
        denoise.total_variation(**kwargs)
