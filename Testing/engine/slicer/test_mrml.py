"""MedLVMLib.slicer.mrml against the real MRML classes of the slicer-core wheel (headless, no Qt)."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from MedLVMLib.errors import InputError  # noqa: E402
from MedLVMLib.imaging.volume import Geometry, Phases  # noqa: E402
from MedLVMLib.slicer import mrml, segmentations  # noqa: E402

# a rotation about z by 30 degrees with anisotropic spacing: catches any LPS/RAS or row/column mix-up
_C, _S = np.cos(np.pi / 6), np.sin(np.pi / 6)
OBLIQUE = Geometry(spacing=(0.8, 1.2, 2.5), origin=(-120.0, 35.5, 410.0),
                   direction=(_C, -_S, 0.0, _S, _C, 0.0, 0.0, 0.0, 1.0))
FLIPPED = Geometry(spacing=(1.0, 1.0, 3.0), origin=(10.0, -20.0, 30.0),
                   direction=(-1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0))
NAMES = {1: "lungs", 2: "heart", 3: "liver", 4: "tumour", 5: "spleen"}


def app_like_scene():
    """A scene with the module logics the Slicer app registers (colours, sequences, segmentations)."""
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    colors = app_logic.GetColorLogic()
    colors.SetMRMLScene(scene)
    colors.AddDefaultColorNodes()
    app_logic.SetModuleLogic("Colors", colors)
    logics = [app_logic]
    for name, cls in (("Sequences", slicer.vtkSlicerSequencesLogic),
                      ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic)):
        logic = cls()
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(app_logic)
        app_logic.SetModuleLogic(name, logic)
        logics.append(logic)
    scene._medlvm_logics = logics  # keep the logics alive as long as the scene
    return scene


@pytest.fixture
def scene():
    scene = app_like_scene()
    yield scene
    scene.Clear(1)


def make_phases(n=4, shape=(5, 6, 7), geometry=OBLIQUE, values=None) -> Phases:
    rng = np.random.default_rng(0)
    array = rng.uniform(-1000, 1000, size=(n, *shape)).astype(np.float32)
    return Phases(array=array, geometry=geometry, index_values=values)


def make_labels(shape=(5, 6, 7)) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[1:3, 1:4, 1:3] = 1
    labels[3:5, 2:5, 3:6] = 2
    labels[0, 0, 5:] = 3
    labels[4, 5, 0] = 4
    return labels  # label 5 (spleen) stays empty


@pytest.mark.parametrize("geometry", [Geometry(), OBLIQUE, FLIPPED])
def test_geometry_matrix_round_trip(geometry):
    back = mrml.ijk_to_ras_to_geometry(mrml.geometry_to_ijk_to_ras(geometry))
    assert back.is_close(geometry, tol=1e-9)


def test_ijk_to_ras_matches_itk_physical_point():
    """Voxel (i, j, k) lands where ITK puts it (LPS), with x and y negated for RAS."""
    import SimpleITK as sitk

    image = sitk.Image(7, 6, 5, sitk.sitkFloat32)
    image.SetSpacing(OBLIQUE.spacing)
    image.SetOrigin(OBLIQUE.origin)
    image.SetDirection(OBLIQUE.direction)
    lps = np.array(image.TransformIndexToPhysicalPoint((3, 2, 4)))
    ras = mrml.geometry_to_ijk_to_ras(OBLIQUE) @ np.array([3, 2, 4, 1.0])
    np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-9)


def test_volume_node_round_trip(scene):
    array = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    node = mrml.new_volume_node(scene, array, OBLIQUE, "ct")
    np.testing.assert_array_equal(mrml.volume_array(node), array)
    assert mrml.node_geometry(node).is_close(OBLIQUE)
    assert node.GetImageData().GetDimensions() == (7, 6, 5)  # (I, J, K) = (X, Y, Z)


def test_unique_names(scene):
    first = mrml.new_volume_node(scene, np.zeros((2, 2, 2), np.float32), Geometry(), "out")
    second = mrml.new_volume_node(scene, np.zeros((2, 2, 2), np.float32), Geometry(), "out")
    assert first.GetName() == "out"
    assert second.GetName() != "out" and second.GetName().startswith("out")


@pytest.mark.parametrize("geometry", [OBLIQUE, FLIPPED])
def test_sequence_round_trip(scene, geometry):
    phases = make_phases(geometry=geometry)
    sequence = mrml.phases_to_sequence(scene, phases, "4D CT")
    assert sequence.GetNumberOfDataNodes() == 4
    assert [sequence.GetNthIndexValue(i) for i in range(4)] == ["0", "25", "50", "75"]
    assert (sequence.GetIndexName(), sequence.GetIndexUnit()) == ("phase", "%")
    assert sequence.GetIndexType() == slicer.vtkMRMLSequenceNode.NumericIndex
    back = mrml.sequence_to_phases(sequence)
    np.testing.assert_array_equal(back.array, phases.array)
    assert back.geometry.is_close(geometry)
    assert back.index_values == [0.0, 25.0, 50.0, 75.0]
    assert back.labels == ["0%", "25%", "50%", "75%"]


def test_sequence_file_round_trip(scene, tmp_path):
    phases = make_phases(values=[0.0, 10.0, 20.0, 30.0])
    sequence = mrml.phases_to_sequence(scene, phases, "input")
    path = mrml.write_sequence_file(sequence, tmp_path / "input.seq.nrrd")
    again = mrml.read_sequence_file(scene, path)
    assert again is not sequence and again.GetName() != sequence.GetName()
    back = mrml.sequence_to_phases(again)
    np.testing.assert_allclose(back.array, phases.array)
    assert back.geometry.is_close(OBLIQUE)
    assert back.index_values == [0.0, 10.0, 20.0, 30.0]
    assert again.GetIndexUnit() == "%"


def test_sequence_file_errors(scene, tmp_path):
    sequence = mrml.phases_to_sequence(scene, make_phases(), "s")
    with pytest.raises(InputError, match="seq.nrrd"):
        mrml.write_sequence_file(sequence, tmp_path / "x.nrrd")
    with pytest.raises(InputError, match="does not exist"):
        mrml.read_sequence_file(scene, tmp_path / "missing.seq.nrrd")


def test_empty_and_mixed_sequences_rejected(scene):
    empty = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "empty")
    with pytest.raises(InputError, match="empty"):
        mrml.sequence_to_phases(empty)
    mixed = mrml.phases_to_sequence(scene, make_phases(n=2), "mixed")
    other = mrml.new_volume_node(scene, np.zeros((5, 6, 7), np.float32), FLIPPED, "other")
    mixed.SetDataNodeAtValue(other, "99")
    with pytest.raises(InputError, match="different geometry"):
        mrml.sequence_to_phases(mixed)


def test_predicted_sequence_and_browser(scene):
    observed = make_phases(n=4, values=[0.0, 10.0, 20.0, 30.0])
    input_sequence = mrml.phases_to_sequence(scene, observed, "patient 4D")
    input_browser = mrml.add_browser(scene, input_sequence)
    before = mrml.volume_array(input_sequence.GetNthDataNode(0))
    n_input_browser_sequences = input_browser.GetNumberOfSynchronizedSequenceNodes(True)

    predicted = make_phases(n=3, values=[40.0, 50.0, 60.0])
    sequence, browser = mrml.add_predicted_sequence(scene, predicted, input_sequence)
    assert sequence.GetName() == "patient 4D predicted"
    assert [sequence.GetNthIndexValue(i) for i in range(3)] == ["40", "50", "60"]
    assert sequence.GetAttribute(mrml.PREDICTED_ATTRIBUTE) == "1"
    assert browser.GetMasterSequenceNode() is sequence
    assert browser.IsSynchronizedSequenceNode(input_sequence, False)
    assert browser is not input_browser
    assert mrml.find_browser(scene, input_sequence) is input_browser
    assert mrml.find_browser(scene, sequence) is browser
    # inputs untouched
    assert input_sequence.GetNumberOfDataNodes() == 4
    np.testing.assert_array_equal(mrml.volume_array(input_sequence.GetNthDataNode(0)), before)
    assert input_browser.GetNumberOfSynchronizedSequenceNodes(True) == n_input_browser_sequences
    # a second run gets new names
    sequence2, browser2 = mrml.add_predicted_sequence(scene, predicted, input_sequence)
    assert sequence2.GetName() != sequence.GetName() and browser2.GetName() != browser.GetName()


def test_terminology_table():
    entry = segmentations.terminology_entry("Liver")
    assert entry is not None and "SCT^10200004^Liver" in entry and "SCT^123037004^Anatomical Structure" in entry
    assert len(entry.split("~")) == 7
    assert "SCT^108369006^Neoplasm" in segmentations.terminology_entry("tumour")
    assert segmentations.terminology_entry("spleen-ish thing") is None
    assert segmentations.segment_color("heart", 7) == segmentations.SEGMENT_STYLES["heart"].color
    assert segmentations.segment_color("x", 1) != segmentations.segment_color("x", 2)


def test_segmentation_names_colours_and_voxels(scene):
    labels = make_labels()
    reference = mrml.new_volume_node(scene, np.zeros(labels.shape, np.float32), OBLIQUE, "ct")
    node = segmentations.labels_to_segmentation(scene, labels, OBLIQUE, NAMES, "organs", reference_volume=reference)
    summary = segmentations.segment_summary(node)
    assert [s[0] for s in summary] == ["lungs", "heart", "liver", "tumour", "spleen"]
    assert summary[2][1] == pytest.approx(segmentations.SEGMENT_STYLES["liver"].color)
    assert "SCT^10200004^Liver" in summary[2][2]
    # an unknown name keeps Slicer's default entry (if any), never one of our codes
    assert all(style.type[0] not in summary[4][2] for style in segmentations.SEGMENT_STYLES.values())
    back, names = segmentations.segmentation_to_labels(node, reference)
    assert names == NAMES
    np.testing.assert_array_equal(back, labels)
    assert scene.GetFirstNodeByName("__medlvm_temp_labelmap__") is None


def test_segmentation_rejects_2d(scene):
    with pytest.raises(InputError, match=r"\[Z, Y, X\]"):
        segmentations.labels_to_segmentation(scene, np.zeros((4, 4), np.uint8), Geometry(), NAMES, "bad")


def test_segmentation_sequence(scene):
    labels = np.stack([make_labels(), np.roll(make_labels(), 1, axis=0)])
    sequence = segmentations.labels_to_segmentation_sequence(scene, labels, OBLIQUE, NAMES, [50.0, 60.0], "organs 4D")
    assert sequence.GetNumberOfDataNodes() == 2
    assert [sequence.GetNthIndexValue(i) for i in range(2)] == ["50", "60"]
    item = sequence.GetNthDataNode(1)
    assert item.IsA("vtkMRMLSegmentationNode")
    assert [s[0] for s in segmentations.segment_summary(item)] == list(NAMES.values())
    # only the sequence is left in the scene, not the per-phase working nodes
    assert scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0
    reference = mrml.new_volume_node(scene, np.zeros(labels.shape[1:], np.float32), OBLIQUE, "ref")
    browser = mrml.add_browser(scene, sequence)
    proxy = browser.GetProxyNode(sequence)
    if proxy is not None:  # proxies need the Sequences logic, present in the app
        assert proxy.IsA("vtkMRMLSegmentationNode")
    back, _ = segmentations.segmentation_to_labels(item, reference)
    np.testing.assert_array_equal(back, labels[1])
    with pytest.raises(InputError, match="per-phase"):
        segmentations.labels_to_segmentation_sequence(scene, labels, OBLIQUE, NAMES, [50.0], "bad")


def test_motion_outputs_with_mean_and_std(scene, tmp_path):
    input_sequence = mrml.phases_to_sequence(scene, make_phases(n=3, values=[0.0, 10.0, 20.0]), "4D")
    predicted = make_phases(n=2, values=[30.0, 40.0])
    std = Phases(np.abs(predicted.array) / 10, OBLIQUE, index_values=[30.0, 40.0])
    out = mrml.write_sequence_file(mrml.phases_to_sequence(scene, predicted, "p"), tmp_path / "pred.seq.nrrd")
    mrml.write_sequence_file(mrml.phases_to_sequence(scene, predicted, "m"), tmp_path / "pred_mean.seq.nrrd")
    mrml.write_sequence_file(mrml.phases_to_sequence(scene, std, "s"), tmp_path / "pred_std.seq.nrrd")
    outputs = mrml.import_motion_outputs(scene, out, input_sequence)
    assert outputs.sequence.GetName() == "4D predicted" and outputs.mean.GetName() == "4D predicted mean"
    for node in (outputs.sequence, outputs.mean, outputs.std, input_sequence):
        assert outputs.browser.IsSynchronizedSequenceNode(node, True)
    np.testing.assert_allclose(mrml.volume_array(outputs.uncertainty), std.array.max(axis=0), rtol=1e-6)
    assert mrml.node_geometry(outputs.uncertainty).is_close(OBLIQUE)
    proxy = outputs.browser.GetProxyNode(outputs.std)
    assert proxy.GetDisplayNode().GetWindowLevelMin() == pytest.approx(0.0)
    (tmp_path / "pred_mean.seq.nrrd").unlink()
    (tmp_path / "pred_std.seq.nrrd").unlink()
    plain = mrml.import_motion_outputs(scene, out, input_sequence)
    assert plain.mean is None and plain.std is None and plain.uncertainty is None
    assert plain.sequence.GetName() != outputs.sequence.GetName()


def test_uncertainty_volume(scene):
    std = np.linspace(0, 40, 5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    node = mrml.add_uncertainty_volume(scene, std, OBLIQUE, "std")
    np.testing.assert_allclose(mrml.volume_array(node), std)
    assert mrml.node_geometry(node).is_close(OBLIQUE)
    assert node.GetAttribute(mrml.PREDICTED_ATTRIBUTE) == "1"
    assert node.GetDisplayNode().GetWindowLevelMax() == pytest.approx(np.percentile(std, 99), rel=1e-3)


def test_label_file_segment_list_and_segment_outputs(scene, tmp_path):
    import json

    phases = make_phases(n=3, values=[0.0, 10.0, 20.0])
    input_sequence = mrml.phases_to_sequence(scene, phases, "4D")
    labels = make_labels()
    example = segmentations.labels_to_segmentation(scene, labels, OBLIQUE, {1: "lungs", 2: "heart"}, "example")
    n_nodes = scene.GetNumberOfNodes()
    names = segmentations.write_label_file(scene, example, input_sequence, 1, tmp_path / "labels.nrrd")
    assert names == {1: "lungs", 2: "heart"}
    assert scene.GetNumberOfNodes() == n_nodes  # temporary nodes removed
    import SimpleITK as sitk

    written = sitk.ReadImage(str(tmp_path / "labels.nrrd"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), np.where(labels <= 2, labels, 0))
    np.testing.assert_allclose(written.GetDirection(), OBLIQUE.direction, atol=1e-6)
    np.testing.assert_allclose(written.GetOrigin(), OBLIQUE.origin, atol=1e-4)

    # what `predict segment --from-phase` writes: a label sequence plus <stem>.segments.json
    label_phases = Phases(np.stack([labels, labels, np.roll(labels, 1, 0)]).astype(np.float32), OBLIQUE,
                          index_values=[0.0, 10.0, 20.0])
    out = mrml.write_sequence_file(mrml.phases_to_sequence(scene, label_phases, "tmp"), tmp_path / "seg.seq.nrrd")
    (tmp_path / "seg.segments.json").write_text(json.dumps({"segments": [
        {"name": "lungs", "label": 1, "colour": [0.1, 0.2, 0.3]},
        {"name": "nodule A", "label": 4, "colour": [0.9, 0.8, 0.7]}]}))
    assert segmentations.read_segment_list(tmp_path / "seg.segments.json") == (
        {1: "lungs", 4: "nodule A"}, {1: (0.1, 0.2, 0.3), 4: (0.9, 0.8, 0.7)})
    outputs = segmentations.import_segment_outputs(scene, out, tmp_path / "seg.segments.json", input_sequence)
    assert outputs.sequence.GetName() == "4D segmentation"
    assert [outputs.sequence.GetNthIndexValue(i) for i in range(3)] == ["0", "10", "20"]
    summary = segmentations.segment_summary(outputs.sequence.GetNthDataNode(2))
    assert [s[0] for s in summary] == ["lungs", "nodule A"]
    assert summary[0][1] == pytest.approx(segmentations.SEGMENT_STYLES["lungs"].color)  # standard colour wins
    assert summary[1][1] == pytest.approx((0.9, 0.8, 0.7))  # otherwise the engine's colour
    assert outputs.browser.IsSynchronizedSequenceNode(input_sequence, False)
    assert scene.GetFirstNodeByName("__medlvm_temp_label_sequence__") is None


def test_label_file_errors(scene, tmp_path):
    import json

    input_sequence = mrml.phases_to_sequence(scene, make_phases(n=2), "4D")
    empty = segmentations.labels_to_segmentation(scene, np.zeros((5, 6, 7), np.uint8), OBLIQUE, {1: "liver"}, "empty")
    with pytest.raises(InputError, match="empty"):
        segmentations.write_label_file(scene, empty, input_sequence, 0, tmp_path / "l.nrrd")
    with pytest.raises(InputError, match="no item 5"):
        segmentations.write_label_file(scene, empty, input_sequence, 5, tmp_path / "l.nrrd")
    (tmp_path / "bad.json").write_text(json.dumps({"segments": [{"name": "x"}]}))
    with pytest.raises(InputError, match="segment list"):
        segmentations.read_segment_list(tmp_path / "bad.json")
