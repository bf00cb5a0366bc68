"""A loaded LVM: a tokenizer and a transformer that share a codebook, plus how CT becomes images;
loading by registry id or folder, batched encode / decode, and generation of whole images.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from MedLVMLib.engine import memory
from MedLVMLib.engine.checkpoints.formats import Checkpoint, load_checkpoint
from MedLVMLib.engine.checkpoints.registry import load_registry, resolve_model_folder
from MedLVMLib.engine.config import PreprocessConfig, TokenizerConfig, TransformerConfig
from MedLVMLib.engine.devices import chunked, default_dtype, parse_dtype, resolve_device
from MedLVMLib.engine.generate import check_vocabulary_prompt, generate_images, prompt_vocabulary
from MedLVMLib.engine.models.transformer import Transformer
from MedLVMLib.engine.models.vqgan import VQGAN
from MedLVMLib.errors import CheckpointError, InputError
from MedLVMLib.progress import Progress, ensure

log = logging.getLogger(__name__)

#: Loaded models kept between calls when set to a dict (the Slicer worker does this); None = no caching.
MODEL_CACHE: Optional[Dict[Any, MedLVMModel]] = None

RANDOM_FALLBACK_ID = "medlvm-tiny-random"


@dataclass
class MedLVMModel:
    """A tokenizer and a transformer that share a codebook, plus how CT becomes images."""

    tokenizer: VQGAN
    transformer: Transformer
    preprocess: PreprocessConfig
    model_id: str
    device: torch.device
    dtype: torch.dtype  # of the transformer; the tokenizer runs in fp32

    @property
    def image_size(self) -> int:
        return self.tokenizer.config.resolution

    @property
    def tokens_per_image(self) -> int:
        return self.tokenizer.config.tokens_per_image


def random_model(preset: str = "medlvm-tiny", seed: int = 0, device: Any = "cpu") -> MedLVMModel:
    """A model of the named presets with random weights (for demos before training, and tests)."""
    tok_cfg, tr_cfg = TokenizerConfig.from_name(preset), TransformerConfig.from_name(preset)
    dev = resolve_device(device)
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
        torch.manual_seed(seed)
        tokenizer = VQGAN(tok_cfg).to(dev).eval()
        transformer = Transformer(tr_cfg).to(dev).eval()
    return MedLVMModel(tokenizer, transformer, PreprocessConfig(), f"{preset}-random", dev, torch.float32)


def load_model(id_or_path: Optional[Union[str, os.PathLike]] = None, device: Any = "auto", dtype: Any = None,
               tokenizer_path: Optional[Union[str, os.PathLike]] = None, task: Optional[str] = None) -> MedLVMModel:
    """Load a tokenizer + transformer pair.

    Args:
        id_or_path: None (the bundled default of Resources/models.json, or its default for `task`), a registry
            id or a checkpoint folder (MedLVM format, or an official LVM folder: HF LLaMA files + a vqvae/
            subfolder).
        device: "auto", "cpu", "cuda", "cuda:N".
        dtype: transformer weights dtype (None: bf16 on CUDA, fp32 on CPU); the tokenizer stays fp32.
        tokenizer_path: an open-muse / MedLVM folder for the tokenizer when the folder has none.
    """
    dev = resolve_device(device)
    dt = parse_dtype(dtype) or default_dtype(dev)
    key = (str(id_or_path), str(dev), str(dt), str(tokenizer_path), str(task if id_or_path is None else None))
    if MODEL_CACHE is not None and key in MODEL_CACHE:
        return MODEL_CACHE[key]
    registry = load_registry()
    folder = resolve_model_folder(None if id_or_path is None else str(id_or_path), registry, task)
    # the same folder named another way (None, its id, a relative or absolute path) is the same model
    folder_key = (str(folder.resolve()) if folder is not None else None, str(dev), str(dt), str(tokenizer_path))
    if MODEL_CACHE is not None and folder is not None and folder_key in MODEL_CACHE:
        MODEL_CACHE[key] = MODEL_CACHE[folder_key]
        return MODEL_CACHE[key]
    if folder is None:
        log.warning("bundled model %r not found: using medlvm-tiny with RANDOM weights (seed 0); outputs are "
                    "meaningless until you train it with `medlvm train tokenizer` and `medlvm train transformer`",
                    registry.default_for(task))
        model = random_model("medlvm-tiny", seed=0, device=dev)
        model.model_id = RANDOM_FALLBACK_ID
    else:
        model = _from_checkpoint(load_checkpoint(folder, dev, dt, tokenizer_path), dev, dt)
    if MODEL_CACHE is not None:
        MODEL_CACHE[key] = model
        if folder is not None:
            MODEL_CACHE[folder_key] = model
    return model


def _from_checkpoint(ckpt: Checkpoint, device: torch.device, dtype: torch.dtype) -> MedLVMModel:
    if ckpt.tokenizer is None or ckpt.transformer is None:
        missing = "tokenizer" if ckpt.tokenizer is None else "transformer"
        raise CheckpointError(f"{ckpt.path}: this {ckpt.format} checkpoint has no {missing}; a model needs both "
                              "(give the tokenizer folder with --tokenizer / tokenizer_path=)")
    codebook, tcfg = ckpt.tokenizer.config.codebook_size, ckpt.transformer.config
    if tcfg.codebook_size != codebook or tcfg.vocab_size < codebook:
        raise CheckpointError(f"{ckpt.path}: the tokenizer has {codebook} codes but the transformer expects "
                              f"codebook_size {tcfg.codebook_size} (vocab {tcfg.vocab_size})")
    return MedLVMModel(ckpt.tokenizer, ckpt.transformer, ckpt.preprocess, ckpt.model_id, device, dtype)


def _as_images(model: MedLVMModel, images: Any) -> torch.Tensor:
    """(N, H, W) array/tensor in [0, 1] -> float32 (N, 1, S, S) resized to the model resolution."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.ndim != 3:
        raise InputError(f"images must be (N, H, W) grey frames in [0, 1], got shape {tuple(x.shape)}")
    x = x.float()
    if x.numel() and not torch.isfinite(x).all():
        raise InputError("images contain NaN or infinite values")
    x = x[:, None]  # (N, 1, H, W)
    size = model.image_size
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0.0, 1.0)


