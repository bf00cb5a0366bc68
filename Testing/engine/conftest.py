"""Shared fixtures. Tests run torch single-threaded so two suites never fight over the 2 cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("MEDLVM_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(int(os.environ.get("MEDLVM_TEST_THREADS", "1")))
    except ImportError:
        pass


@pytest.fixture
def shared_data() -> Path:
    """../shared/data with the real CT; tests using it skip cleanly when it is absent."""
    if not (SHARED_DATA / "4dlung_p113_phase40.nii.gz").exists():
        pytest.skip(f"real CT data not found at {SHARED_DATA} (set MEDLVM_SHARED_DATA)")
    return SHARED_DATA
