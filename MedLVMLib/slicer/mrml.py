"""MRML nodes <-> MedLVM arrays: volume sequences, segmentations and uncertainty maps.

Needs `slicer` (the Slicer application or the `slicer-core` wheel) and never Qt, so it runs both inside
Slicer and headless under pytest. Every function takes the scene (or a node) explicitly and calls the
MRML/VTK APIs directly instead of `slicer.util` helpers that need `slicer.mrmlScene` or `slicer.app`.

Coordinates: `imaging.volume.Geometry` is ITK/LPS (like SimpleITK); Slicer nodes are RAS. The IJK->RAS matrix
is the IJK->LPS matrix with its first two rows negated. Arrays are [Z, Y, X] (= Slicer's [K, J, I]).
Inputs are never modified; every created node gets a unique name.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import numpy as np
import slicer
import vtk

from MedLVMLib.errors import InputError
from MedLVMLib.imaging.volume import Geometry, Phases

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
PREDICTED_ATTRIBUTE = "MedLVM.Predicted"  # node attribute marking engine outputs


# --------------------------------------------------------------------------- geometry and volumes


def geometry_to_ijk_to_ras(geometry: Geometry) -> np.ndarray:
    """4x4 IJK->RAS matrix of an ITK/LPS geometry."""
    direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(geometry.spacing)
    matrix[:3, 3] = _LPS_TO_RAS @ np.asarray(geometry.origin, dtype=float)
    return matrix


def ijk_to_ras_to_geometry(matrix: np.ndarray) -> Geometry:
    """Inverse of `geometry_to_ijk_to_ras` (columns are direction * spacing)."""
    lps = _LPS_TO_RAS @ np.asarray(matrix, dtype=float)[:3, :]
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    direction = lps[:, :3] / spacing
    return Geometry(
        spacing=tuple(float(s) for s in spacing),
        origin=tuple(float(o) for o in lps[:, 3]),
        direction=tuple(float(d) for d in direction.reshape(-1)),
    )


def _vtk_matrix(matrix: np.ndarray) -> vtk.vtkMatrix4x4:
    out = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(matrix[r, c]))
    return out


def node_geometry(volume_node) -> Geometry:
    """The ITK/LPS geometry of a volume node."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return ijk_to_ras_to_geometry(np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)]))


def unique_name(scene, base: str) -> str:
    """A node name not used in `scene` yet (`base`, else `base_1`, ...)."""
    return scene.GenerateUniqueName(base) if scene.GetFirstNodeByName(base) is not None else base


def new_volume_node(scene, array: np.ndarray, geometry: Geometry, name: str,
                    class_name: str = "vtkMRMLScalarVolumeNode", display: bool = True):
    """Add a volume node with voxels `array` [Z, Y, X] (copied) on `geometry` (`display`: with display nodes)."""
    if array.ndim != 3:
        raise InputError(f"volume '{name}' must be a 3D array [Z, Y, X], got shape {array.shape}")
    node = scene.AddNewNodeByClass(class_name, unique_name(scene, name))
    node.SetIJKToRASMatrix(_vtk_matrix(geometry_to_ijk_to_ras(geometry)))
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    if display:
        node.CreateDefaultDisplayNodes()
    return node


def remove_node(scene, node) -> None:
    """Remove a (temporary) node together with its display and storage nodes."""
    if node is None:
        return
    for getter in ("GetNumberOfDisplayNodes", "GetNumberOfStorageNodes"):
        count = getattr(node, getter, lambda: 0)()
        nth = getattr(node, getter.replace("GetNumberOf", "GetNth")[:-1], None)
        for i in reversed(range(count)):
            child = nth(i) if nth else None
            if child is not None:
                scene.RemoveNode(child)
    scene.RemoveNode(node)


def volume_array(volume_node) -> np.ndarray:
    """A copy of the voxels of a volume node, [Z, Y, X]."""
    return np.array(slicer.util.arrayFromVolume(volume_node), copy=True)


# --------------------------------------------------------------------------- sequences


