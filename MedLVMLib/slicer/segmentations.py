"""Label maps <-> Slicer segmentation nodes: named segments with terminology codes and colours,
segmentation sequences, and the engine's segment outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import numpy as np
import slicer
import vtk

from MedLVMLib.errors import InputError
from MedLVMLib.imaging.volume import Geometry
from MedLVMLib.slicer.mrml import (
    PREDICTED_ATTRIBUTE,
    add_browser,
    format_index,
    new_volume_node,
    node_geometry,
    read_sequence_file,
    remove_node,
    sequence_to_phases,
    unique_name,
    volume_array,
)


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
        sequence.SetDataNodeAtValue(item, format_index(value))  # deep copy; the scene copy is removed
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
