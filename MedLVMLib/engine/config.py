"""Model configurations: frozen dataclasses with named presets.

`TokenizerConfig` describes the VQGAN (open-muse layout), `TransformerConfig` the LLaMA decoder and
`PreprocessConfig` how CT intensities become images in [0, 1]. Every checkpoint stores these, and models are
rebuilt from them. Overrides (YAML, CLI) go through `from_dict`, which rejects unknown keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Tuple, Type, TypeVar

from MedLVMLib.errors import MedLVMError

T = TypeVar("T")

#: LVM's vocabulary: 8192 VQ codes + 100 special tokens (never sampled).
LVM_CODEBOOK_SIZE = 8192
LVM_VOCAB_SIZE = 8292
#: Special tokens appended to the codebook in MedLVM's own small models.
N_SPECIAL_TOKENS_SMALL = 16


def _to_dict(obj: Any) -> Dict[str, Any]:
    out = dataclasses.asdict(obj)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def _from_dict(cls: Type[T], data: Dict[str, Any], base: T = None) -> T:
    """Build `cls` from `data`; fields missing in `data` come from `base` (or the class defaults)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise MedLVMError(f"unknown {cls.__name__} key(s) {unknown}; allowed: {sorted(names)}")
    values = dict(data)
    if "channel_mult" in values:
        values["channel_mult"] = tuple(int(v) for v in values["channel_mult"])
    try:
        return dataclasses.replace(base, **values) if base is not None else cls(**values)
    except TypeError as exc:
        raise MedLVMError(f"incomplete {cls.__name__}: {exc}") from exc


@dataclass(frozen=True)
class TokenizerConfig:
    """VQGAN tokenizer (open-muse `VQGANModel`, no attention blocks)."""

    resolution: int = 256
    num_channels: int = 3
    hidden_channels: int = 128
    channel_mult: Tuple[int, ...] = (1, 2, 2, 4, 6)
    num_res_blocks: int = 2
    z_channels: int = 64
    codebook_size: int = 8192
    embed_dim: int = 64
    commitment_cost: float = 0.25
    norm_groups: int = 32

    def __post_init__(self) -> None:
        widths = [self.hidden_channels * m for m in self.channel_mult]
        if any(w % self.norm_groups for w in widths):
            raise MedLVMError(f"every channel width {widths} must be divisible by norm_groups={self.norm_groups}")
        if self.resolution % self.downsample_factor:
            raise MedLVMError(f"resolution {self.resolution} is not a multiple of {self.downsample_factor}")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def latent_size(self) -> int:
        return self.resolution // self.downsample_factor

    @property
    def tokens_per_image(self) -> int:
        return self.latent_size**2

    @classmethod
    def from_name(cls, name: str) -> TokenizerConfig:
        if name not in TOKENIZER_PRESETS:
            raise MedLVMError(f"unknown tokenizer preset {name!r}; known: {sorted(TOKENIZER_PRESETS)}")
        return TOKENIZER_PRESETS[name]

    def to_dict(self) -> Dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any], base: TokenizerConfig = None) -> TokenizerConfig:
        return _from_dict(cls, data, base)


@dataclass(frozen=True)
class TransformerConfig:
    """LLaMA decoder (full multi-head attention, SwiGLU, RMSNorm, RoPE, no biases, untied head)."""

    vocab_size: int = LVM_VOCAB_SIZE
    block_size: int = 4096
    dim: int = 4096
    n_layer: int = 32
    n_head: int = 32
    intermediate_size: int = 11008
    rope_base: float = 10000.0
    norm_eps: float = 1e-6
    codebook_size: int = LVM_CODEBOOK_SIZE

    def __post_init__(self) -> None:
        if self.dim % self.n_head:
            raise MedLVMError(f"dim {self.dim} is not divisible by n_head {self.n_head}")
        if self.head_dim % 2:
            raise MedLVMError(f"head_dim {self.head_dim} must be even for RoPE")
        if not 0 < self.codebook_size <= self.vocab_size:
            raise MedLVMError(f"codebook_size {self.codebook_size} must be in 1..vocab_size ({self.vocab_size})")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @classmethod
    def from_name(cls, name: str) -> TransformerConfig:
        if name not in TRANSFORMER_PRESETS:
            raise MedLVMError(f"unknown transformer preset {name!r}; known: {sorted(TRANSFORMER_PRESETS)}")
        return TRANSFORMER_PRESETS[name]

    def to_dict(self) -> Dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any], base: TransformerConfig = None) -> TransformerConfig:
        return _from_dict(cls, data, base)


