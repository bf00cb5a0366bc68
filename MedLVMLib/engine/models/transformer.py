"""LLaMA decoder in the style of gpt-fast, with HuggingFace `LlamaForCausalLM` state_dict names.

`state_dict()` and `load_state_dict()` use the HF layout (`model.layers.{i}.self_attn.q_proj.weight`, ...), so
the official LVM safetensors load unchanged. Internally q/k/v and gate/up are fused into one matmul each
(`qkv_proj`, `gate_up_proj`); hooks split and join them at the state_dict boundary.

RoPE uses HF's rotate-half layout with theta = `rope_base`. Attention is SDPA. With `setup_caches(B, T)` the
model keeps a static, preallocated KV cache and `forward(idx, input_pos)` writes at `input_pos`; without
`input_pos` it is a plain causal forward (training).

On CPU, half-precision weights run in mixed mode: the matmuls in bf16/fp16, everything else (and the KV cache)
in fp32; see `Linear` and `Transformer.compute_dtype`. Cached CPU inference uses MedLVM's own kernels
(`cpu_kernels`) where they could be compiled: a decode step runs each layer as one `medlvm::decode_layer` call,
and products of a few rows stream their weights through `medlvm::gemv`. PyTorch's operators serve everything
else (prefill, training, GPUs) and are the fallback.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from MedLVMLib.engine.config import TransformerConfig
from MedLVMLib.engine.models import cpu_kernels
from MedLVMLib.errors import InputError


def _kernels_serve(x: torch.Tensor) -> bool:
    """Whether MedLVM's CPU kernels (`cpu_kernels`) may take x: fp32 on CPU, inference (no autograd)."""
    return cpu_kernels.ACTIVE and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _kernels_serve(x) and self.weight.dtype in cpu_kernels.KERNEL_DTYPES:
            return torch.ops.medlvm.rms_norm(x, self.weight, self.eps)
        # Normalise in fp32 like HF, then cast back before the weight.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def _fuse_hook(names: list, fused: str):
    """load_state_dict pre-hook: concatenate HF `names` (e.g. q/k/v_proj) into the `fused` weight."""

    def hook(state_dict, prefix, *args):
        keys = [f"{prefix}{n}.weight" for n in names]
        if all(k in state_dict for k in keys):
            state_dict[f"{prefix}{fused}.weight"] = torch.cat([state_dict.pop(k) for k in keys], dim=0)

    return hook


def _split_hook(names: list, fused: str, sizes: list):
    """state_dict post-hook: split the fused weight back into the HF names (copies: no shared storage)."""

    def hook(module, state_dict, prefix, local_metadata):
        key = f"{prefix}{fused}.weight"
        if key in state_dict:
            parts = state_dict.pop(key).split(sizes, dim=0)
            for name, part in zip(names, parts):
                state_dict[f"{prefix}{name}.weight"] = part.clone()
        return state_dict

    return hook


