"""4D CT in memory: `Phases` (float32 HU [P, Z, Y, X] + one geometry + phase labels) and its I/O.

Array axis order follows SimpleITK's `GetArrayFromImage`: [Z, Y, X] per volume, so
`geometry.spacing`, `origin` and `direction` are in ITK (x, y, z) order and LPS coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of one 3D volume, in ITK order (x, y, z), LPS millimetres."""

    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # row-major 3x3

    def is_close(self, other: "Geometry", tol: float = 1e-4) -> bool:
        return (
            np.allclose(self.spacing, other.spacing, atol=tol)
            and np.allclose(self.origin, other.origin, atol=tol * 100)
            and np.allclose(self.direction, other.direction, atol=tol)
        )


@dataclass
class Phases:
    """A 4D CT: P volumes on one grid.

    array:  float32 HU, shape [P, Z, Y, X]
    geometry: the grid shared by every phase
    labels: one display label per phase, e.g. "0%", "10%", ...
    index_values: numeric index per phase (percent of the breathing cycle by default)
    index_name / index_unit: what the index means (Slicer sequence index name and unit)
    """

    array: np.ndarray
    geometry: Geometry = field(default_factory=Geometry)
    labels: list[str] = field(default_factory=list)
    index_values: Optional[list[float]] = None
    index_name: str = "phase"
    index_unit: str = "%"

    def __post_init__(self) -> None:
        if self.array.ndim != 4:
            raise ValueError(f"Phases.array must be [P, Z, Y, X], got shape {self.array.shape}")
        n = self.array.shape[0]
        if self.index_values is None:
            self.index_values = [100.0 * p / n for p in range(n)]
        if not self.labels:
            self.labels = [f"{v:g}%" for v in self.index_values]
        if len(self.labels) != n or len(self.index_values) != n:
            raise ValueError(f"{n} phases but {len(self.labels)} labels and {len(self.index_values)} index values")

    @property
    def n_phases(self) -> int:
        return int(self.array.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """Per-phase volume shape (Z, Y, X)."""
        return tuple(int(s) for s in self.array.shape[1:])  # type: ignore[return-value]

    def select(self, indices: list[int]) -> "Phases":
        """A new Phases with the given phases (copy of the array)."""
        return Phases(
            array=self.array[indices].copy(),
            geometry=self.geometry,
            labels=[self.labels[i] for i in indices],
            index_values=[self.index_values[i] for i in indices],
            index_name=self.index_name,
            index_unit=self.index_unit,
        )


def continue_index(phases: Phases, n_future: int, n_total: Optional[int] = None) -> tuple[list[str], list[float]]:
    """Labels and index values for `n_future` phases that follow `phases` in the breathing cycle.

    The step is the spacing of the input's index values (100 / n_total percent when n_total is given,
    e.g. 10 % for a 10-phase 4D CT), so predicted phases sort after the input: 50%, 60%, ...
    """
    values = list(phases.index_values or [])
    if n_total is not None:
        step = 100.0 / n_total
    elif len(values) >= 2:
        step = values[-1] - values[-2]
    else:
        step = 10.0
    start = values[-1] if values else -step
    new_values = [start + step * (i + 1) for i in range(n_future)]
    unit = phases.index_unit
    return [f"{v:g}{unit}" for v in new_values], new_values