def encode_images(model: MedLVMModel, images: Any, batch_size: Optional[int] = None,
                  progress: Optional[Progress] = None) -> np.ndarray:
    """Grey frames (N, H, W) in [0, 1] -> codes int64 (N, tokens_per_image), row-major.

    Frames are resized to the model resolution and replicated to 3 channels.
    """
    x = _as_images(model, images)
    progress = ensure(progress)
    progress.stage("encoding images", len(x))

    @torch.inference_mode()
    def run(part: slice) -> np.ndarray:
        rgb = x[part].to(model.device).expand(-1, 3, -1, -1)  # (B, 3, S, S)
        codes = model.tokenizer.encode(rgb).reshape(rgb.shape[0], -1)
        progress.advance(rgb.shape[0])
        return codes.cpu().numpy()

    parts = chunked(run, len(x), memory.image_batch(model.device, batch_size))
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros((0, model.tokens_per_image), np.int64)


def decode_codes(model: MedLVMModel, codes: Any, batch_size: Optional[int] = None,
                 progress: Optional[Progress] = None) -> np.ndarray:
    """Codes (N, tokens_per_image) -> grey frames float32 (N, image_size, image_size) in [0, 1] (channel mean)."""
    c = torch.as_tensor(np.asarray(codes) if not isinstance(codes, torch.Tensor) else codes)
    if c.ndim != 2 or c.shape[1] != model.tokens_per_image:
        raise InputError(f"codes must be (N, {model.tokens_per_image}), got shape {tuple(c.shape)}")
    side = model.tokenizer.config.latent_size
    progress = ensure(progress)
    progress.stage("decoding images", len(c))

    @torch.inference_mode()
    def run(part: slice) -> np.ndarray:
        grid = c[part].long().to(model.device).reshape(-1, side, side)  # (B, h, w)
        images = model.tokenizer.decode(grid).mean(dim=1)  # (B, S, S)
        progress.advance(grid.shape[0])
        return images.float().cpu().numpy()

    parts = chunked(run, len(c), memory.image_batch(model.device, batch_size))
    size = model.image_size
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, size, size), np.float32)