@dataclass(frozen=True)
class PreprocessConfig:
    """CT intensities -> images: HU window [hu_min, hu_max] mapped linearly to [0, 1]."""

    hu_min: float = -1000.0
    hu_max: float = 1000.0

    def __post_init__(self) -> None:
        if not self.hu_max > self.hu_min:
            raise MedLVMError(f"hu_max ({self.hu_max}) must be greater than hu_min ({self.hu_min})")

    def to_dict(self) -> Dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any], base: PreprocessConfig = None) -> PreprocessConfig:
        return _from_dict(cls, data, base)


def _lvm(dim: int, intermediate: int, n_layer: int, n_head: int) -> TransformerConfig:
    return TransformerConfig(dim=dim, intermediate_size=intermediate, n_layer=n_layer, n_head=n_head)


TOKENIZER_PRESETS: Dict[str, TokenizerConfig] = {
    # The released LVM tokenizer (Emma02/vqvae_ckpts): f16, 16x16 = 256 tokens per 256x256 image.
    "muse-f16-8192": TokenizerConfig(),
    # Unit tests: 32x32 images, f4 -> 8x8 = 64 tokens.
    "tiny": TokenizerConfig(resolution=32, hidden_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1,
                            z_channels=8, codebook_size=64, embed_dim=8, norm_groups=8),
    # The bundled CPU model: 64x64 images, f8 -> 8x8 = 64 tokens.
    "medlvm-tiny": TokenizerConfig(resolution=64, hidden_channels=32, channel_mult=(1, 2, 2, 4), num_res_blocks=2,
                                   z_channels=32, codebook_size=1024, embed_dim=32, norm_groups=16),
}

TRANSFORMER_PRESETS: Dict[str, TransformerConfig] = {
    "lvm-100m": _lvm(640, 1664, 22, 10),
    "lvm-300m": _lvm(1024, 2688, 22, 8),
    "lvm-600m": _lvm(1536, 4096, 22, 16),
    "lvm-1b": _lvm(2048, 5504, 22, 16),
    "lvm-3b": _lvm(3200, 8640, 26, 32),
    "lvm-7b": _lvm(4096, 11008, 32, 32),
    # Unit tests: 64 codes + 16 specials; 16 images of 64 tokens.
    "tiny": TransformerConfig(vocab_size=64 + N_SPECIAL_TOKENS_SMALL, block_size=1024, dim=64, n_layer=2, n_head=4,
                              intermediate_size=172, codebook_size=64),
    # The bundled CPU model: 16 images of 64 tokens per sentence.
    "medlvm-tiny": TransformerConfig(vocab_size=1024 + N_SPECIAL_TOKENS_SMALL, block_size=16 * 64, dim=256,
                                     n_layer=6, n_head=4, intermediate_size=688, codebook_size=1024),
}


def transformer_param_count(config: TransformerConfig) -> int:
    """Parameters of the LLaMA decoder, from the config alone (no model is built)."""
    d, i, v = config.dim, config.intermediate_size, config.vocab_size
    per_layer = 4 * d * d + 3 * d * i + 2 * d  # q, k, v, o; gate, up, down; two RMSNorm weights
    return config.n_layer * per_layer + 2 * v * d + d  # + embedding, lm_head, final norm


def count_params(module: Any) -> int:
    """Number of parameters of a built `torch.nn.Module`."""
    return sum(p.numel() for p in module.parameters())
