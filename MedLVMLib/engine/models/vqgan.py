"""VQGAN image tokenizer with the open-muse `VQGANModel` state_dict layout.

Module and parameter names match open-muse (`encoder.down.{l}.block.{b}.norm1`, `quantize.embedding`, ...),
so the released LVM tokenizer (`pytorch_model.bin`, 277 tensors for muse-f16-8192) loads with strict=True.
Attention blocks are not built: the released config has none (`attn_resolutions=[]`, `no_attn_mid_block`).

Images are float RGB in [0, 1] with no normalisation, shape (B, 3, H, W), H and W multiples of the
downsample factor. Codes are (B, h, w) with h = H / f, w = W / f, flattened row-major when needed.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from MedLVMLib.engine.config import TokenizerConfig
from MedLVMLib.errors import InputError


class VQGANOutput(NamedTuple):
    reconstruction: torch.Tensor  # (B, 3, H, W), not clamped (training losses need the raw output)
    codes: torch.Tensor  # (B, h, w) int64
    codebook_loss: torch.Tensor  # scalar: moves codebook entries towards encoder outputs
    commitment_loss: torch.Tensor  # scalar, already scaled by commitment_cost


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = _norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = _norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return shortcut + h


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding right/bottom by one (taming-transformers convention)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: `block` (ResnetBlocks) then an optional `downsample` / `upsample`."""

    def __init__(self, widths: list, groups: int):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(a, b, groups) for a, b in zip(widths[:-1], widths[1:]))


class _Mid(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups)
        self.block_2 = ResnetBlock(channels, channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.block_1(x))


class Encoder(nn.Module):
    def __init__(self, config: TokenizerConfig):
        super().__init__()
        c, g = config.hidden_channels, config.norm_groups
        self.conv_in = nn.Conv2d(config.num_channels, c, kernel_size=3, padding=1)
        in_mult = (1,) + tuple(config.channel_mult)
        self.down = nn.ModuleList()
        for level, mult in enumerate(config.channel_mult):
            widths = [c * in_mult[level]] + [c * mult] * config.num_res_blocks
            down = _Level(widths, g)
            if level != len(config.channel_mult) - 1:
                down.downsample = Downsample(c * mult)
            self.down.append(down)
        top = c * config.channel_mult[-1]
        self.mid = _Mid(top, g)
        self.norm_out = _norm(top, g)
        self.conv_out = nn.Conv2d(top, config.z_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)  # (B, C, H, W)
        for down in self.down:
            for block in down.block:
                h = block(h)
            if hasattr(down, "downsample"):
                h = down.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, z, h, w)


class Decoder(nn.Module):
    def __init__(self, config: TokenizerConfig):
        super().__init__()
        c, g = config.hidden_channels, config.norm_groups
        block_in = c * config.channel_mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, block_in, kernel_size=3, padding=1)
        self.mid = _Mid(block_in, g)
        levels = []
        for level in reversed(range(len(config.channel_mult))):
            out = c * config.channel_mult[level]
            up = _Level([block_in] + [out] * (config.num_res_blocks + 1), g)
            if level != 0:
                up.upsample = Upsample(out)
            levels.insert(0, up)
            block_in = out
        self.up = nn.ModuleList(levels)  # up[0] is the finest level, run last
        self.norm_out = _norm(block_in, g)
        self.conv_out = nn.Conv2d(block_in, config.num_channels, kernel_size=3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for up in reversed(self.up):
            for block in up.block:
                h = block(h)
            if hasattr(up, "upsample"):
                h = up.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, 3, H, W)


class VectorQuantizer(nn.Module):
    """Nearest-codebook-entry quantisation by L2 distance; `embedding.weight` (K, D) is the codebook."""

    def __init__(self, codebook_size: int, embed_dim: int):
        super().__init__()
        weight = torch.empty(codebook_size, embed_dim)
        if not weight.is_meta:  # skipped when building on the meta device to load a checkpoint
            nn.init.uniform_(weight, -1.0 / codebook_size, 1.0 / codebook_size)
        self.embedding = nn.Embedding(codebook_size, embed_dim, _weight=weight)

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) latents -> (B, h, w) int64 indices of the nearest codebook entries."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d).float()  # (B*h*w, D), row-major over (h, w)
        codebook = self.embedding.weight.float()  # (K, D)
        # |z|^2 + |e|^2 - 2 z.e, as one fused matmul
        dist = torch.addmm(flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1)[None], flat, codebook.t(),
                           alpha=-2.0)
        return dist.argmin(dim=1).view(b, h, w)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) indices -> (B, D, h, w) codebook vectors."""
        return self.embedding(codes).permute(0, 3, 1, 2).contiguous()


class VQGAN(nn.Module):
    """Encoder + quantiser + decoder. `encode`/`decode` for inference, `forward` for training."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = VectorQuantizer(config.codebook_size, config.embed_dim)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, kernel_size=1)

    def _check_images(self, images: torch.Tensor) -> None:
        f = self.config.downsample_factor
        if images.ndim != 4 or images.shape[1] != self.config.num_channels:
            raise InputError(f"images must be (B, {self.config.num_channels}, H, W), got {tuple(images.shape)}")
        if images.shape[2] % f or images.shape[3] % f:
            raise InputError(f"image height and width must be multiples of {f}, got {tuple(images.shape[2:])}")

    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, embed_dim, h, w) continuous latents before quantisation."""
        self._check_images(images)
        return self.quant_conv(self.encoder(images))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [0, 1] -> (B, H/f, W/f) int64 codes."""
        return self.quantize.codes(self.latents(images))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) int codes -> (B, 3, h*f, w*f) images clamped to [0, 1]."""
        if codes.ndim != 3:
            raise InputError(f"codes must be (B, h, w), got {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.config.codebook_size):
            raise InputError(f"codes must lie in [0, {self.config.codebook_size}), got "
                             f"[{int(codes.min())}, {int(codes.max())}]")
        return self.decode_latents(self.quantize.lookup(codes.long())).clamp(0.0, 1.0)

    def decode_latents(self, quantized: torch.Tensor) -> torch.Tensor:
        """(B, embed_dim, h, w) quantised latents -> (B, 3, H, W) raw decoder output (not clamped)."""
        return self.decoder(self.post_quant_conv(quantized))

    def forward(self, images: torch.Tensor) -> VQGANOutput:
        """Training pass with the straight-through estimator (gradients skip the argmin)."""
        z = self.latents(images)  # (B, D, h, w)
        codes = self.quantize.codes(z.detach())
        z_q = self.quantize.lookup(codes)
        codebook_loss = F.mse_loss(z_q, z.detach())
        commitment_loss = self.config.commitment_cost * F.mse_loss(z, z_q.detach())
        z_st = z + (z_q - z).detach()
        return VQGANOutput(self.decode_latents(z_st), codes, codebook_loss, commitment_loss)
