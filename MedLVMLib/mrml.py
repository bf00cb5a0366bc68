"""MRML nodes <-> MedLVM arrays: volume sequences, segmentations and uncertainty maps.

Needs `slicer` (the Slicer application or the `slicer-core` wheel) and never Qt, so it runs both inside
Slicer and headless under pytest. Every function takes the scene (or a node) explicitly and calls the
MRML/VTK APIs directly instead of `slicer.util` helpers that need `slicer.mrmlScene` or `slicer.app`.

Coordinates: `volumes.Geometry` is ITK/LPS (like SimpleITK); Slicer nodes are RAS. The IJK->RAS matrix
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
from MedLVMLib.volumes import Geometry, Phases

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


def _format_index(value: float) -> str:
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
        sequence.SetDataNodeAtValue(item, _format_index(phases.index_values[p]))
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


# --------------------------------------------------------------------------- segmentations


class SegmentStyle(NamedTuple):
    """Display colour (0-1 RGB) and DICOM/SNOMED-CT coded meaning of a structure."""

    color: tuple[float, float, float]
    category: tuple[str, str]  # (code, meaning)
    type: tuple[str, str]


def _rgb(r: int, g: int, b: int) -> tuple[float, float, float]:
    return (r / 255.0, g / 255.0, b / 255.0)


_ANATOMY = ("123037004", "Anatomical Structure")
_TISSUE = ("85756007", "Tissue")
_ALTERED = ("49755003", "Morphologically Altered Structure")

# Colours follow Slicer's DICOM master list recommendations; codes are SNOMED-CT (scheme SCT).
SEGMENT_STYLES: dict[str, SegmentStyle] = {
    "body": SegmentStyle(_rgb(177, 122, 101), _ANATOMY, ("38266002", "Entire body")),
    "lungs": SegmentStyle(_rgb(197, 165, 145), _ANATOMY, ("39607008", "Lung")),
    "lung": SegmentStyle(_rgb(197, 165, 145), _ANATOMY, ("39607008", "Lung")),
    "heart": SegmentStyle(_rgb(206, 110, 84), _ANATOMY, ("80891009", "Heart")),
    "liver": SegmentStyle(_rgb(221, 130, 101), _ANATOMY, ("10200004", "Liver")),
    "bone": SegmentStyle(_rgb(241, 214, 145), _TISSUE, ("272673000", "Bone")),
    "tumour": SegmentStyle(_rgb(255, 0, 0), _ALTERED, ("108369006", "Neoplasm")),
    "tumor": SegmentStyle(_rgb(255, 0, 0), _ALTERED, ("108369006", "Neoplasm")),
}
_FALLBACK_COLORS = [_rgb(128, 174, 128), _rgb(111, 184, 210), _rgb(216, 101, 79), _rgb(230, 220, 70),
                    _rgb(144, 238, 144), _rgb(183, 156, 220), _rgb(251, 172, 100), _rgb(90, 140, 200)]


def terminology_entry(name: str) -> Optional[str]:
    """Slicer's `TerminologyEntry` tag for a known structure name (case-insensitive), else None."""
    style = SEGMENT_STYLES.get(name.strip().lower())
    if style is None:
        return None
    (cat_code, cat_meaning), (type_code, type_meaning) = style.category, style.type
    return (f"Segmentation category and type - DICOM master list~SCT^{cat_code}^{cat_meaning}"
            f"~SCT^{type_code}^{type_meaning}~^^~Anatomic codes - DICOM master list~^^~^^")


def segment_color(name: str, label: int) -> tuple[float, float, float]:
    """The standard colour of a known structure, else a fixed palette colour chosen by label value."""
    style = SEGMENT_STYLES.get(name.strip().lower())
    return style.color if style is not None else _FALLBACK_COLORS[(label - 1) % len(_FALLBACK_COLORS)]


