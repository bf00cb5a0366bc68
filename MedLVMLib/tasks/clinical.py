"""Clinical summaries of a 4D CT with labels: what a medical physicist plans from.

For one labelled structure (the tumour by default) over all phases (observed + predicted):
    - the centroid trajectory (LPS millimetres, per phase) as a table and a plot,
    - the peak-to-peak motion amplitude per axis (LR = x, AP = y, SI = z) and in 3D,
    - the internal target volume (ITV): the union of the structure over all phases,
    - the maximum-intensity projection (MIP) of the CT over phases (the usual ITV-drawing aid).

`write_clinical` writes them into a folder beside the predictions:
    trajectory_<structure>.csv / .png, amplitude.csv, itv_<structure>.nrrd, mip.nrrd
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from MedLVMLib.errors import MedLVMError
from MedLVMLib.imaging.volume import Geometry, Phases

AXIS_NAMES = ("LR (x)", "AP (y)", "SI (z)")


@dataclass(frozen=True)
class Trajectory:
    """Centroid of one structure per phase.

    labels: phase labels ("0%", ...); centroids_mm: float [P, 3] LPS (x, y, z), NaN where the structure is
    absent; observed: bool [P], True for input phases, False for predicted ones.
    """

    structure: str
    labels: list[str]
    centroids_mm: np.ndarray
    observed: np.ndarray

    @property
    def amplitude_mm(self) -> np.ndarray:
        """Peak-to-peak motion per axis (x, y, z), mm (NaN-safe)."""
        return np.nanmax(self.centroids_mm, axis=0) - np.nanmin(self.centroids_mm, axis=0)

    @property
    def amplitude_3d_mm(self) -> float:
        """Largest distance between any two phase centroids, mm."""
        c = self.centroids_mm[~np.isnan(self.centroids_mm).any(axis=1)]
        if len(c) < 2:
            return 0.0
        return float(np.max(np.linalg.norm(c[:, None] - c[None], axis=-1)))


def index_to_lps(geometry: Geometry, zyx: np.ndarray) -> np.ndarray:
    """Continuous array indices [..., 3] in (z, y, x) order -> LPS points [..., 3] in (x, y, z) mm."""
    ijk = np.asarray(zyx, dtype=np.float64)[..., ::-1]  # (x, y, z) index order
    direction = np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3)
    return np.asarray(geometry.origin) + (ijk * np.asarray(geometry.spacing)) @ direction.T


def centroid_mm(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Centroid of a boolean mask [Z, Y, X] in LPS mm (x, y, z); NaNs when the mask is empty."""
    idx = np.argwhere(mask)
    if len(idx) == 0:
        return np.full(3, np.nan)
    return index_to_lps(geometry, idx.mean(axis=0))


def find_label(label_names: dict[int, str], structure: Optional[str]) -> tuple[int, str]:
    """(id, name) of the structure to track: the named one, else the tumour, else the first label."""
    if not label_names:
        raise MedLVMError("the label map has no named structures")
    by_name = {name.lower(): (int(i), name) for i, name in label_names.items()}
    if structure is not None:
        if structure.lower() not in by_name:
            raise MedLVMError(f"structure '{structure}' is not in the labels ({', '.join(label_names.values())})")
        return by_name[structure.lower()]
    for candidate in ("tumour", "tumor", "gtv"):
        for name, value in by_name.items():
            if name.startswith(candidate):
                return value
    first = min(label_names)
    return int(first), label_names[first]


def trajectory(labels: np.ndarray, geometry: Geometry, label_id: int, phase_labels: list[str],
               n_observed: int, structure: str = "structure") -> Trajectory:
    """Centroid per phase of `label_id` in a label sequence [P, Z, Y, X]."""
    cents = np.stack([centroid_mm(lab == label_id, geometry) for lab in labels])  # (P, 3)
    observed = np.arange(len(labels)) < n_observed
    return Trajectory(structure, list(phase_labels), cents, observed)


def itv(labels: np.ndarray, label_id: int) -> np.ndarray:
    """Internal target volume: uint8 [Z, Y, X], 1 where the structure is in ANY phase."""
    return (np.asarray(labels) == label_id).any(axis=0).astype(np.uint8)


def mip(array: np.ndarray) -> np.ndarray:
    """Maximum-intensity projection over phases: float32 [Z, Y, X] from [P, Z, Y, X]."""
    return np.asarray(array, dtype=np.float32).max(axis=0)