def generate(model: MedLVMModel, prompt_codes: Any, n_images: int, *, temperature: float = 1.0,
             top_p: float = 1.0, greedy: bool = False, seed: Optional[int] = None,
             max_context_images: Optional[int] = None, batch_size: Optional[int] = None,
             prompt_radius: Optional[int] = None, progress: Optional[Progress] = None) -> np.ndarray:
    """Continue B visual sentences (B, T) by n_images images: int64 (B, n_images, tokens_per_image).

    Sampling follows LVM (temperature 1, top-p 1, no EOS stop, special tokens suppressed); greedy is an option.
    Batches of batch_size rows (None: as many as fit, `auto_generation_batch`) are retried at half size on GPU
    out-of-memory.
    seed: rows start..stop of a batch use seed + start, so a fixed batch_size gives reproducible samples.
    prompt_radius: None, or every new token is one of the codes that the sentence's prompt images hold at its
        position or within that many positions of it (`generate.prompt_vocabulary`; the prompt of whole images).
    """
    prompt = torch.as_tensor(np.asarray(prompt_codes) if not isinstance(prompt_codes, torch.Tensor) else prompt_codes)
    if prompt.ndim != 2:
        raise InputError(f"prompt_codes must be (B, T), got shape {tuple(prompt.shape)}")
    if prompt.dtype.is_floating_point:
        raise InputError(f"prompt_codes must be integers, got {prompt.dtype}")
    codebook_size = model.transformer.config.codebook_size
    if prompt_radius is not None:  # every row, before any batch is generated
        check_vocabulary_prompt(prompt, model.tokens_per_image, codebook_size, prompt_radius)

    def run(part: slice) -> np.ndarray:
        rows = prompt[part].long()
        allowed = None if prompt_radius is None else prompt_vocabulary(rows, model.tokens_per_image, codebook_size,
                                                                       prompt_radius)
        try:
            out = generate_images(model.transformer, rows, n_images, model.tokens_per_image,
                                  temperature=temperature, top_p=top_p, greedy=greedy,
                                  seed=None if seed is None else seed + part.start,
                                  max_context_images=max_context_images, allowed=allowed, progress=progress)
        except BaseException:
            model.transformer.clear_caches()  # free the KV cache before a retry with a smaller batch
            raise
        return out.cpu().numpy()

    if batch_size is None:
        batch_size = auto_generation_batch(model, len(prompt), prompt.shape[1], n_images)
    parts = chunked(run, len(prompt), batch_size)
    model.transformer.clear_caches()
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros((0, n_images, model.tokens_per_image),
                                                                         np.int64)


def auto_generation_batch(model: MedLVMModel, n_sentences: int, prompt_length: int, n_images: int) -> int:
    """Sentences per generate call from the KV cache and prefill they need and the device's free memory
    (engine/memory.py); on a CPU from a fixed budget, so that seeded samples do not depend on the machine's load."""
    transformer = model.transformer
    block = transformer.config.block_size
    length, prefill = min(prompt_length + n_images * model.tokens_per_image, block), min(prompt_length, block)
    element = torch.tensor([], dtype=transformer.compute_dtype()).element_size()
    batch = memory.generation_batch(transformer.config, n_sentences, length, prefill, element, model.device)
    if batch < n_sentences:
        log.info("generating %d sentences in batches of %d: %s", n_sentences, batch,
                 memory.describe(transformer.config, length, prefill, element, memory.weight_bytes(transformer), batch))
    return batch