def sequence_to_phases(sequence_node) -> Phases:
    """Read a volume sequence node into `Phases` (float32 HU). Raises InputError on mixed geometry."""
    n_items = sequence_node.GetNumberOfDataNodes()
    if n_items == 0:
        raise InputError(f"sequence '{sequence_node.GetName()}' is empty")
    arrays, geometry = [], None
    for i in range(n_items):
        item = sequence_node.GetNthDataNode(i)
        if not item or not item.IsA("vtkMRMLScalarVolumeNode"):
            raise InputError(f"sequence '{sequence_node.GetName()}' item {i} is not a scalar volume")
        item_geometry = node_geometry(item)
        if geometry is not None and not item_geometry.is_close(geometry):
            raise InputError(f"sequence '{sequence_node.GetName()}' item {i} has a different geometry")
        geometry = geometry or item_geometry
        arrays.append(volume_array(item).astype(np.float32))
    if len({a.shape for a in arrays}) != 1:
        raise InputError(f"sequence '{sequence_node.GetName()}' items have different sizes")
    return Phases(array=np.stack(arrays), geometry=geometry, **_index_fields(sequence_node))


def _index_fields(sequence_node) -> dict:
    n = sequence_node.GetNumberOfDataNodes()
    texts = [sequence_node.GetNthIndexValue(i) for i in range(n)]
    unit = sequence_node.GetIndexUnit() or ""
    try:
        values = [float(t) for t in texts]
    except ValueError:
        values = None  # text index: Phases makes evenly spaced values
    labels = [f"{v:g}{unit}" for v in values] if values is not None else texts
    return dict(labels=labels, index_values=values, index_name=sequence_node.GetIndexName() or "phase",
                index_unit=unit)


def format_index(value: float) -> str:
    return f"{value:g}"


def phases_to_sequence(scene, phases: Phases, name: str, predicted: bool = False):
    """A new volume sequence node (numeric index) holding every phase; returns the sequence node."""
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", unique_name(scene, name))
    sequence.SetIndexName(phases.index_name)
    sequence.SetIndexUnit(phases.index_unit)
    sequence.SetIndexType(slicer.vtkMRMLSequenceNode.NumericIndex)
    # a temporary volume outside the scene is deep-copied into each item
    item = slicer.vtkMRMLScalarVolumeNode()
    item.SetIJKToRASMatrix(_vtk_matrix(geometry_to_ijk_to_ras(phases.geometry)))
    for p in range(phases.n_phases):
        slicer.util.updateVolumeFromArray(item, np.ascontiguousarray(phases.array[p]))
        item.SetName(f"{sequence.GetName()} {phases.labels[p]}")
        if predicted:
            item.SetAttribute(PREDICTED_ATTRIBUTE, "1")
        sequence.SetDataNodeAtValue(item, format_index(phases.index_values[p]))
    if predicted:
        sequence.SetAttribute(PREDICTED_ATTRIBUTE, "1")
    return sequence


def find_browser(scene, sequence_node):
    """The first sequence browser whose master or synchronized sequences include `sequence_node`, or None."""
    browsers = scene.GetNodesByClass("vtkMRMLSequenceBrowserNode")
    for i in range(browsers.GetNumberOfItems()):
        browser = browsers.GetItemAsObject(i)
        if browser.IsSynchronizedSequenceNode(sequence_node, True):
            return browser
    return None


def add_browser(scene, sequence_node, synchronized: Sequence = (), name: Optional[str] = None):
    """A new browser with `sequence_node` as master and `synchronized` sequences browsed with it.

    The input's own browser is left untouched: the new browser gets its own proxy nodes, so the user
    can step through predicted phases with the matching input phases (same index value) beside them.
    """
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode",
                                      unique_name(scene, name or f"{sequence_node.GetName()} browser"))
    browser.SetAndObserveMasterSequenceNodeID(sequence_node.GetID())
    for other in synchronized:
        if other is not None and other is not sequence_node:
            browser.AddSynchronizedSequenceNodeID(other.GetID())
    browser.SetSelectedItemNumber(0)
    return browser


def add_predicted_sequence(scene, phases: Phases, input_sequence=None, name: Optional[str] = None):
    """Add predicted phases as a new sequence plus a browser synchronised with the input sequence.

    Returns (sequence node, browser node).
    """
    base = name or (f"{input_sequence.GetName()} predicted" if input_sequence is not None else "MedLVM predicted")
    sequence = phases_to_sequence(scene, phases, base, predicted=True)
    browser = add_browser(scene, sequence, synchronized=[input_sequence] if input_sequence is not None else [])
    return sequence, browser