class Linear(nn.Linear):
    """nn.Linear whose input may have another dtype than its weight: the matmul runs in the weight's dtype
    and the result comes back in the input's. This is the CPU mixed mode: bf16 weights halve the bytes a
    decode step streams (and use the CPU's bf16 dot products) while norms, RoPE, attention and the KV cache
    stay fp32, because half-precision attention and elementwise ops are several times slower on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if _kernels_serve(x) and weight.dtype in cpu_kernels.KERNEL_DTYPES and (
                0 < x.numel() <= cpu_kernels.MAX_GEMV_ROWS * x.shape[-1]):  # a few rows: a GEMV streams the weights
            return torch.ops.medlvm.gemv(x, weight)
        if x.dtype == weight.dtype:
            return F.linear(x, weight)
        return F.linear(x.to(weight.dtype), weight).to(x.dtype)


class KVCache(nn.Module):
    def __init__(self, batch: int, n_head: int, length: int, head_dim: int, dtype: torch.dtype, device):
        super().__init__()
        shape = (batch, n_head, length, head_dim)
        self.register_buffer("k", torch.empty(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.empty(shape, dtype=dtype, device=device), persistent=False)

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor):
        """Write (B, H, T, hd) at positions start..start+T-1; return the cache views up to the end."""
        end = start + k.shape[2]
        b = k.shape[0]
        self.k[:b, :, start:end] = k
        self.v[:b, :, start:end] = v
        return self.k[:b, :, :end], self.v[:b, :, :end]


class Attention(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.n_head, self.head_dim, self.dim = config.n_head, config.head_dim, config.dim
        self.qkv_proj = Linear(config.dim, 3 * config.dim, bias=False)
        self.o_proj = Linear(config.dim, config.dim, bias=False)
        self.kv_cache: Optional[KVCache] = None
        names = ["q_proj", "k_proj", "v_proj"]
        self._register_load_state_dict_pre_hook(_fuse_hook(names, "qkv_proj"))
        self._register_state_dict_hook(_split_hook(names, "qkv_proj", [config.dim] * 3))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start: Optional[int]) -> torch.Tensor:
        b, t, _ = x.shape
        qkv = self.qkv_proj(x).view(b, t, 3, self.n_head, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if start is None or self.kv_cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            k_all, v_all = self.kv_cache.update(start, k.to(self.kv_cache.k.dtype), v.to(self.kv_cache.v.dtype))
            k_all, v_all = k_all.to(q.dtype), v_all.to(q.dtype)  # no-op unless the cache dtype differs
            if start == 0:  # prefill from scratch: the fast causal kernel
                y = F.scaled_dot_product_attention(q, k_all, v_all, is_causal=True)
            else:
                y = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=_prefix_mask(start, t, q.device))
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.dim))  # (B, T, C)


def _prefix_mask(start: int, t: int, device) -> Optional[torch.Tensor]:
    """Causal mask for T queries at positions start.. over keys 0..start+T-1; None for one query."""
    if t == 1:
        return None
    q_pos = torch.arange(start, start + t, device=device)[:, None]
    return torch.arange(start + t, device=device)[None, :] <= q_pos  # (T, start+T) bool


class FeedForward(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.inter = config.intermediate_size
        self.gate_up_proj = Linear(config.dim, 2 * config.intermediate_size, bias=False)
        self.down_proj = Linear(config.intermediate_size, config.dim, bias=False)
        names = ["gate_proj", "up_proj"]
        self._register_load_state_dict_pre_hook(_fuse_hook(names, "gate_up_proj"))
        self._register_state_dict_hook(_split_hook(names, "gate_up_proj", [self.inter] * 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).split(self.inter, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.self_attn = Attention(config)
        self.mlp = FeedForward(config)
        self.input_layernorm = RMSNorm(config.dim, config.norm_eps)
        self.post_attention_layernorm = RMSNorm(config.dim, config.norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start: Optional[int]) -> torch.Tensor:
        if start is not None and x.shape[1] == 1 and _kernels_serve(x):
            weights = self._decode_kernel_weights()
            if weights is not None:  # one call for the whole layer
                cache = self.self_attn.kv_cache
                return torch.ops.medlvm.decode_layer(x, *weights, cache.k, cache.v, cos, sin, start,
                                                     self.input_layernorm.eps)
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, start)
        return h + self.mlp(self.post_attention_layernorm(h))

    def _decode_kernel_weights(self) -> Optional[tuple]:
        """The layer's weights in `medlvm::decode_layer`'s order, or None when that kernel cannot take the layer:
        it needs a fp32/bf16 cache, head_dim a multiple of 16 up to 128 and fp32/bf16 weights."""
        attn, mlp, cache = self.self_attn, self.mlp, self.self_attn.kv_cache
        if cache is None or cache.k.dtype not in cpu_kernels.KERNEL_DTYPES or attn.head_dim % 16 or (
                attn.head_dim > cpu_kernels.MAX_HEAD_DIM):
            return None
        weights = (self.input_layernorm.weight, attn.qkv_proj.weight, attn.o_proj.weight,
                   self.post_attention_layernorm.weight, mlp.gate_up_proj.weight, mlp.down_proj.weight)
        return weights if all(w.dtype in cpu_kernels.KERNEL_DTYPES for w in weights) else None


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, hd); cos/sin (T, hd) in fp32, cast to x's dtype as HF does."""
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)


def rope_tables(config: TransformerConfig, device=None):
    """cos, sin tables (block_size, head_dim) in fp32, HF rotate-half layout."""
    hd = config.head_dim
    inv_freq = 1.0 / (config.rope_base ** (torch.arange(0, hd, 2, dtype=torch.int64, device=device).float() / hd))
    freqs = torch.arange(config.block_size, device=device).float()[:, None] * inv_freq[None, :]  # (T, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


