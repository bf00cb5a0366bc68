"""Reading and writing checkpoints: the official LVM layouts and MedLVM's own single-folder format.

Formats recognised in a folder:
- "medlvm": `config.json` with `format_version`, `tokenizer`, `transformer`, `preprocess` + `model.safetensors`
  whose keys are prefixed "tokenizer." / "transformer.". Either part may be absent (e.g. a tokenizer only).
- "hf-llama": HF `LlamaForCausalLM` `config.json` + `model.safetensors` or sharded safetensors with
  `model.safetensors.index.json` (Emma02/LVM_ckpts).
- "open-muse": `config.json` (`_class_name: VQGANModel`) + `pytorch_model.bin` (Emma02/vqvae_ckpts).
- "lvm": an hf-llama folder with the open-muse tokenizer in a `vqvae/` (or `vqvae_ckpts/`) subfolder.

Models are built on the meta device and the weights assigned, cast to the requested dtype and device, so a
large checkpoint is never held twice. Every problem raises CheckpointError naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import torch

from MedLVMLib.engine.config import (
    LVM_CODEBOOK_SIZE,
    LVM_VOCAB_SIZE,
    PreprocessConfig,
    TokenizerConfig,
    TransformerConfig,
)
from MedLVMLib.engine.models.transformer import Transformer
from MedLVMLib.engine.models.vqgan import VQGAN
from MedLVMLib.errors import CheckpointError, MedLVMError

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
MUSE_WEIGHTS_NAME = "pytorch_model.bin"
TOKENIZER_SUBFOLDERS = ("vqvae", "vqvae_ckpts", "tokenizer")
# Trained weights stay far below this; random bytes in a float tensor's data give values up to ~1e38.
MAX_ABS_WEIGHT = 1e6


@dataclass
class Checkpoint:
    """What a checkpoint folder held. tokenizer / transformer are None when the folder has no such part."""

    tokenizer: Optional[VQGAN]
    transformer: Optional[Transformer]
    preprocess: PreprocessConfig
    model_id: str
    description: str
    format: str
    path: Path


def sha256_file(path: os.PathLike, chunk_size: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: Path) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: file not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc}); the file is corrupt or truncated") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


# ----------------------------------------------------------------------------------------------- raw tensors


def _read_safetensors(path: Path) -> Dict[str, torch.Tensor]:
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types for bad headers and short files
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({exc})") from exc


def _read_sharded(folder: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Path]]:
    """Tensors of a sharded safetensors checkpoint, and the file each key came from."""
    index_path = folder / INDEX_NAME
    weight_map = read_json(index_path).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_path}: no 'weight_map' in the index")
    shards = sorted(set(weight_map.values()))
    missing = [s for s in shards if not (folder / s).is_file()]
    if missing:
        raise CheckpointError(f"{index_path}: missing shard file(s) {missing} in {folder}")
    tensors: Dict[str, torch.Tensor] = {}
    sources: Dict[str, Path] = {}
    for shard in shards:
        for key, value in _read_safetensors(folder / shard).items():
            tensors[key], sources[key] = value, folder / shard
    absent = sorted(k for k, s in weight_map.items() if k not in tensors)
    if absent:
        raise CheckpointError(f"{index_path}: tensors listed in the index are absent from their shards: "
                              f"{absent[:5]}{' ...' if len(absent) > 5 else ''}")
    return tensors, sources


def _read_torch_bin(path: Path) -> Dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: corrupt or truncated PyTorch checkpoint ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state_dict (a dict of tensors)")
    return state


# ----------------------------------------------------------------------------------------------- configs


def transformer_config_from_hf(data: Dict[str, Any], source: Path,
                               codebook_size: Optional[int] = None) -> TransformerConfig:
    """TransformerConfig from an HF LlamaConfig dict. codebook_size defaults to 8192 for LVM's 8292 vocab."""
    try:
        heads = int(data["num_attention_heads"])
        kv_heads = int(data.get("num_key_value_heads") or heads)
        vocab = int(data["vocab_size"])
        rope = data.get("rope_theta") or (data.get("rope_parameters") or {}).get("rope_theta") or 10000.0
        if kv_heads != heads:
            raise CheckpointError(f"{source}: grouped-query attention ({kv_heads} kv heads) is not supported")
        if (data.get("rope_scaling") or {}).get("rope_type", "default") not in ("default", None):
            raise CheckpointError(f"{source}: RoPE scaling {data['rope_scaling']} is not supported")
        if codebook_size is None:
            codebook_size = LVM_CODEBOOK_SIZE if vocab == LVM_VOCAB_SIZE else int(data.get("codebook_size", vocab))
        return TransformerConfig(vocab_size=vocab, block_size=int(data.get("max_position_embeddings", 4096)),
                                 dim=int(data["hidden_size"]), n_layer=int(data["num_hidden_layers"]), n_head=heads,
                                 intermediate_size=int(data["intermediate_size"]), rope_base=float(rope),
                                 norm_eps=float(data.get("rms_norm_eps", 1e-6)), codebook_size=codebook_size)
    except KeyError as exc:
        raise CheckpointError(f"{source}: LLaMA config lacks {exc}") from exc


