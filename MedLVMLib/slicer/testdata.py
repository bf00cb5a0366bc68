"""Small synthetic inputs for the module's in-app self-test and the headless tests (no files, no download)."""

from __future__ import annotations

import numpy as np

from MedLVMLib.imaging.volume import Geometry, Phases

# an oblique grid with anisotropic voxels: catches axis-order and LPS/RAS mistakes
SELFTEST_GEOMETRY = Geometry(spacing=(1.5, 1.5, 3.0), origin=(-18.0, -30.0, 100.0),
                             direction=(0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))


def breathing_sphere(n_phases: int = 6, shape: tuple = (16, 24, 24)) -> Phases:
    """A dense sphere (40 HU in -800 HU) moving along the superior-inferior axis over `n_phases` phases (0%, 10%...).

    Returns Phases [P, Z, Y, X] on SELFTEST_GEOMETRY.
    """
    if n_phases < 1:
        raise ValueError(f"the phantom needs at least one phase, not {n_phases}")
    z, y, x = np.mgrid[0:shape[0], 0:shape[1], 0:shape[2]].astype(np.float32)
    array = np.full((n_phases, *shape), -800.0, np.float32)
    for p in range(n_phases):
        centre = shape[0] / 2 + 3.0 * np.cos(np.pi * p / n_phases)
        array[p][(z - centre) ** 2 + (y - shape[1] / 2) ** 2 + (x - shape[2] / 2) ** 2 < 25] = 40.0
    return Phases(array=array, geometry=SELFTEST_GEOMETRY, index_values=[10.0 * p for p in range(n_phases)])
