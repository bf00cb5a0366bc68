"""Checkpoint formats: official layouts (sharded LLaMA, open-muse), MedLVM's own, registry, corrupt files."""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import shutil
import sys
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
import torch

from MedLVMLib.engine.checkpoints import download
from MedLVMLib.engine.checkpoints.download import download_model
from MedLVMLib.engine.checkpoints.formats import (
    detect_format,
    export_hf_llama,
    export_open_muse,
    load_checkpoint,
    save_checkpoint,
    sha256_file,
)
from MedLVMLib.engine.checkpoints.registry import load_registry, model_location, resolve_model_folder
from MedLVMLib.engine.config import PreprocessConfig, TokenizerConfig, TransformerConfig
from MedLVMLib.engine.models.transformer import Transformer
from MedLVMLib.engine.models.vqgan import VQGAN
from MedLVMLib.errors import CheckpointError, MedLVMError


@pytest.fixture(scope="module")
def tiny_models():
    torch.manual_seed(0)
    return VQGAN(TokenizerConfig.from_name("tiny")).eval(), Transformer(TransformerConfig.from_name("tiny")).eval()


@pytest.fixture
def lvm_folder(tmp_path, tiny_models):
    """An official-layout LVM install: sharded HF LLaMA files + vqvae/ with open-muse files."""
    tokenizer, transformer = tiny_models
    folder = export_hf_llama(tmp_path / "lvm", transformer, n_shards=3)
    export_open_muse(folder / "vqvae", tokenizer)
    return folder


