"""Low-dose simulation: noise grows like 1/sqrt(I0), the mean HU is kept, seeds reproduce."""

from __future__ import annotations

import numpy as np
import pytest

from MedLVMLib.errors import MedLVMError
from MedLVMLib.synthetic import lowdose


def water_disc(n: int = 64, radius: float = 26.0) -> tuple[np.ndarray, np.ndarray]:
    """Water disc in air (HU) and a central region of interest."""
    yy, xx = np.indices((n, n)) - n / 2 + 0.5
    r2 = xx**2 + yy**2
    return np.where(r2 < radius**2, 0.0, -1000.0), r2 < (0.6 * radius) ** 2


@pytest.fixture(scope="module")
def noise_by_dose():
    disc, roi = water_disc()
    out = {}
    for photons in (1e5, 1e4, 1e3):
        noisy = lowdose.low_dose(disc, photons, spacing=(2.0, 2.0), seed=1)
        out[photons] = (noisy[roi].std(), noisy[roi].mean())
    return out


@pytest.mark.parametrize("high, low", [(1e5, 1e4), (1e4, 1e3)])
def test_noise_grows_like_inverse_sqrt_photons(noise_by_dose, high, low):
    ratio = noise_by_dose[low][0] / noise_by_dose[high][0]
    assert 2.4 < ratio < 4.6  # sqrt(10) = 3.16, a little more at the lowest dose (electronic noise)


@pytest.mark.parametrize("photons, tolerance", [(1e5, 5.0), (1e4, 10.0), (1e3, 40.0)])
def test_mean_hu_is_preserved(noise_by_dose, photons, tolerance):
    assert abs(noise_by_dose[photons][1]) < tolerance


def test_volume_is_sliced_seeded_and_shaped():
    disc, _ = water_disc(32, 12.0)
    volume = np.stack([disc, disc + 100.0, disc])[:, :, 4:28]  # non-square slices
    a = lowdose.low_dose(volume, 1e4, spacing=(1.0, 1.0, 3.0), seed=3)
    b = lowdose.low_dose(volume, 1e4, spacing=(1.0, 1.0, 3.0), seed=3)
    assert a.shape == volume.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], a[2])  # each slice gets its own noise
    assert not np.array_equal(a, lowdose.low_dose(volume, 1e4, seed=4))


def test_reconstruct_mode_gives_the_image_back_at_high_dose():
    disc, roi = water_disc()
    recon = lowdose.low_dose(disc, 1e7, spacing=2.0, electronic_std=0.0, seed=0, mode="reconstruct")
    assert abs(recon[roi].mean()) < 10.0 and recon[roi].std() < 15.0
    assert abs(recon[:3, :3].mean() + 1000.0) < 30.0  # air corner (outside the inscribed circle) stays air


def test_hu_mu_round_trip():
    hu = np.array([-1000.0, 0.0, 1000.0])
    np.testing.assert_allclose(lowdose.hu_to_mu(hu), [0.0, lowdose.MU_WATER, 2 * lowdose.MU_WATER])
    np.testing.assert_allclose(lowdose.mu_to_hu(lowdose.hu_to_mu(hu)), hu)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hu": np.zeros(16), "photons": 1e4},
        {"hu": np.zeros((8, 8)), "photons": 0},
        {"hu": np.zeros((8, 8)), "photons": 1e4, "mode": "fbp"},
        {"hu": np.zeros((8, 8)), "photons": 1e4, "electronic_std": -1},
        {"hu": np.zeros((8, 8)), "photons": 1e4, "spacing": (0.0, 1.0)},
    ],
)
def test_bad_input_raises(kwargs):
    with pytest.raises(MedLVMError):
        lowdose.low_dose(**kwargs)
