"""Batched autoregressive generation of images as token sequences (gpt-fast style free functions).

A "visual sentence" is the plain concatenation of per-image codes (no BOS, separators or EOS). Generation
follows LVM: temperature / top-p sampling (or greedy), special tokens (ids >= codebook_size) never sampled,
and no EOS stop (id 2 is also an image code). All B sentences of a batch have the same length, so one static
KV cache serves them all. When a sentence outgrows `block_size`, the context slides: the oldest images are
dropped, only the last `max_context_images` are kept and re-prefilled from position 0 (LVM keeps 15).
"""

from __future__ import annotations

from typing import Optional

import torch

from MedLVMLib.engine.models.transformer import Transformer
from MedLVMLib.errors import InputError
from MedLVMLib.progress import Progress, ensure


def sample(logits: torch.Tensor, codebook_size: int, temperature: float = 1.0, top_p: float = 1.0,
           greedy: bool = False, generator: Optional[torch.Generator] = None,
           allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Pick the next token for each row of logits (B, V); special tokens (>= codebook_size) are excluded.

    allowed: (B, codebook_size) bool, the codes each row may take (None: all); every row needs one.
    Returns: (B,) int64.
    """
    logits = logits[:, :codebook_size].float()  # (B, K): dropping the specials is their suppression
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    if greedy or temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        probs = _top_p_filter(probs, top_p)
    # Exponential-race sampling: argmax(p / E), E ~ Exp(1), draws from p without a CPU sync.
    noise = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return (probs / noise).argmax(dim=-1)


def _top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero all but the smallest set of most likely tokens whose mass reaches top_p (at least one kept)."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of strictly more likely tokens
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
    return torch.zeros_like(probs).scatter_(-1, order, sorted_probs)


def check_vocabulary_prompt(prompt: torch.Tensor, tokens_per_image: int, codebook_size: int, radius: int) -> int:
    """Refuse a prompt that `prompt_vocabulary` cannot take, over all its rows; returns the code grid's side."""
    tpi = int(tokens_per_image)
    side = int(round(tpi ** 0.5))
    if side * side != tpi:
        raise InputError(f"a vocabulary per position needs a square grid of codes per image, got {tpi} tokens")
    if prompt.ndim != 2 or prompt.shape[1] < tpi or prompt.shape[1] % tpi:
        raise InputError(f"a vocabulary per position needs a prompt of whole images of {tpi} tokens, got shape "
                         f"{tuple(prompt.shape)}")
    if radius < 0:
        raise InputError(f"the neighbourhood radius must be >= 0, got {radius}")
    if prompt.numel() and (int(prompt.max()) >= codebook_size or int(prompt.min()) < 0):
        raise InputError(f"a vocabulary per position needs image codes in [0, {codebook_size})")
    return side


def prompt_vocabulary(prompt: torch.Tensor, tokens_per_image: int, codebook_size: int, radius: int) -> torch.Tensor:
    """Per position of an image, the codes that the prompt's images hold there or within `radius` positions.

    prompt: (B, T) ids of whole images (T a multiple of tokens_per_image, a square grid of codes per image).
    Returns: (B, tokens_per_image, codebook_size) bool; every position allows at least one code.
    """
    side = check_vocabulary_prompt(prompt, tokens_per_image, codebook_size, radius)
    tpi, b = side * side, prompt.shape[0]
    images = prompt.long().reshape(b, -1, tpi)
    seen = torch.zeros((b, codebook_size, tpi), dtype=torch.float32, device=prompt.device)
    seen.scatter_(1, images, 1.0)  # (B, K, tpi): code k appears at this position in some prompt image
    if radius:
        grid = seen.reshape(b, codebook_size, side, side)
        seen = torch.nn.functional.max_pool2d(grid, 2 * radius + 1, stride=1, padding=radius).reshape(b, -1, tpi)
    return seen.transpose(1, 2) > 0


def prefill(model: Transformer, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
    """Run tokens (B, T) at positions start..start+T-1 through the cached model; returns last logits (B, V)."""
    return model(tokens, start, last_only=True)[:, -1]


def decode_one_token(model: Transformer, token: torch.Tensor, position: int) -> torch.Tensor:
    """token (B, 1) at cache position `position` -> logits (B, V) for the next position."""
    return model(token, position)[:, -1]


def _check_prompt(model: Transformer, prompt: torch.Tensor, n_images: int, tpi: int, max_context: int) -> None:
    cfg = model.config
    if prompt.ndim != 2 or prompt.shape[0] < 1 or prompt.shape[1] < 1:
        raise InputError(f"prompt must be a (B, T) integer tensor, got shape {tuple(prompt.shape)}")
    if prompt.dtype.is_floating_point:
        raise InputError(f"prompt must hold integer token ids, got {prompt.dtype}")
    if n_images < 1 or tpi < 1:
        raise InputError(f"n_images ({n_images}) and tokens_per_image ({tpi}) must be positive")
    if prompt.numel() and (int(prompt.min()) < 0 or int(prompt.max()) >= cfg.vocab_size):
        raise InputError(f"prompt ids must lie in [0, {cfg.vocab_size}), got [{int(prompt.min())}, "
                         f"{int(prompt.max())}]")
    if max_context < 1 or (max_context + 1) * tpi > cfg.block_size:
        raise InputError(f"max_context_images={max_context} with {tpi} tokens per image does not leave room for "
                         f"one new image in block_size {cfg.block_size}")


@torch.inference_mode()
def generate_images(model: Transformer, prompt: torch.Tensor, n_images: int, tokens_per_image: int, *,
                    temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False, seed: Optional[int] = None,
                    max_context_images: Optional[int] = None, kv_dtype: Optional[torch.dtype] = None,
                    allowed: Optional[torch.Tensor] = None, progress: Optional[Progress] = None) -> torch.Tensor:
    """Continue B visual sentences by n_images images each.

    Args:
        prompt: (B, T) token ids; T need not be a multiple of tokens_per_image.
        max_context_images: images kept when the sentence outgrows block_size (default block_size // tpi - 1).
        kv_dtype: KV cache dtype (default: the model's compute_dtype(): fp32 on CPU, the weights' dtype elsewhere).
        allowed: (B, tokens_per_image, codebook_size) bool, the codes each position of every new image may take
            (`prompt_vocabulary`); None: the whole codebook.
    Returns:
        (B, n_images, tokens_per_image) int64 on the model's device.
    """
    cfg, tpi = model.config, tokens_per_image
    max_context = max_context_images if max_context_images is not None else cfg.block_size // tpi - 1
    _check_prompt(model, prompt, n_images, tpi, max_context)
    if allowed is not None and tuple(allowed.shape) != (prompt.shape[0], tpi, cfg.codebook_size):
        raise InputError(f"allowed must be (B, {tpi}, {cfg.codebook_size}) for this prompt, got {tuple(allowed.shape)}")
    progress = ensure(progress)
    device = model.lm_head.weight.device
    b, t = prompt.shape
    total = t + n_images * tpi
    sentence = torch.empty((b, total), dtype=torch.long, device=device)  # preallocated: prompt + every new token
    sentence[:, :t] = prompt.to(device)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(int(seed))
    model.setup_caches(b, min(total, cfg.block_size), dtype=kv_dtype)
    offset = max(0, t - max_context * tpi) if t + tpi > cfg.block_size else 0  # cache position 0 = sentence[offset]
    logits = prefill(model, sentence[:, offset:t])
    sampling = dict(codebook_size=cfg.codebook_size, temperature=temperature, top_p=top_p, greedy=greedy,
                    generator=generator)
    allowed = None if allowed is None else allowed.to(device)
    length = t
    for image in range(n_images):
        progress.stage(f"generating image {image + 1}/{n_images}", tpi)
        if image > 0 and length - offset + tpi > cfg.block_size:  # slide: keep the last max_context images
            offset = length - max_context * tpi
            logits = prefill(model, sentence[:, offset:length])
        # Feed the image's last token only if the next image continues this cache without sliding.
        feed_last = image + 1 < n_images and length + 2 * tpi - offset <= cfg.block_size
        logits = _generate_image(model, sentence, length, offset, logits, tpi, feed_last, sampling, allowed, progress)
        length += tpi
    return sentence[:, t:].reshape(b, n_images, tpi).clone()


def _generate_image(model: Transformer, sentence: torch.Tensor, length: int, offset: int, logits: torch.Tensor,
                    tpi: int, feed_last: bool, sampling: dict, allowed: Optional[torch.Tensor],
                    progress: Progress) -> torch.Tensor:
    """Sample tpi tokens into sentence[:, length:length+tpi]; returns the logits after the last fed token."""
    step, reported = max(1, tpi // 16), 0
    for i in range(tpi):
        sentence[:, length + i] = sample(logits, **sampling, allowed=None if allowed is None else allowed[:, i])
        if i + 1 < tpi or feed_last:
            logits = decode_one_token(model, sentence[:, length + i:length + i + 1], length + i - offset)
        if (i + 1) % step == 0 or i + 1 == tpi:
            progress.advance(i + 1 - reported)
            reported = i + 1
    return logits