def write_sequence_file(sequence_node, path: Path) -> Path:
    """Write a volume sequence node to a `.seq.nrrd` file (the node itself is not changed)."""
    path = Path(path)
    if not path.name.endswith(".seq.nrrd"):
        raise InputError(f"'{path}': volume sequences are written as .seq.nrrd")
    storage = slicer.vtkMRMLVolumeSequenceStorageNode()
    storage.SetFileName(str(path))
    if not storage.WriteData(sequence_node):
        raise InputError(f"could not write sequence '{sequence_node.GetName()}' to '{path}'")
    return path


def read_sequence_file(scene, path: Path, name: Optional[str] = None):
    """Read a `.seq.nrrd` into a new sequence node of `scene`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"sequence file '{path}' does not exist")
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", unique_name(scene, name or path.name.split(".")[0]))
    storage = slicer.vtkMRMLVolumeSequenceStorageNode()
    storage.SetScene(scene)
    storage.SetFileName(str(path))
    if not storage.ReadData(sequence):
        scene.RemoveNode(sequence)
        raise InputError(f"could not read a volume sequence from '{path}'")
    return sequence


class MotionOutputs(NamedTuple):
    """Nodes added for one motion prediction: phases, their browser and (with several samples) mean / std."""

    sequence: object
    browser: object
    mean: Optional[object] = None
    std: Optional[object] = None
    uncertainty: Optional[object] = None  # one volume: the largest std over the predicted phases


def import_motion_outputs(scene, out_path: Path, input_sequence=None, name: Optional[str] = None) -> MotionOutputs:
    """Load the engine's predicted `.seq.nrrd` (and its `_mean` / `_std` siblings when present) as new sequences,
    browsed together with the input by one new browser (predicted phase 50% beside input phase 50%)."""
    out_path = Path(out_path)
    base = name or (f"{input_sequence.GetName()} predicted" if input_sequence is not None else "MedLVM predicted")
    sequence = read_sequence_file(scene, out_path, base)
    extra = {}
    for tag, label in (("mean", "mean"), ("std", "uncertainty (std HU)")):
        path = out_path.with_name(out_path.name[: -len(".seq.nrrd")] + f"_{tag}.seq.nrrd")
        extra[tag] = read_sequence_file(scene, path, f"{base} {label}") if path.is_file() else None
    for node in (sequence, *extra.values()):
        if node is not None:
            node.SetAttribute(PREDICTED_ATTRIBUTE, "1")
    browser = add_browser(scene, sequence, synchronized=[input_sequence, extra["mean"], extra["std"]])
    uncertainty = None
    if extra["std"] is not None:
        std = sequence_to_phases(extra["std"])
        uncertainty = add_uncertainty_volume(scene, std.array.max(axis=0), std.geometry,
                                             f"{base} uncertainty (max std HU)")
        _style_uncertainty(scene, browser.GetProxyNode(extra["std"]), std.array)
    return MotionOutputs(sequence, browser, extra["mean"], extra["std"], uncertainty)


# --------------------------------------------------------------------------- uncertainty


def add_uncertainty_volume(scene, array: np.ndarray, geometry: Geometry, name: str):
    """A scalar volume of a voxel-wise spread (e.g. HU standard deviation over samples), shown with a heat map."""
    node = new_volume_node(scene, array.astype(np.float32), geometry, name)
    node.SetAttribute(PREDICTED_ATTRIBUTE, "1")
    _style_uncertainty(scene, node, array)
    return node


def _style_uncertainty(scene, node, array: np.ndarray) -> None:
    """Heat colours from 0 to the 99th percentile of `array` (no-op without a display node)."""
    display = node.GetDisplayNode() if node is not None else None
    if display is None:
        return
    if scene.GetNodeByID("vtkMRMLColorTableNodeFileColdToHotRainbow.txt") is not None:
        display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeFileColdToHotRainbow.txt")
    display.AutoWindowLevelOff()
    high = float(np.percentile(array, 99)) if array.size else 1.0
    display.SetWindowLevelMinMax(0.0, max(high, 1e-6))
