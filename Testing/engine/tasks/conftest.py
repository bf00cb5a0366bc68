"""Fixtures shared by the task tests."""

from __future__ import annotations

import pytest

from MedLVMLib.engine import lvm


@pytest.fixture
def nan_model():
    """The tiny random model with one NaN weight in its tokenizer's decoder: every decoded image is NaN."""
    model = lvm.random_model("tiny")
    state = model.tokenizer.state_dict()
    state["decoder.conv_out.weight"] = state["decoder.conv_out.weight"].clone()
    state["decoder.conv_out.weight"].view(-1)[0] = float("nan")
    model.tokenizer.load_state_dict(state)
    return model
