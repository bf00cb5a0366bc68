"""Qt-free helpers of the Slicer panel (MedLVM/MedLVM.py): which options a task shows, the log panel's line
length, finding an input sequence, and the parameter-node GUI connection across Slicer versions."""

from __future__ import annotations

TASK_WIDGETS = {  # the options each task shows; the others are hidden
    "motion": ["observedPhases", "phasesToPredict", "samples"],
    "segment": ["exampleSegmentation", "fromPhase"],
    "denoise": ["inputVolume", "photons", "exampleCount"],
    "superres": ["inputVolume", "factor", "superresAxis", "exampleCount"],
}
WIDGET_SUFFIXES = ("Label", "SpinBox", "Selector", "ComboBox")  # an option's widgets are named <option><suffix>
LOG_MAX_LINE = 500  # characters of one line in the log panel (its line count is capped in the .ui)


def option_visibility(task: str) -> dict:
    """{widget name: shown} for the option widgets of every task: those of `task` shown, the others hidden."""
    shown = TASK_WIDGETS.get(task, [])
    options = {name for names in TASK_WIDGETS.values() for name in names}
    return {option + suffix: option in shown for option in sorted(options) for suffix in WIDGET_SUFFIXES}


def log_line(line) -> str:
    """One line for the log panel: trailing space removed, cut at LOG_MAX_LINE characters."""
    line = str(line).rstrip()
    return line if len(line) <= LOG_MAX_LINE else line[:LOG_MAX_LINE] + " [...]"


def volume_sequences(scene) -> list:
    """The scene's sequences of scalar volumes (not segmentation or transform sequences), in scene order."""
    sequences = scene.GetNodesByClass("vtkMRMLSequenceNode")
    nodes = [sequences.GetItemAsObject(i) for i in range(sequences.GetNumberOfItems())]
    return [node for node in nodes if node.GetDataNodeClassName() == "vtkMRMLScalarVolumeNode"]


def connect_gui_with_tag(parameter_node, gui):
    """parameter_node.connectGui(gui), returning the tag that disconnects it, also on Slicer 5.8.

    5.8's wrapper returns no tag (fixed in 5.10 by Slicer commit b5a65a49a0), so disconnectGui(None) did nothing
    and the connectors of every earlier connection kept writing into the GUI. Its tag is the wrapper's
    counter before the call.
    """
    next_tag = getattr(parameter_node, "_nextParameterGUIsTag", None)
    tag = parameter_node.connectGui(gui)
    return next_tag if tag is None else tag