def tokenizer_config_from_muse(data: Dict[str, Any], source: Path) -> TokenizerConfig:
    """TokenizerConfig from an open-muse VQGANModel config.json (attention blocks are not supported)."""
    if data.get("attn_resolutions") or data.get("no_attn_mid_block") is False:
        raise CheckpointError(f"{source}: VQGAN with attention blocks is not supported "
                              f"(attn_resolutions={data.get('attn_resolutions')}, no_attn_mid_block="
                              f"{data.get('no_attn_mid_block')})")
    try:
        return TokenizerConfig(resolution=int(data["resolution"]), num_channels=int(data.get("num_channels", 3)),
                               hidden_channels=int(data["hidden_channels"]),
                               channel_mult=tuple(int(m) for m in data["channel_mult"]),
                               num_res_blocks=int(data["num_res_blocks"]), z_channels=int(data["z_channels"]),
                               codebook_size=int(data["num_embeddings"]), embed_dim=int(data["quantized_embed_dim"]),
                               commitment_cost=float(data.get("commitment_cost", 0.25)),
                               norm_groups=int(data.get("norm_groups", 32)))
    except KeyError as exc:
        raise CheckpointError(f"{source}: open-muse VQGAN config lacks {exc}") from exc


def tokenizer_config_to_muse(config: TokenizerConfig) -> Dict[str, Any]:
    """The open-muse config.json for a TokenizerConfig; `norm_groups` is added only when it is not open-muse's 32."""
    extra = {} if config.norm_groups == 32 else {"norm_groups": config.norm_groups}
    return {**extra, "_class_name": "VQGANModel", "_version": "0.0.1", "attn_resolutions": [],
            "channel_mult": list(config.channel_mult), "commitment_cost": config.commitment_cost, "dropout": 0.0,
            "hidden_channels": config.hidden_channels, "no_attn_mid_block": True,
            "num_channels": config.num_channels, "num_embeddings": config.codebook_size,
            "num_res_blocks": config.num_res_blocks, "quantized_embed_dim": config.embed_dim,
            "resample_with_conv": True, "resolution": config.resolution, "z_channels": config.z_channels}


# ----------------------------------------------------------------------------------------------- building