def same_outputs(a, b) -> bool:
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    idx = torch.randint(0, 80, (2, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a[0].encode(images), b[0].encode(images)) and torch.equal(a[1](idx), b[1](idx))


def test_sharded_lvm_folder_loads(lvm_folder, tiny_models):
    assert len(list(lvm_folder.glob("model-*-of-00003.safetensors"))) == 3
    assert detect_format(lvm_folder) == "lvm"
    ckpt = load_checkpoint(lvm_folder)
    assert ckpt.format == "lvm" and ckpt.transformer.config.codebook_size == 64
    assert same_outputs((ckpt.tokenizer, ckpt.transformer), tiny_models)


def test_single_safetensors_with_separate_tokenizer(tmp_path, tiny_models):
    tokenizer, transformer = tiny_models
    llama = export_hf_llama(tmp_path / "llama", transformer)
    muse = export_open_muse(tmp_path / "muse", tokenizer)
    assert detect_format(llama) == "hf-llama" and detect_format(muse) == "open-muse"
    ckpt = load_checkpoint(llama, tokenizer_path=muse)
    assert same_outputs((ckpt.tokenizer, ckpt.transformer), tiny_models)
    assert load_checkpoint(llama).tokenizer is None


def test_dtype_cast(lvm_folder):
    ckpt = load_checkpoint(lvm_folder, dtype=torch.bfloat16)
    assert ckpt.transformer.lm_head.weight.dtype == torch.bfloat16
    assert ckpt.transformer.rope_cos.dtype == torch.float32
    assert ckpt.tokenizer.quant_conv.weight.dtype == torch.float32  # the tokenizer stays fp32


def test_medlvm_format_round_trip(tmp_path, tiny_models):
    tokenizer, transformer = tiny_models
    out = save_checkpoint(tmp_path / "ours", tokenizer=tokenizer, transformer=transformer,
                                      preprocess=PreprocessConfig(-1200.0, 400.0), model_id="t", description="d")
    meta = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert set(meta) == {"format_version", "tokenizer", "transformer", "preprocess", "model_id", "description"}
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as handle:
        prefixes = {k.split(".")[0] for k in handle.keys()}
    assert prefixes == {"tokenizer", "transformer"}
    ckpt = load_checkpoint(out)
    assert (ckpt.format, ckpt.model_id, ckpt.description) == ("medlvm", "t", "d")
    assert ckpt.preprocess == PreprocessConfig(-1200.0, 400.0)
    assert same_outputs((ckpt.tokenizer, ckpt.transformer), tiny_models)
    with pytest.raises(MedLVMError, match="already exists"):
        save_checkpoint(out, tokenizer=tokenizer)
    save_checkpoint(out, tokenizer=tokenizer, overwrite=True)
    assert load_checkpoint(out).transformer is None


def _corrupt_cases():
    def missing_shard(folder):
        next(folder.glob("model-00002-*.safetensors")).unlink()
        return "model-00002-of-00003.safetensors"

    def truncated_shard(folder):
        path = next(folder.glob("model-00001-*.safetensors"))
        path.write_bytes(path.read_bytes()[:-100])
        return path.name

    def wrong_shape(folder):
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        cfg["intermediate_size"] = 200
        (folder / "config.json").write_text(json.dumps(cfg))
        return "mlp"

    def unknown_format(folder):
        (folder / "config.json").write_text(json.dumps({"hello": 1}))
        return "unknown checkpoint format"

    def bad_json(folder):
        (folder / "config.json").write_text("{\"model_type\": ")
        return "config.json"

    def truncated_bin(folder):
        path = folder / "vqvae" / "pytorch_model.bin"
        path.write_bytes(path.read_bytes()[:5000])
        return "pytorch_model.bin"

    def gqa(folder):
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        cfg["num_key_value_heads"] = 1
        (folder / "config.json").write_text(json.dumps(cfg))
        return "grouped-query"

    def missing_tensor_in_index(folder):
        index = json.loads((folder / "model.safetensors.index.json").read_text(encoding="utf-8"))
        index["weight_map"]["model.extra.weight"] = "model-00001-of-00003.safetensors"
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
        return "model.extra.weight"

    return [missing_shard, truncated_shard, wrong_shape, unknown_format, bad_json, truncated_bin, gqa,
            missing_tensor_in_index]


@pytest.mark.parametrize("corrupt", _corrupt_cases(), ids=lambda f: f.__name__)
def test_corrupt_checkpoints_raise_clear_errors(lvm_folder, corrupt):
    expected = corrupt(lvm_folder)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(lvm_folder)
    assert expected in str(info.value)
    assert str(lvm_folder) in str(info.value)  # names the file


def test_not_a_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not a folder"):
        load_checkpoint(tmp_path / "nothing")


def test_sha256(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"medlvm" * 1000)
    assert sha256_file(path, chunk_size=7) == hashlib.sha256(b"medlvm" * 1000).hexdigest()


def test_registry_entries():
    registry = load_registry()
    assert {"lvm-7b", "medlvm-tiny-zs", "medlvm-tiny-ct"} <= set(registry.models)
    assert registry.default in registry.models
    lvm = registry.models["lvm-7b"]
    assert lvm.source == {"hub": "Emma02/LVM_ckpts", "tokenizer_hub": "Emma02/vqvae_ckpts"} and not lvm.bundled
    assert lvm.memory_gb >= 14
    for entry in registry.models.values():
        assert entry.description and entry.tasks and entry.recommended_device in ("cpu", "cuda")
        if entry.bundled:
            assert model_location(entry, registry).parent == registry.path.parent / "models"


def test_shipped_bundled_weights_match_the_registry():
    """Every bundled model's weights have the sha256 and size models.json gives (a retrained model whose entry was
    not updated is refused at load time), and the motion default is a bundled motion model."""
    registry = load_registry()
    bundled = [e for e in registry.models.values() if e.bundled]
    assert len(bundled) >= 4
    for entry in bundled:
        weights = model_location(entry, registry) / "model.safetensors"
        assert weights.stat().st_size == entry.size_bytes, entry.id
        assert sha256_file(weights) == entry.sha256, entry.id
        assert json.loads((weights.parent / "config.json").read_text())["model_id"] == entry.id
    motion = registry.models[registry.default_for("motion")]
    assert motion.bundled and "motion" in motion.tasks


def write_registry(folder, models, default="", task_defaults=None):
    folder.mkdir(parents=True, exist_ok=True)
    data = {"format_version": 1, "default": default, "models": models}
    if task_defaults is not None:
        data["task_defaults"] = task_defaults
    (folder / "models.json").write_text(json.dumps(data))
    return folder


def _entry(model_id, tasks):
    return {"id": model_id, "description": "d", "source": {"bundled": f"models/{model_id}"}, "tasks": tasks}


def test_task_defaults_pick_the_folder_of_the_task(tmp_path):
    entries = [_entry("general", ["motion", "segment"]), _entry("moving", ["motion"])]
    folder = write_registry(tmp_path / "res", entries, "general", {"motion": "moving"})
    for name in ("general", "moving"):
        (folder / "models" / name).mkdir(parents=True)
        (folder / "models" / name / "config.json").write_text("{}")
        (folder / "models" / name / "model.safetensors").write_bytes(b"x")
    registry = load_registry(folder / "models.json")
    assert resolve_model_folder(None, registry, "motion").name == "moving"
    assert resolve_model_folder(None, registry, "segment").name == "general"
    assert resolve_model_folder("general", registry, "motion").name == "general"  # a named model wins


@pytest.mark.parametrize("task_defaults, problem", [
    ({"motion": "absent"}, "'absent' is not among"),
    ({"segment": "moving"}, "does not list it in its tasks"),
    (["moving"], "must map a task to a model id"),
])
def test_bad_task_defaults_are_named(tmp_path, task_defaults, problem):
    entries = [_entry("general", ["motion", "segment"]), _entry("moving", ["motion"])]
    folder = write_registry(tmp_path / "res", entries, "general", task_defaults)
    with pytest.raises(CheckpointError, match=problem):
        load_registry(folder / "models.json")


def test_download_needs_consent_and_uses_cache(tmp_path, monkeypatch, lvm_folder):
    entry = {"id": "lvm-test", "description": "test", "source": {"hub": "org/llama", "tokenizer_hub": "org/vq"},
             "size_bytes": 123, "tasks": ["motion"], "recommended_device": "cpu", "memory_gb": 1}
    registry = load_registry(write_registry(tmp_path / "res", [entry]) / "models.json")
    monkeypatch.setenv("MEDLVM_CACHE", str(tmp_path / "cache"))
    fetched = []

    def fake_snapshot(repo_id, local_dir):  # a local copy stands in for the hub
        fetched.append(repo_id)
        src = lvm_folder / "vqvae" if repo_id == "org/vq" else lvm_folder
        shutil.copytree(src, local_dir, ignore=shutil.ignore_patterns("vqvae"), dirs_exist_ok=True)

    monkeypatch.setattr(download, "_snapshot_download", fake_snapshot)
    with pytest.raises(MedLVMError, match="--download"):
        download_model("lvm-test", registry=registry)
    assert fetched == []
    folder = download_model("lvm-test", consent=True, registry=registry)
    assert fetched == ["org/llama", "org/vq"] and folder == tmp_path / "cache" / "lvm-test"
    assert detect_format(folder) == "lvm"


# ----------------------------------------------------------------------------------------------- corrupt values


POISONED = {"tokenizer": "decoder.conv_out.weight", "transformer": "model.layers.1.mlp.up_proj.weight"}


def _poisoned(tiny_models, value, part):
    """Copies of the tiny models with one weight of `part` set to `value` (NaN, inf, or a huge number)."""
    models = {"tokenizer": copy.deepcopy(tiny_models[0]), "transformer": copy.deepcopy(tiny_models[1])}
    state = models[part].state_dict()
    state[POISONED[part]] = state[POISONED[part]].clone()
    state[POISONED[part]].view(-1)[7] = value
    models[part].load_state_dict(state)
    return models["tokenizer"], models["transformer"]


def _random_bytes_in_data(path):
    """Overwrite a safetensors file's tensor data (everything after its JSON header) with seeded random bytes."""
    raw = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")
    raw[start:] = np.random.default_rng(0).bytes(len(raw) - start)
    path.write_bytes(bytes(raw))


def _write(fmt, folder, models):
    tokenizer, transformer = models
    if fmt == "medlvm":
        return save_checkpoint(folder, tokenizer=tokenizer, transformer=transformer), "model.safetensors"
    if fmt == "lvm":
        export_open_muse(export_hf_llama(folder, transformer, n_shards=2) / "vqvae", tokenizer)
        return folder, "model-0000"
    return export_open_muse(folder, tokenizer), "pytorch_model.bin"


@pytest.mark.parametrize("fmt, part, value, problem", [
    ("medlvm", "transformer", float("nan"), "NaN"),
    ("medlvm", "tokenizer", float("-inf"), "infinite"),
    ("medlvm", "transformer", 3e20, r"values up to 3e\+20"),
    ("lvm", "transformer", float("inf"), "infinite"),
    ("open-muse", "tokenizer", float("nan"), "NaN"),
])
def test_non_finite_weights_are_refused_at_load(tmp_path, tiny_models, fmt, part, value, problem):
    folder, filename = _write(fmt, tmp_path / fmt, _poisoned(tiny_models, value, part))
    with pytest.raises(CheckpointError, match=problem) as info:
        load_checkpoint(folder)
    message = str(info.value)
    assert filename in message and str(folder) in message  # names the file
    assert f"tensor '{POISONED[part]}'" in message  # and the tensor


def test_random_bytes_in_tensor_data_are_refused(tmp_path, tiny_models):
    folder, _ = _write("medlvm", tmp_path / "ours", tiny_models)
    _random_bytes_in_data(folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor '.+' holds"):
        load_checkpoint(folder)


def test_finite_weights_still_load(tmp_path, tiny_models):
    folder, _ = _write("medlvm", tmp_path / "ours", _poisoned(tiny_models, 50.0, "tokenizer"))
    assert load_checkpoint(folder).tokenizer.state_dict()[POISONED["tokenizer"]].view(-1)[7] == 50.0


def _offline_errors():
    """The kinds of errors huggingface_hub raises without a network (those importable here)."""
    errors = [OSError("[Errno 101] Network is unreachable"), ConnectionError("Connection refused"),
              TimeoutError("timed out")]
    try:
        import requests

        errors.append(requests.ConnectionError("Max retries exceeded with url: /api/models/org/llama"))
    except ImportError:
        pass
    try:
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        errors.append(LocalEntryNotFoundError("Cannot find the requested files in the disk cache and outgoing "
                                              "traffic has been disabled"))
        response = SimpleNamespace(headers={}, request=None, status_code=503)  # what the error reads from one
        errors.append(HfHubHTTPError("503 Server Error: Service Unavailable", response=response))
    except ImportError:
        pass
    return errors


@pytest.fixture
def hub_registry(tmp_path, monkeypatch):
    entry = {"id": "lvm-test", "description": "test", "source": {"hub": "org/llama", "tokenizer_hub": "org/vq"},
             "size_bytes": 123, "tasks": ["motion"], "recommended_device": "cpu", "memory_gb": 1}
    monkeypatch.setenv("MEDLVM_CACHE", str(tmp_path / "cache"))
    return load_registry(write_registry(tmp_path / "res", [entry]) / "models.json")


@pytest.mark.parametrize("error", _offline_errors(), ids=lambda e: type(e).__name__)
def test_download_without_network_is_one_clear_error(hub_registry, monkeypatch, error):
    def offline(repo_id, local_dir, **options):
        raise error

    hub = ModuleType("huggingface_hub")  # stands in for the package, installed or not: nothing reaches the network
    hub.snapshot_download = offline
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    with pytest.raises(MedLVMError) as info:
        download_model("lvm-test", consent=True, registry=hub_registry)
    message = str(info.value)
    assert "could not reach the hub" in message and "org/llama" in message and "--model" in message
    assert "\n" not in message


def test_download_without_huggingface_hub(hub_registry, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if it were not installed
    with pytest.raises(MedLVMError, match="pip install huggingface_hub"):
        download_model("lvm-test", consent=True, registry=hub_registry)


def test_download_into_a_full_disk_says_so(hub_registry, monkeypatch):
    def full(repo_id, local_dir, **options):
        raise OSError(errno.ENOSPC, "No space left on device")

    hub = ModuleType("huggingface_hub")
    hub.snapshot_download = full
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    with pytest.raises(MedLVMError, match="could not write org/llama .*No space left.*MEDLVM_CACHE"):
        download_model("lvm-test", consent=True, registry=hub_registry)


def test_model_cache_loads_a_folder_once_under_any_name(tmp_path, tiny_models, monkeypatch):
    from MedLVMLib.engine import lvm

    tokenizer, transformer = tiny_models
    folder = save_checkpoint(tmp_path / "m", tokenizer=tokenizer, transformer=transformer, model_id="m")
    other = shutil.copytree(folder, tmp_path / "copy")
    monkeypatch.setattr(lvm, "MODEL_CACHE", {})
    first = lvm.load_model(str(folder), device="cpu")
    monkeypatch.chdir(tmp_path)
    assert lvm.load_model("m", device="cpu") is first  # a relative path to the same folder
    assert lvm.load_model(str(tmp_path / "copy" / ".." / "m"), device="cpu") is first
    assert lvm.load_model(str(other), device="cpu") is not first  # another folder is another model
    assert lvm.load_model(str(folder), device="cpu", dtype="bf16") is not first  # other weights dtype