class _Backbone(nn.Module):
    """The `model.` prefix of HF LlamaForCausalLM."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        weight = torch.empty(config.vocab_size, config.dim)
        if not weight.is_meta:  # normal_ on meta tensors costs seconds of one-off imports
            nn.init.normal_(weight)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.dim, _weight=weight)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.dim, config.norm_eps)


class Transformer(nn.Module):
    """Decoder-only LLaMA. `forward(idx, input_pos=None) -> logits (B, T, vocab_size)`."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.model = _Backbone(config)
        self.lm_head = Linear(config.dim, config.vocab_size, bias=False)
        self.reset_rope()
        self.max_batch_size = 0
        self.max_seq_length = 0
        self.activation_dtype: Optional[torch.dtype] = None  # None: see compute_dtype()

    def compute_dtype(self) -> torch.dtype:
        """dtype of the activations and (by default) the KV cache.

        `activation_dtype` when set; otherwise the weights' dtype on accelerators and fp32 on CPU, where
        bf16/fp16 weights run in mixed mode (see `Linear`).
        """
        if self.activation_dtype is not None:
            return self.activation_dtype
        weight = self.lm_head.weight
        return torch.float32 if weight.device.type == "cpu" else weight.dtype

    def reset_rope(self, device=None) -> None:
        """(Re)compute the RoPE tables, e.g. after the weights were loaded onto a meta-built model."""
        if torch.empty(0, device=device).is_meta:  # placeholders: arithmetic on meta costs seconds of imports
            cos = sin = torch.empty(self.config.block_size, self.config.head_dim, device=device)
        else:
            cos, sin = rope_tables(self.config, device)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def _apply(self, fn, recurse=True):
        """Module.to/half/cuda/...: the RoPE tables follow the device but stay fp32 (recomputed, as HF keeps them)."""
        super()._apply(fn, recurse)
        if self.rope_cos.dtype != torch.float32:
            self.reset_rope(self.rope_cos.device)
        return self

    def setup_caches(self, max_batch_size: int, max_seq_length: int, dtype: Optional[torch.dtype] = None) -> None:
        """Preallocate a KV cache per layer: (max_batch_size, n_head, max_seq_length, head_dim).

        dtype: the cache's dtype (default `compute_dtype()`).
        """
        if max_seq_length > self.config.block_size:
            raise InputError(f"max_seq_length {max_seq_length} exceeds block_size {self.config.block_size}")
        dtype = dtype or self.compute_dtype()
        if self.lm_head.weight.device.type == "cpu":
            cpu_kernels.load()  # compiled once per machine; without them the PyTorch operators serve
        if max_batch_size <= self.max_batch_size and max_seq_length <= self.max_seq_length and (
                dtype == self.model.layers[0].self_attn.kv_cache.k.dtype):
            return  # the existing cache is large enough
        c = self.config
        for layer in self.model.layers:
            layer.self_attn.kv_cache = KVCache(max_batch_size, c.n_head, max_seq_length, c.head_dim, dtype,
                                               self.lm_head.weight.device)
        self.max_batch_size, self.max_seq_length = max_batch_size, max_seq_length

    def clear_caches(self) -> None:
        """Free the KV cache memory."""
        for layer in self.model.layers:
            layer.self_attn.kv_cache = None
        self.max_batch_size = self.max_seq_length = 0

    def forward(self, idx: torch.Tensor, input_pos: Union[torch.Tensor, int, None] = None, *,
                last_only: bool = False) -> torch.Tensor:
        """idx (B, T) int64 -> logits (B, T, V) (or (B, 1, V) with last_only).

        input_pos: contiguous positions (T,) of idx in the cached sentence, or the first of them as an int
            (no device sync on GPU); None = no cache, positions 0..T-1.
        """
        b, t = idx.shape
        start = None if input_pos is None else (input_pos if isinstance(input_pos, int) else int(input_pos[0]))
        first = 0 if start is None else start
        if first + t > self.config.block_size:
            raise InputError(f"sequence of {first + t} tokens exceeds block_size {self.config.block_size}")
        if start is not None and (self.max_seq_length < first + t or self.max_batch_size < b):
            raise InputError("call setup_caches(batch, length) large enough before a cached forward")
        cos, sin = self.rope_cos[first:first + t], self.rope_sin[first:first + t]
        x = self.model.embed_tokens(idx).to(self.compute_dtype())  # (B, T, C)
        for layer in self.model.layers:
            x = layer(x, cos, sin, start)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.model.norm(x))  # (B, T, V)