def _check_state(model: torch.nn.Module, state: Dict[str, torch.Tensor], sources: Dict[str, Path]) -> None:
    """Raise CheckpointError naming the file for missing, unexpected or wrongly shaped tensors."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    where = next(iter(sources.values()), "checkpoint")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(k for k in set(state) - set(expected) if not k.endswith("rotary_emb.inv_freq"))
    if missing:
        raise CheckpointError(f"{where}: missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''} "
                              f"({len(missing)} of {len(expected)})")
    if unexpected:
        raise CheckpointError(f"{where}: unexpected tensors {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise CheckpointError(f"{sources.get(key, where)}: tensor '{key}' has shape {tuple(state[key].shape)}, "
                                  f"the config expects {shape}")


def _value_problem(low: float, high: float) -> str:
    """What is wrong with a tensor whose smallest and largest values are (low, high), or ""."""
    if math.isnan(low) or math.isnan(high):
        return "holds NaN values"
    if math.isinf(low) or math.isinf(high):
        return "holds infinite values"
    if max(abs(low), abs(high)) > MAX_ABS_WEIGHT:
        return f"holds values up to {max(abs(low), abs(high)):.3g} (trained weights stay below {MAX_ABS_WEIGHT:.0e})"
    return ""


def check_values(state: Dict[str, torch.Tensor], sources: Dict[str, Path]) -> None:
    """Raise CheckpointError naming the tensor and its file for NaN, infinite or absurdly large weights, which
    would otherwise load and give a constant or NaN image without any error."""
    for key, tensor in state.items():
        if not tensor.is_floating_point() or tensor.numel() == 0 or tensor.is_meta:
            continue
        low, high = (float(v) for v in torch.aminmax(tensor))  # one pass; NaN propagates
        problem = _value_problem(low, high)
        if problem:
            raise CheckpointError(f"{sources.get(key, 'checkpoint')}: tensor '{key}' {problem}; the file is corrupt: "
                                  "download, export or train it again")


def build_model(module_cls, config, state: Dict[str, torch.Tensor], sources: Dict[str, Path],
                device: Any = "cpu", dtype: Optional[torch.dtype] = None) -> torch.nn.Module:
    """Build module_cls(config) without allocating, check and assign the state, cast, move, set eval mode."""
    with torch.device("meta"):
        model = module_cls(config)
    _check_state(model, state, sources)
    wanted = set(model.state_dict())
    check_values({k: v for k, v in state.items() if k in wanted}, sources)
    state = {k: v.to(device=device, dtype=dtype if (dtype and v.is_floating_point()) else v.dtype)
             for k, v in state.items() if k in wanted}
    model.load_state_dict(state, strict=True, assign=True)
    if isinstance(model, Transformer):
        model.reset_rope(device)
    return model.eval()


def weight_files(folder: Path) -> Dict[str, Path]:
    return {n: folder / n for n in (SAFETENSORS_NAME, INDEX_NAME, MUSE_WEIGHTS_NAME) if (folder / n).is_file()}


def detect_format(folder: Path) -> str:
    """One of "medlvm", "hf-llama", "lvm", "open-muse"; CheckpointError otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a folder (a checkpoint is a folder with config.json and weights)")
    config = read_json(folder / CONFIG_NAME)
    files = weight_files(folder)
    if "format_version" in config:
        return "medlvm"
    if config.get("_class_name") == "VQGANModel" or "num_embeddings" in config:
        return "open-muse"
    if config.get("model_type") == "llama" or "LlamaForCausalLM" in (config.get("architectures") or []):
        if not (SAFETENSORS_NAME in files or INDEX_NAME in files):
            raise CheckpointError(f"{folder}: LLaMA config.json but no {SAFETENSORS_NAME} or {INDEX_NAME}")
        return "lvm" if find_tokenizer_folder(folder) else "hf-llama"
    raise CheckpointError(f"{folder / CONFIG_NAME}: unknown checkpoint format (expected a MedLVM config with "
                          "format_version, an HF LLaMA config, or an open-muse VQGANModel config)")


def find_tokenizer_folder(folder: Path) -> Optional[Path]:
    for name in TOKENIZER_SUBFOLDERS:
        sub = folder / name
        if (sub / CONFIG_NAME).is_file():
            return sub
    return None


def load_open_muse(folder: Path, device: Any = "cpu", dtype: Optional[torch.dtype] = torch.float32) -> VQGAN:
    config = tokenizer_config_from_muse(read_json(folder / CONFIG_NAME), folder / CONFIG_NAME)
    path = folder / MUSE_WEIGHTS_NAME
    state = _read_safetensors(folder / SAFETENSORS_NAME) if not path.exists() and (
        folder / SAFETENSORS_NAME).exists() else _read_torch_bin(path)
    return build_model(VQGAN, config, state, {k: path for k in state}, device, dtype)


