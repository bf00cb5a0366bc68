"""LightningModules around the plain networks of `MedLVMLib.engine.models`.

TokenizerSystem    VQGAN: L1 + L2 + image-gradient reconstruction loss, codebook + commitment losses
                   (straight-through estimator), codebook initialised from encoder outputs and dead codes
                   restarted from recent encoder outputs, so codebook usage stays high.
TransformerSystem  LLaMA decoder: next-token cross-entropy over whole visual sentences (no BOS/EOS).

Both: AdamW (betas and weight decay from the recipe; decay only on matrices), linear warm-up then cosine
decay to `min_lr_ratio * lr`, stepped every optimizer step. Logged: loss terms, lr, and for the tokenizer
PSNR, codebook usage and perplexity.
"""

from __future__ import annotations

import math
import time
from typing import Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from MedLVMLib.engine.config import TokenizerConfig, TransformerConfig
from MedLVMLib.engine.models.transformer import Transformer
from MedLVMLib.engine.models.vqgan import VQGAN
from MedLVMLib.training.recipe import Optim, TokenizerLoss, TransformerLoss


def cosine_lambda(warmup: int, total: int, min_ratio: float, max_seconds: float = 0.0):
    """Multiplier of the base lr at optimizer step s: linear warm-up, cosine to `min_ratio` at `total`.

    With `max_seconds` > 0 the decay follows whichever is further along, steps or wall-clock time (measured
    from the first call), so a run cut by a time limit still ends at a low learning rate.
    """
    start = []

    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        progress = (step - warmup) / max(total - warmup, 1)
        if max_seconds > 0:
            now = time.monotonic()
            if not start:
                start.append(now)
            progress = max(progress, (now - start[0]) / max_seconds)
        progress = min(1.0, progress)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return fn


def adamw_cosine(module: torch.nn.Module, optim: Optim, total_steps: int, max_seconds: float = 0.0):
    """AdamW with weight decay on >=2-D weights only, plus the per-step cosine schedule."""
    decay = [p for p in module.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in module.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=optim.lr, betas=(optim.beta1, optim.beta2))
    lam = cosine_lambda(optim.warmup_steps, total_steps, optim.min_lr_ratio, max_seconds)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}


def _time_budget(module: pl.LightningModule) -> float:
    """Seconds the lr schedule may follow: only in single-process runs (DDP ranks must agree on the lr)."""
    trainer = getattr(module, "_trainer", None)
    world = trainer.world_size if trainer is not None else 1
    return module.max_seconds if world == 1 else 0.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [0, 1]."""
    mse = F.mse_loss(a.float().clamp(0, 1), b.float())
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


def gradient_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 between horizontal and vertical finite differences of two image batches (B, C, H, W)."""
    dya, dyb = a[..., 1:, :] - a[..., :-1, :], b[..., 1:, :] - b[..., :-1, :]
    dxa, dxb = a[..., :, 1:] - a[..., :, :-1], b[..., :, 1:] - b[..., :, :-1]
    return (dya - dyb).abs().mean() + (dxa - dxb).abs().mean()


def codebook_stats(counts: torch.Tensor):
    """(fraction of codes used, perplexity) of code counts (K,)."""
    p = counts / counts.sum().clamp_min(1)
    perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
    return float((counts > 0).float().mean()), float(perplexity)