def _ensure_converter_rules() -> None:
    """Register the segmentation representation converters (the app does it at start-up)."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if len(factory.GetConverterRules()) > 0:
        return
    for rule in ("vtkBinaryLabelmapToClosedSurfaceConversionRule", "vtkClosedSurfaceToBinaryLabelmapConversionRule",
                 "vtkClosedSurfaceToFractionalLabelmapConversionRule",
                 "vtkFractionalLabelmapToClosedSurfaceConversionRule"):
        if hasattr(slicer, rule):
            factory.RegisterConverterRule(getattr(slicer, rule)())


def _fill_segmentation(scene, segmentation_node, labels: np.ndarray, geometry: Geometry,
                       names: dict[int, str], colors: Optional[dict] = None) -> None:
    """Add one named, coloured segment per label value in `names` (empty masks give empty segments)."""
    temp = new_volume_node(scene, np.zeros(labels.shape, np.uint8), geometry, "__medlvm_temp_labelmap__",
                           "vtkMRMLLabelMapVolumeNode", display=False)
    try:
        segmentation = segmentation_node.GetSegmentation()
        for label, name in sorted(names.items()):
            color = segment_color(name, label) if name.lower() in SEGMENT_STYLES or not colors or label not in colors \
                else tuple(colors[label])
            segment_id = segmentation.AddEmptySegment(name, name, list(color))
            entry = terminology_entry(name)
            if entry is not None:
                segmentation.GetSegment(segment_id).SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), entry)
            mask = (labels == label).astype(np.uint8)
            if not mask.any():
                continue
            slicer.util.updateVolumeFromArray(temp, mask)
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(segment_id)
            if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(temp, segmentation_node,
                                                                                            ids):
                raise InputError(f"could not import segment '{name}'")
    finally:
        remove_node(scene, temp)


def _new_segmentation_node(scene, name: str):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", unique_name(scene, name))
    node.CreateDefaultDisplayNodes()
    node.SetAttribute(PREDICTED_ATTRIBUTE, "1")
    return node


def labels_to_segmentation(scene, labels: np.ndarray, geometry: Geometry, names: dict[int, str], name: str,
                           reference_volume=None, colors: Optional[dict] = None):
    """A new segmentation node from a label map [Z, Y, X]; one named, coloured segment per entry of `names`.

    Known structures get their standard colour and terminology; others `colors[label]` (0-1 RGB) or a palette.
    """
    if labels.ndim != 3:
        raise InputError(f"label map for '{name}' must be [Z, Y, X], got shape {labels.shape}")
    _ensure_converter_rules()
    node = _new_segmentation_node(scene, name)
    if reference_volume is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    _fill_segmentation(scene, node, labels, geometry, names, colors)
    return node


def segmentation_to_labels(segmentation_node, reference_volume) -> tuple[np.ndarray, dict[int, str]]:
    """Label map [Z, Y, X] on the reference volume's grid and {label: segment name} (label = segment order + 1)."""
    segmentation = segmentation_node.GetSegmentation()
    ids = vtk.vtkStringArray()
    segmentation.GetSegmentIDs(ids)
    scene = reference_volume.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__medlvm_temp_export__")
    color_tables = _node_ids(scene, "vtkMRMLColorTableNode")
    try:
        if ids.GetNumberOfValues() == 0:
            return np.zeros(volume_array(reference_volume).shape, np.uint8), {}
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation_node, ids, labelmap,
                                                                                    reference_volume):
            raise InputError(f"could not export segmentation '{segmentation_node.GetName()}'")
        names = {i + 1: segmentation.GetSegment(ids.GetValue(i)).GetName() for i in range(ids.GetNumberOfValues())}
        return volume_array(labelmap).astype(np.uint8), names
    finally:
        remove_node(scene, labelmap)
        for node_id in _node_ids(scene, "vtkMRMLColorTableNode") - color_tables:  # made by the export
            scene.RemoveNode(scene.GetNodeByID(node_id))


def _node_ids(scene, class_name: str) -> set:
    nodes = scene.GetNodesByClass(class_name)
    return {nodes.GetItemAsObject(i).GetID() for i in range(nodes.GetNumberOfItems())}