def load_hf_llama(folder: Path, device: Any = "cpu", dtype: Optional[torch.dtype] = None,
                  codebook_size: Optional[int] = None) -> Transformer:
    config = transformer_config_from_hf(read_json(folder / CONFIG_NAME), folder / CONFIG_NAME, codebook_size)
    if (folder / INDEX_NAME).is_file():
        state, sources = _read_sharded(folder)
    else:
        state = _read_safetensors(folder / SAFETENSORS_NAME)
        sources = {k: folder / SAFETENSORS_NAME for k in state}
    if "lm_head.weight" not in state and "model.embed_tokens.weight" in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]  # tie_word_embeddings checkpoints
    return build_model(Transformer, config, state, sources, device, dtype)


def _split_prefix(state: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_medlvm(folder: Path, device: Any = "cpu", dtype: Optional[torch.dtype] = None) -> Checkpoint:
    meta = read_json(folder / CONFIG_NAME)
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{folder / CONFIG_NAME}: format_version {meta['format_version']} is newer than this "
                              f"MedLVM understands ({FORMAT_VERSION}); update MedLVM")
    path = folder / SAFETENSORS_NAME
    state = _read_safetensors(path)
    try:
        tok_cfg = TokenizerConfig.from_dict(meta["tokenizer"]) if meta.get("tokenizer") else None
        tr_cfg = TransformerConfig.from_dict(meta["transformer"]) if meta.get("transformer") else None
        pre = PreprocessConfig.from_dict(meta.get("preprocess") or {})
    except MedLVMError as exc:
        raise CheckpointError(f"{folder / CONFIG_NAME}: {exc}") from exc
    tokenizer = transformer = None
    if tok_cfg is not None:
        part = _split_prefix(state, "tokenizer.")
        tokenizer = build_model(VQGAN, tok_cfg, part, {k: path for k in part}, device, torch.float32)
    if tr_cfg is not None:
        part = _split_prefix(state, "transformer.")
        transformer = build_model(Transformer, tr_cfg, part, {k: path for k in part}, device, dtype)
    return Checkpoint(tokenizer, transformer, pre, str(meta.get("model_id") or folder.name),
                      str(meta.get("description", "")), "medlvm", folder)


def load_checkpoint(path: os.PathLike, device: Any = "cpu", dtype: Optional[torch.dtype] = None,
                    tokenizer_path: Optional[os.PathLike] = None) -> Checkpoint:
    """Load any supported checkpoint folder. dtype applies to the transformer (the tokenizer stays fp32).

    tokenizer_path: an open-muse (or MedLVM) folder to pair with an HF LLaMA folder.
    """
    folder = Path(path).expanduser()
    fmt = detect_format(folder)
    if fmt == "medlvm":
        ckpt = load_medlvm(folder, device, dtype)
    elif fmt == "open-muse":
        ckpt = Checkpoint(load_open_muse(folder, device), None, PreprocessConfig(), folder.name, "", fmt, folder)
    else:
        tok_folder = Path(tokenizer_path) if tokenizer_path else find_tokenizer_folder(folder)
        tokenizer = load_checkpoint(tok_folder, device).tokenizer if tok_folder else None
        codebook = tokenizer.config.codebook_size if tokenizer is not None else None
        transformer = load_hf_llama(folder, device, dtype, codebook)
        ckpt = Checkpoint(tokenizer, transformer, PreprocessConfig(), folder.name, "", fmt, folder)
    if tokenizer_path and fmt in ("medlvm", "open-muse"):
        ckpt.tokenizer = load_checkpoint(tokenizer_path, device).tokenizer
    return ckpt


def _prefixed(prefix: str, module: Optional[torch.nn.Module]) -> Iterator[Tuple[str, torch.Tensor]]:
    if module is not None:
        for key, value in module.state_dict().items():
            yield prefix + key, value.detach().to("cpu").contiguous()