class TokenizerSystem(pl.LightningModule):
    """Trains `VQGAN(config)` on batches of images (B, 3, H, W) in [0, 1]."""

    def __init__(self, config: TokenizerConfig, loss: Optional[TokenizerLoss] = None,
                 optim: Optional[Optim] = None,
                 total_steps: int = 1000, max_seconds: float = 0.0):
        super().__init__()
        self.save_hyperparameters({"config": config.to_dict(), "total_steps": total_steps})
        self.model = VQGAN(config)
        self.loss_cfg, self.optim_cfg = loss or TokenizerLoss(), optim or Optim()
        self.total_steps, self.max_seconds = total_steps, max_seconds
        k = config.codebook_size
        self.register_buffer("window", torch.zeros(k))          # code counts since the last usage check
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self._recent = None  # latents of the last batch (restart pool), (N, D)

    def _quantise(self, images: torch.Tensor):
        z = self.model.latents(images)  # (B, D, h, w)
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float()  # (B*h*w, D)
        if not bool(self.initialised):
            self._init_codebook(flat)
        codes = self.model.quantize.codes(z.detach())  # (B, h, w)
        z_q = self.model.quantize.lookup(codes).to(z.dtype)
        return z, z_q, codes, flat

    @torch.no_grad()
    def _init_codebook(self, flat: torch.Tensor) -> None:
        """Codebook <- random encoder outputs of the first batch (plus tiny noise)."""
        weight = self.model.quantize.embedding.weight
        gen = torch.Generator(device="cpu").manual_seed(0)
        idx = torch.randint(0, flat.shape[0], (weight.shape[0],), generator=gen).to(flat.device)
        weight.copy_(flat[idx] + 1e-3 * flat.std() * torch.randn(weight.shape, generator=gen).to(flat.device))
        self.initialised.fill_(True)

    def compute_losses(self, images: torch.Tensor) -> dict:
        z, z_q, codes, flat = self._quantise(images)
        codebook = F.mse_loss(z_q.float(), z.detach().float())
        commitment = self.model.config.commitment_cost * F.mse_loss(z.float(), z_q.detach().float())
        recon = self.model.decode_latents(z + (z_q - z).detach()).float()  # straight-through
        target = images.float()
        c = self.loss_cfg
        l1, l2 = (recon - target).abs().mean(), F.mse_loss(recon, target)
        grad = gradient_l1(recon, target) if c.gradient > 0 else recon.new_zeros(())
        total = c.l1 * l1 + c.l2 * l2 + c.gradient * grad + c.codebook * (codebook + commitment)
        return {"loss": total, "l1": l1, "l2": l2, "grad": grad, "codebook": codebook, "commitment": commitment,
                "codes": codes, "flat": flat, "recon": recon}

    def training_step(self, batch, batch_idx):
        out = self.compute_losses(batch)
        self._track_usage(out["codes"], out["flat"])
        self.log_dict({f"train/{k}": out[k].detach() for k in ("loss", "l1", "l2", "grad", "codebook")},
                      prog_bar=False)
        self.log("train/psnr", psnr(out["recon"].detach(), batch), prog_bar=True)
        return out["loss"]

    @torch.no_grad()
    def _track_usage(self, codes: torch.Tensor, flat: torch.Tensor) -> None:
        self.window.add_(torch.bincount(codes.reshape(-1), minlength=self.window.shape[0]).float())
        self._recent = flat

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        every = max(1, self.loss_cfg.restart_every or 50)
        if (self.global_step + 1) % every == 0 and self.window.sum() > 0:
            usage, perplexity = codebook_stats(self.window)
            self.log("train/usage", usage, prog_bar=True)
            self.log("train/perplexity", perplexity)
            if self.loss_cfg.restart_every:
                self.log("train/restarted", float(self.restart_dead_codes()))
            self.window.zero_()

    @torch.no_grad()
    def restart_dead_codes(self) -> int:
        """Codes used much less than average since the last check <- random recent encoder outputs."""
        dead = self.window < self.loss_cfg.restart_min_usage * self.window.mean()
        n = int(dead.sum())
        if n and self._recent is not None:
            gen = torch.Generator(device="cpu").manual_seed(int(self.global_step))
            idx = torch.randint(0, self._recent.shape[0], (n,), generator=gen).to(self._recent.device)
            weight = self.model.quantize.embedding.weight
            weight[dead] = self._recent[idx].to(weight.dtype)
        return n

    def configure_optimizers(self):
        return adamw_cosine(self.model, self.optim_cfg, self.total_steps, _time_budget(self))


class TransformerSystem(pl.LightningModule):
    """Trains `Transformer(config)` on token sentences (B, T) (ids < codebook_size)."""

    def __init__(self, config: TransformerConfig, optim: Optional[Optim] = None, total_steps: int = 1000,
                 max_seconds: float = 0.0, loss: Optional[TransformerLoss] = None,
                 tokens_per_image: Optional[int] = None):
        super().__init__()
        self.save_hyperparameters({"config": config.to_dict(), "total_steps": total_steps})
        self.model = Transformer(config)
        self.optim_cfg, self.total_steps, self.max_seconds = optim or Optim(), total_steps, max_seconds
        self.loss_cfg = loss or TransformerLoss()
        if self.loss_cfg.change_weight != 1.0 and not tokens_per_image:
            raise ValueError("loss.change_weight needs the tokenizer's tokens_per_image")
        self.tokens_per_image = tokens_per_image

    def changed(self, tokens: torch.Tensor) -> Optional[torch.Tensor]:
        """(B, T-1) bool: target token differs from the same position one image earlier (None: no image layout).
        Targets of the first image have no earlier image and count as unchanged."""
        tpi = self.tokens_per_image
        if not tpi or tokens.shape[1] <= tpi:
            return None
        out = torch.zeros(tokens.shape[0], tokens.shape[1] - 1, dtype=torch.bool, device=tokens.device)
        out[:, tpi - 1:] = tokens[:, tpi:] != tokens[:, :-tpi]  # target j = t + 1 against token j - tpi
        return out

    def compute_loss(self, tokens: torch.Tensor) -> dict:
        inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, T-1)
        logits = self.model(inputs)  # (B, T-1, V)
        per_token = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # (B, T-1)
        hits = logits.argmax(-1) == targets
        changed = self.changed(tokens)
        weights = torch.ones_like(per_token)
        if changed is not None:
            weights = torch.where(changed, self.loss_cfg.change_weight, 1.0).to(per_token.dtype)
        out = {"loss": (per_token * weights).sum() / weights.sum(), "acc": hits.float().mean()}
        if changed is not None and changed.any():
            out["acc_changed"] = hits[changed].float().mean()  # the tokens a copying model gets wrong
        return out

    def training_step(self, batch, batch_idx):
        out = self.compute_loss(batch)
        self.log("train/loss", out["loss"].detach(), prog_bar=True)
        self.log("train/acc", out["acc"], prog_bar=True)
        if "acc_changed" in out:
            self.log("train/acc_changed", out["acc_changed"])
        return out["loss"]

    def configure_optimizers(self):
        return adamw_cosine(self.model, self.optim_cfg, self.total_steps, _time_budget(self))