def labels_to_segmentation_sequence(scene, labels: np.ndarray, geometry: Geometry, names: dict[int, str],
                                    index_values: Sequence[float], name: str, index_name: str = "phase",
                                    index_unit: str = "%", colors: Optional[dict] = None):
    """A sequence of segmentation nodes, one per phase of `labels` [P, Z, Y, X]; returns the sequence node."""
    if labels.ndim != 4 or labels.shape[0] != len(index_values):
        raise InputError(f"per-phase labels must be [P, Z, Y, X] with P = {len(index_values)}, got {labels.shape}")
    _ensure_converter_rules()
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", unique_name(scene, name))
    sequence.SetIndexName(index_name)
    sequence.SetIndexUnit(index_unit)
    sequence.SetIndexType(slicer.vtkMRMLSequenceNode.NumericIndex)
    sequence.SetAttribute(PREDICTED_ATTRIBUTE, "1")
    for p, value in enumerate(index_values):
        item = labels_to_segmentation(scene, labels[p], geometry, names, f"{sequence.GetName()} {value:g}",
                                      colors=colors)
        sequence.SetDataNodeAtValue(item, _format_index(value))  # deep copy; the scene copy is removed
        remove_node(scene, item)
    return sequence


def segment_summary(segmentation_node) -> list[tuple[str, tuple[float, float, float], str]]:
    """(name, colour, terminology entry) of each segment, in order."""
    segmentation = segmentation_node.GetSegmentation()
    out = []
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        entry = vtk.reference("")
        segment.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), entry)
        out.append((segment.GetName(), tuple(segment.GetColor()), str(entry)))
    return out


def write_label_file(scene, segmentation_node, sequence_node, item: int, path: Path) -> dict[int, str]:
    """Write `segmentation_node` as a label map on the grid of item `item` of `sequence_node` (.nrrd / .nii.gz).

    Returns {label: segment name}. The temporary nodes it needs are removed again.
    """
    phase = sequence_node.GetNthDataNode(item)
    if phase is None:
        raise InputError(f"sequence '{sequence_node.GetName()}' has no item {item}")
    reference = new_volume_node(scene, np.zeros(volume_array(phase).shape, np.float32), node_geometry(phase),
                                "__medlvm_temp_reference__", display=False)
    try:
        labels, names = segmentation_to_labels(segmentation_node, reference)
        if not labels.any():
            raise InputError(f"segmentation '{segmentation_node.GetName()}' is empty on the input's grid")
        labelmap = new_volume_node(scene, labels, node_geometry(phase), "__medlvm_temp_labels__",
                                   "vtkMRMLLabelMapVolumeNode", display=False)
        try:
            storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
            storage.SetFileName(str(path))
            storage.SetUseCompression(True)
            if not storage.WriteData(labelmap):
                raise InputError(f"could not write the label map '{path}'")
        finally:
            remove_node(scene, labelmap)
    finally:
        remove_node(scene, reference)
    return names


def read_segment_list(path: Path) -> tuple[dict[int, str], dict[int, tuple]]:
    """({label: name}, {label: 0-1 RGB}) from the engine's `<out>.segments.json`."""
    import json

    try:
        segments = json.loads(Path(path).read_text(encoding="utf-8"))["segments"]
        names = {int(s["label"]): str(s["name"]) for s in segments}
        colors = {int(s["label"]): tuple(float(c) for c in s.get("colour", (0.5, 0.5, 0.5))) for s in segments}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"cannot read the segment list '{path}': {exc}") from exc
    return names, colors


class SegmentOutputs(NamedTuple):
    """Nodes added for one segmentation propagation: a sequence of segmentations and its browser."""

    sequence: object
    browser: object


def import_segment_outputs(scene, out_path: Path, segments_path: Path, input_sequence=None,
                           name: Optional[str] = None) -> SegmentOutputs:
    """Load the engine's per-phase label sequence as a sequence of named, coloured segmentations,
    browsed together with the input sequence by one new browser."""
    names, colors = read_segment_list(segments_path)
    temp = read_sequence_file(scene, out_path, "__medlvm_temp_label_sequence__")
    try:
        labels = sequence_to_phases(temp)
    finally:
        remove_node(scene, temp)
    base = name or (f"{input_sequence.GetName()} segmentation" if input_sequence is not None else "MedLVM segmentation")
    sequence = labels_to_segmentation_sequence(scene, np.rint(labels.array).astype(np.uint8), labels.geometry, names,
                                               labels.index_values, base, labels.index_name, labels.index_unit,
                                               colors=colors)
    browser = add_browser(scene, sequence, synchronized=[input_sequence])
    return SegmentOutputs(sequence, browser)


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