def save_checkpoint(folder: os.PathLike, *, tokenizer: Optional[VQGAN] = None,
                    transformer: Optional[Transformer] = None, preprocess: Optional[PreprocessConfig] = None,
                    model_id: str = "", description: str = "", overwrite: bool = False,
                    dtype: Optional[torch.dtype] = None) -> Path:
    """Write MedLVM's format: folder/config.json + folder/model.safetensors (written atomically).

    dtype: cast the transformer's floating tensors (e.g. torch.bfloat16) before writing.
    """
    from safetensors.torch import save_file

    from MedLVMLib.outputs import atomic_path

    if tokenizer is None and transformer is None:
        raise MedLVMError("save_checkpoint needs a tokenizer, a transformer or both")
    meta = {"format_version": FORMAT_VERSION, "model_id": model_id, "description": description,
            "tokenizer": tokenizer.config.to_dict() if tokenizer is not None else None,
            "transformer": transformer.config.to_dict() if transformer is not None else None,
            "preprocess": (preprocess or PreprocessConfig()).to_dict()}
    tensors = dict(_prefixed("tokenizer.", tokenizer))
    for key, value in _prefixed("transformer.", transformer):
        tensors[key] = value.to(dtype) if dtype is not None and value.is_floating_point() else value
    with atomic_path(folder, overwrite) as tmp:
        tmp.mkdir(parents=True)
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        save_file(tensors, str(tmp / SAFETENSORS_NAME), metadata={"format": "pt", "medlvm_format": "1"})
    return Path(folder)


def transformer_config_to_hf(config: TransformerConfig) -> Dict[str, Any]:
    """The HF LlamaConfig dict (config.json) for a TransformerConfig."""
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": config.vocab_size,
            "hidden_size": config.dim, "intermediate_size": config.intermediate_size,
            "num_hidden_layers": config.n_layer, "num_attention_heads": config.n_head,
            "num_key_value_heads": config.n_head, "max_position_embeddings": config.block_size,
            "rms_norm_eps": config.norm_eps, "rope_theta": config.rope_base, "hidden_act": "silu",
            "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False, "bos_token_id": 1,
            "eos_token_id": 2, "torch_dtype": "float32"}


def export_hf_llama(folder: os.PathLike, transformer: Transformer, n_shards: int = 1) -> Path:
    """Write the transformer in the official HF layout (config.json + safetensors, sharded with an index)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(transformer_config_to_hf(transformer.config), indent=2))
    tensors = {k: v.detach().cpu().contiguous() for k, v in transformer.state_dict().items()}
    if n_shards <= 1:
        save_file(tensors, str(folder / SAFETENSORS_NAME), metadata={"format": "pt"})
        return folder
    keys = list(tensors)
    weight_map = {}
    for i in range(n_shards):
        name = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {k: tensors[k] for k in keys[i::n_shards]}
        save_file(part, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    total = sum(v.numel() * v.element_size() for v in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / INDEX_NAME).write_text(json.dumps(index, indent=2))
    return folder


def export_open_muse(folder: os.PathLike, tokenizer: VQGAN) -> Path:
    """Write the tokenizer in the open-muse layout (config.json + pytorch_model.bin)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(tokenizer_config_to_muse(tokenizer.config), indent=2))
    torch.save({k: v.detach().cpu() for k, v in tokenizer.state_dict().items()}, str(folder / MUSE_WEIGHTS_NAME))
    return folder


def read_configs(path: os.PathLike) -> Dict[str, Any]:
    """The format and configs of a checkpoint folder, without reading weights (for listings)."""
    folder = Path(path)
    fmt = detect_format(folder)
    data = read_json(folder / CONFIG_NAME)
    if fmt == "medlvm":
        return {"format": fmt, "tokenizer": data.get("tokenizer"), "transformer": data.get("transformer")}
    if fmt == "open-muse":
        return {"format": fmt, "tokenizer": tokenizer_config_from_muse(data, folder).to_dict(), "transformer": None}
    tok = find_tokenizer_folder(folder)
    tok_cfg = read_configs(tok)["tokenizer"] if tok else None
    return {"format": fmt, "tokenizer": tok_cfg,
            "transformer": transformer_config_from_hf(data, folder / CONFIG_NAME).to_dict()}
