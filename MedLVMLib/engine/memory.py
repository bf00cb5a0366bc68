"""How many visual sentences fit in memory at once: the generation batch from the model and the free memory.

The transformer's memory during generation is its weights (loaded once) plus, per sentence, a KV cache of
2 x n_layer x length x dim values and the activations of the prefill (the whole prompt at once). For the
LVM-7B layout in bf16 (6.7 G parameters: 13.5 GB of weights) a sentence of 10 images of 256 tokens holds
2 x 32 x 2,560 x 4,096 x 2 B = 1.34 GB of KV cache: 64 sentences need 86 GB beside the weights, a 24 GB
workstation GPU fits 7. `generation_batch` chooses the batch from the free device memory (CUDA) or from a
fixed budget (CPU: the batch must not depend on what else the machine runs, so that a seeded sample is the
same every time); `devices.chunked` still halves it if the estimate was optimistic.
"""

from __future__ import annotations

from typing import Optional

import torch

from MedLVMLib.engine.config import TransformerConfig

GIB = 2**30
CPU_BUDGET_BYTES = 2 * GIB  # per generate call on a CPU: KV cache + prefill activations
CUDA_USABLE_FRACTION = 0.85  # of the free memory; the rest for the allocator's fragmentation and the decoder
IMAGE_BATCH = {"cpu": 64, "cuda": 256}  # frames per tokenizer call: bounds the activations' memory
PREFILL_VALUES_PER_TOKEN = 6  # hidden states alive at once in a prefill layer, in units of max(dim, intermediate)


def kv_cache_bytes(config: TransformerConfig, batch: int, length: int, element_bytes: int) -> int:
    """Bytes of the KV cache of `batch` sentences of `length` tokens (keys and values of every layer)."""
    return 2 * config.n_layer * int(batch) * int(length) * config.n_head * config.head_dim * int(element_bytes)


def bytes_per_sentence(config: TransformerConfig, length: int, prompt_length: int, element_bytes: int) -> int:
    """KV cache plus the prefill's activations and the logits of one sentence."""
    widest = max(config.dim, config.intermediate_size)
    prefill = PREFILL_VALUES_PER_TOKEN * int(prompt_length) * widest * int(element_bytes)
    attention = config.n_head * int(prompt_length) ** 2 * 4 if prompt_length else 0  # scores, unfused path
    logits = config.vocab_size * 4 * 2
    return kv_cache_bytes(config, 1, length, element_bytes) + prefill + attention + logits


def weight_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def free_bytes(device: torch.device) -> Optional[int]:
    """Free memory of a CUDA device (None elsewhere)."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def generation_batch(config: TransformerConfig, n_sentences: int, length: int, prompt_length: int,
                     element_bytes: int, device: torch.device, free: Optional[int] = None) -> int:
    """Sentences per generate call: all of them when they fit, else as many as the memory allows (at least 1).

    free: bytes available on a GPU (default: the CUDA device's free memory). A CPU always uses the fixed CPU budget.
    """
    if n_sentences < 1:
        return 1
    budget = CPU_BUDGET_BYTES
    if device.type == "cuda":
        budget = int((free_bytes(device) if free is None else free) * CUDA_USABLE_FRACTION)
    per = bytes_per_sentence(config, length, prompt_length, element_bytes)
    return int(max(1, min(n_sentences, budget // max(per, 1))))


def describe(config: TransformerConfig, length: int, prompt_length: int, element_bytes: int, weights: int,
             batch: int) -> str:
    """One line: what generation needs at this batch."""
    per = bytes_per_sentence(config, length, prompt_length, element_bytes)
    return (f"weights {weights / GIB:.1f} GiB + {batch} sentences x {per / GIB:.2f} GiB "
            f"(KV cache of {length} tokens and prefill) = {(weights + batch * per) / GIB:.1f} GiB")


def image_batch(device: torch.device, batch_size: Optional[int] = None) -> int:
    """Frames per tokenizer encode / decode call (the given size, else a per-device default)."""
    return int(batch_size) if batch_size else IMAGE_BATCH.get(device.type, IMAGE_BATCH["cpu"])
