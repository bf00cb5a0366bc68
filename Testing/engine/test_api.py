"""Public API: load_model (folder, registry id, random fallback), encode/decode/generate, devices helpers."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from MedLVMLib import api
from MedLVMLib.engine import lvm
from MedLVMLib.engine.checkpoints import registry
from MedLVMLib.engine.checkpoints.formats import save_checkpoint
from MedLVMLib.engine.config import TokenizerConfig, TransformerConfig
from MedLVMLib.engine.devices import chunked, parse_dtype, resolve_device
from MedLVMLib.engine.models.transformer import Transformer
from MedLVMLib.engine.models.vqgan import VQGAN
from MedLVMLib.errors import CheckpointError, InputError, MedLVMError


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("api") / "tiny"
    return save_checkpoint(folder, tokenizer=VQGAN(TokenizerConfig.from_name("tiny")),
                                       transformer=Transformer(TransformerConfig.from_name("tiny")), model_id="tiny")


@pytest.fixture(scope="module")
def model(tiny_folder):
    return api.load_model(tiny_folder, device="cpu")


@pytest.fixture
def resources(tmp_path, monkeypatch):
    """A private Resources/ with a registry whose bundled default is missing."""
    models = [{"id": "bundled-x", "description": "d", "source": {"bundled": "models/bundled-x"}, "tasks": ["motion"]},
              {"id": "hub-x", "description": "d", "source": {"hub": "org/x"}, "tasks": ["motion"]}]
    (tmp_path / "models.json").write_text(json.dumps({"default": "bundled-x", "models": models}))
    monkeypatch.setenv("MEDLVM_RESOURCES", str(tmp_path))
    monkeypatch.setenv("MEDLVM_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_load_folder(model):
    assert model.model_id == "tiny" and model.image_size == 32 and model.tokens_per_image == 64
    assert model.device == torch.device("cpu") and model.dtype == torch.float32


def test_default_falls_back_to_random_model_with_warning(resources, caplog):
    with caplog.at_level(logging.WARNING):
        model = api.load_model(None, device="cpu")
    assert model.model_id == api.RANDOM_FALLBACK_ID and model.image_size == 64
    assert "RANDOM weights" in caplog.text and "medlvm train" in caplog.text


def test_default_bundled_model_loads_when_present(resources, tiny_folder):
    import shutil

    shutil.copytree(tiny_folder, resources / "models" / "bundled-x")
    assert api.load_model(None, device="cpu").model_id == "tiny"
    assert api.load_model("bundled-x", device="cpu").model_id == "tiny"


@pytest.mark.parametrize("name,message", [("bundled-x", "registered bundled model 'bundled-x' is missing"),
                                          ("hub-x", "medlvm models --download hub-x"),
                                          ("no-such-model", "neither a folder nor a registered id")])
def test_missing_models_explain(resources, name, message):
    with pytest.raises(CheckpointError, match=message):
        api.load_model(name, device="cpu")


def test_model_needs_both_parts(tmp_path):
    folder = save_checkpoint(tmp_path / "tok", tokenizer=VQGAN(TokenizerConfig.from_name("tiny")))
    with pytest.raises(CheckpointError, match="no transformer"):
        api.load_model(folder, device="cpu")


def test_model_cache(tiny_folder, monkeypatch):
    monkeypatch.setattr(lvm, "MODEL_CACHE", {})
    assert api.load_model(tiny_folder, device="cpu") is api.load_model(tiny_folder, device="cpu")
    monkeypatch.setattr(lvm, "MODEL_CACHE", None)
    assert api.load_model(tiny_folder, device="cpu") is not api.load_model(tiny_folder, device="cpu")


def test_api_is_the_engine_surface():
    """The public module names the engine's objects themselves (no copies that could drift)."""
    for name in api.__all__:
        assert getattr(api, name) is (getattr(lvm, name) if hasattr(lvm, name) else getattr(registry, name))


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 50, 40), (1, 16, 16)])
def test_encode_decode(model, shape):
    images = np.random.default_rng(0).random(shape, dtype=np.float32)
    codes = api.encode_images(model, images, batch_size=2)
    assert codes.shape == (shape[0], 64) and codes.dtype == np.int64
    frames = api.decode_codes(model, codes, batch_size=2)
    assert frames.shape == (shape[0], 32, 32) and frames.dtype == np.float32
    assert 0.0 <= frames.min() and frames.max() <= 1.0


def test_encode_matches_tokenizer_and_batching(model):
    images = torch.rand(5, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        direct = model.tokenizer.encode(images[:, None].expand(-1, 3, -1, -1)).reshape(5, -1).numpy()
    assert np.array_equal(api.encode_images(model, images), direct)
    assert np.array_equal(api.encode_images(model, images, batch_size=2), direct)


@pytest.mark.parametrize("bad", [np.zeros((32, 32)), np.full((1, 32, 32), np.nan)])
def test_encode_rejects_bad_images(model, bad):
    with pytest.raises(InputError):
        api.encode_images(model, bad)


def test_decode_rejects_bad_codes(model):
    with pytest.raises(InputError):
        api.decode_codes(model, np.zeros((2, 63), dtype=np.int64))


def test_generate_batched_and_chunked_agree(model):
    prompt = np.random.default_rng(0).integers(0, 64, (3, 128))
    full = api.generate(model, prompt, 2, greedy=True)
    chunks = api.generate(model, prompt, 2, greedy=True, batch_size=2)
    assert full.shape == (3, 2, 64) and full.dtype == np.int64
    assert np.array_equal(full, chunks)
    assert model.transformer.max_seq_length == 0  # the KV cache is freed after generation
    with pytest.raises(InputError):
        api.generate(model, prompt.astype(np.float32), 1)


def test_resolve_device():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(MedLVMError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(MedLVMError, match="CUDA is not available"):
            resolve_device("cuda")


def test_parse_dtype():
    assert parse_dtype("bf16") == torch.bfloat16 and parse_dtype(None) is None
    with pytest.raises(MedLVMError):
        parse_dtype("int3")


def test_chunked_halves_batch_on_oom():
    sizes = []

    def fn(part):
        sizes.append(part.stop - part.start)
        if part.stop - part.start > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        return list(range(part.start, part.stop))

    results = chunked(fn, 7, batch_size=8)
    assert sum(results, []) == list(range(7)) and sizes[:3] == [7, 3, 1]

    def always(part):
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(MedLVMError, match="batch size 1"):
        chunked(always, 4, 4)
    with pytest.raises(RuntimeError, match="other"):
        chunked(lambda part: (_ for _ in ()).throw(RuntimeError("other")), 2)
