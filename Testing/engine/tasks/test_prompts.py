"""prompts.py: building the phantom prompt library, loading it, and choosing example pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from MedLVMLib.errors import MedLVMError
from MedLVMLib.tasks import prompts


@pytest.fixture(scope="module")
def small_library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prompts")
    path = prompts.build_library(folder, n_slices=2, shape=(16, 40, 48), photons=(5e4, 1e3))
    return path


def test_build_and_load(small_library):
    library = prompts.load_library(small_library)
    assert library.clean.shape == (2, 40, 48)
    assert sorted(library.noisy) == [1e3, 5e4]
    assert library.pixel_mm > 0
    recipe = json.loads((small_library.parent / "library.json").read_text(encoding="utf-8"))
    assert recipe["photons"] == [5e4, 1e3]
    # fewer photons, more noise
    assert recipe["noise_sigma_hu"]["1000"] > recipe["noise_sigma_hu"]["50000"]


def test_build_is_deterministic(small_library, tmp_path):
    again = prompts.build_library(tmp_path, n_slices=2, shape=(16, 40, 48), photons=(5e4, 1e3))
    a, b = prompts.load_library(small_library), prompts.load_library(again)
    np.testing.assert_array_equal(a.noisy[1e3], b.noisy[1e3])


@pytest.mark.parametrize("level", [1e3, 5e4])
def test_denoise_pairs_pick_the_nearest_noise_level(small_library, level):
    library = prompts.load_library(small_library)
    pairs = prompts.denoise_pairs(library.noisy[level], library=library)
    np.testing.assert_array_equal(pairs.degraded, library.noisy[level])
    np.testing.assert_array_equal(pairs.clean, library.clean)


def test_denoise_pairs_resampled_to_the_query_pixel_size(small_library):
    library = prompts.load_library(small_library)
    pairs = prompts.denoise_pairs(photons=1e3, pixel_mm=library.pixel_mm / 2, library=library)
    assert pairs.clean.shape == (2, 80, 96) and pairs.degraded.shape == (2, 80, 96)


def test_unknown_level_is_an_error(small_library):
    with pytest.raises(MedLVMError, match="photons"):
        prompts.denoise_pairs(photons=123.0, library=prompts.load_library(small_library))


def test_superres_pairs_teach_the_factor(small_library):
    pairs = prompts.superres_pairs(3, library=prompts.load_library(small_library))
    assert pairs.clean.shape[1] % 3 == 0 and pairs.clean.shape[2] % 3 == 0
    assert pairs.degraded.shape == pairs.clean.shape
    assert np.abs(pairs.degraded - pairs.clean).mean() > 1.0  # blurred


def test_missing_library_is_an_error(tmp_path):
    with pytest.raises(MedLVMError, match="not found"):
        prompts.load_library(tmp_path / "nothing.npz")


def test_shipped_library_is_small_and_complete():
    path = prompts.library_dir() / prompts.LIBRARY_NAME
    assert path.stat().st_size < 500_000
    library = prompts.load_library()
    assert sorted(library.noisy) == sorted(prompts.DEFAULT_PHOTONS)
    assert all(v.shape == library.clean.shape for v in library.noisy.values())