def write_trajectory_csv(traj: Trajectory, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["phase", "source", "x_mm", "y_mm", "z_mm"])
        for label, c, obs in zip(traj.labels, traj.centroids_mm, traj.observed):
            writer.writerow([label, "observed" if obs else "predicted"] + [f"{v:.3f}" for v in c])


def write_amplitude_csv(traj: Trajectory, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["structure", "axis", "amplitude_mm"])
        for name, value in zip(AXIS_NAMES, traj.amplitude_mm):
            writer.writerow([traj.structure, name, f"{value:.3f}"])
        writer.writerow([traj.structure, "3D", f"{traj.amplitude_3d_mm:.3f}"])


def read_amplitude(path: Path) -> dict[str, float]:
    """axis -> amplitude (mm) from an amplitude.csv written by `write_amplitude_csv`."""
    with open(path, newline="", encoding="utf-8") as f:
        return {row["axis"]: float(row["amplitude_mm"]) for row in csv.DictReader(f)}


def plot_trajectory(traj: Trajectory, path: Path) -> None:
    """Centroid displacement from the first phase per axis vs phase; predicted phases dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rel = traj.centroids_mm - traj.centroids_mm[0]
    x = np.arange(len(traj.labels))
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    n_obs = int(traj.observed.sum())
    for k, name in enumerate(AXIS_NAMES):
        line = ax.plot(x[:n_obs], rel[:n_obs, k], "o-", label=name)[0]
        if n_obs < len(x):
            start = max(n_obs - 1, 0)
            ax.plot(x[start:], rel[start:, k], "--", color=line.get_color())
            ax.plot(x[n_obs:], rel[n_obs:, k], "s", color=line.get_color())
    if 0 < n_obs < len(x):
        ax.axvspan(n_obs - 0.5, len(x) - 0.5, color="0.92", zorder=0)
        ax.text(n_obs - 0.4, ax.get_ylim()[1], "predicted", va="top", fontsize=8, color="0.3")
    ax.set_xticks(x, traj.labels, fontsize=8)
    ax.set_xlabel("breathing phase")
    ax.set_ylabel("centroid displacement (mm)")
    ax.set_title(f"{traj.structure}: centroid trajectory (amplitude 3D {traj.amplitude_3d_mm:.1f} mm)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _write_volume(array: np.ndarray, geometry: Geometry, path: Path) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in geometry.spacing))
    image.SetOrigin(tuple(float(o) for o in geometry.origin))
    image.SetDirection(tuple(float(d) for d in geometry.direction))
    sitk.WriteImage(image, str(path), useCompression=True)


def write_clinical(folder: Path, phases: Phases, labels: np.ndarray, label_names: dict[int, str],
                   n_observed: int, structure: Optional[str] = None) -> dict[str, Path]:
    """Write the clinical outputs for one structure into `folder` (created; must be new or empty).

    Args:
        phases: all phases, observed then predicted (HU [P, Z, Y, X]).
        labels: uint8 [P, Z, Y, X] label maps on the same grid, one per phase.
        label_names: id -> name.
        n_observed: how many leading phases were observed (the rest are predictions).
        structure: the structure to track (default: the tumour, else the first label).
    Returns:
        name -> path of every file written.
    """
    if labels.shape != phases.array.shape:
        raise MedLVMError(f"labels {labels.shape} do not match the phases {phases.array.shape}")
    label_id, name = find_label(label_names, structure)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    traj = trajectory(labels, phases.geometry, label_id, phases.labels, n_observed, name)
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
    paths = {
        "trajectory_csv": folder / f"trajectory_{safe}.csv",
        "trajectory_png": folder / f"trajectory_{safe}.png",
        "amplitude_csv": folder / "amplitude.csv",
        "itv": folder / f"itv_{safe}.nrrd",
        "mip": folder / "mip.nrrd",
    }
    write_trajectory_csv(traj, paths["trajectory_csv"])
    write_amplitude_csv(traj, paths["amplitude_csv"])
    plot_trajectory(traj, paths["trajectory_png"])
    _write_volume(itv(labels, label_id), phases.geometry, paths["itv"])
    _write_volume(mip(phases.array), phases.geometry, paths["mip"])
    return paths
