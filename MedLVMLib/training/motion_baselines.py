"""Training of the learned motion baselines (baselines/learned_motion.py) with Lightning.

Data: coronal slice positions of breathing phantoms (`synthetic.phantom`, training seeds only: seeds
>= corpus.HELD_OUT_SEED_START are evaluation cases and refused), on the same working grid and frames the
baseline sees at inference (`learned_motion.to_frames`). A sample is one slice position: the observed
phases 0..k-1 in, the phases k..P-1 as targets; augmentation flips left-right.

Loss: L1 between the predicted and the true future frames, weighted up where the frames change (the moving
diaphragm and tumour are a small part of a frame; an unweighted loss is content with copy-last); "rmsim"
adds the smoothness of its fields (squared spatial gradients). AdamW with a cosine schedule.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from MedLVMLib.baselines import learned_motion
from MedLVMLib.errors import MedLVMError
from MedLVMLib.progress import Progress, ensure
from MedLVMLib.training.corpus import HELD_OUT_CT, HELD_OUT_SEED_START
from MedLVMLib.training.systems import cosine_lambda


@dataclass
class MotionTrainConfig:
    kind: str = "rmsim"
    seeds: tuple = (0, 160)  # phantom seeds [start, stop)
    n_observed: int = 5
    n_phases: int = 10
    shape: tuple = (48, 64, 64)
    batch_size: int = 32
    lr: float = 2e-3
    max_steps: int = 3000
    max_minutes: float = 12.0
    change_weight: float = 4.0  # extra weight of pixels whose value changes over the cycle
    smoothness: float = 0.05  # rmsim: weight of the fields' squared gradients (normalised units)
    hidden: int = 32
    frame_size: int = 64
    workers: int = 2


def _anatomy_frames(case, size: int) -> np.ndarray:
    """[N, P, S, S] working-grid frames of a case's slice positions that hold anatomy."""
    _, _, frames = learned_motion.working_frames(case.phases.array, case.phases.geometry, size)  # (N, P, S, S)
    keep = frames.reshape(len(frames), -1).std(axis=1) > 0.01
    return frames[keep]


def _pooled_frames(make, jobs: list, workers: int, progress: Progress) -> np.ndarray:
    """`make(job)` for every job in `workers` processes, concatenated as float16 (one progress step a job)."""
    parts = []
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for frames in pool.map(make, jobs):
            parts.append(frames.astype(np.float16))
            progress.advance()
    return np.concatenate(parts)


def phantom_frames(job: tuple) -> np.ndarray:
    """[N, P, S, S] frames of the slice positions of one phantom that hold anatomy."""
    seed, n_phases, shape, size = job
    from MedLVMLib.synthetic import phantom

    torch.set_num_threads(1)
    return _anatomy_frames(phantom.make_phantom(seed=int(seed), n_phases=n_phases, shape=tuple(shape)), size)


def real_ct_frames(job: tuple) -> np.ndarray:
    """[N, P, S, S] frames of one real CT breathing with seed `seed` (`synthetic.realct.breathe_real_ct`, the
    CT resampled to at most `shape`), the slice positions that hold anatomy."""
    ct, seed, n_phases, shape, size = job
    from MedLVMLib.synthetic import realct

    torch.set_num_threads(1)
    return _anatomy_frames(realct.breathe_real_ct(ct, seed=int(seed), n_phases=n_phases, max_shape=tuple(shape)),
                           size)


def build_real_frames(ct: Path, seeds: tuple, n_phases: int = 10, shape: tuple = (48, 64, 64), size: int = 64,
                      workers: int = 2, progress: Optional[Progress] = None) -> np.ndarray:
    """Frames [N, P, S, S] (float16) of a real CT breathing synthetically, one breathing draw per seed in
    [seeds[0], seeds[1]). The real CTs of the motion evaluation (corpus.HELD_OUT_CT) are refused."""
    ct = Path(ct)
    if ct.name in HELD_OUT_CT:
        raise MedLVMError(f"'{ct.name}' is a real case of the motion evaluation: it is never trained on")
    if not ct.is_file():
        raise MedLVMError(f"real CT '{ct}' not found")
    start, stop = int(seeds[0]), int(seeds[1])
    if start < 0 or stop <= start:
        raise MedLVMError(f"seeds {list(seeds)}: need 0 <= start < stop")
    progress = ensure(progress)
    progress.stage(f"breathing {ct.name}", stop - start)
    jobs = [(ct, s, n_phases, shape, size) for s in range(start, stop)]
    return _pooled_frames(real_ct_frames, jobs, workers, progress)


def build_frames(config: MotionTrainConfig, progress: Optional[Progress] = None) -> np.ndarray:
    start, stop = int(config.seeds[0]), int(config.seeds[1])
    if stop > HELD_OUT_SEED_START or start < 0 or stop <= start:
        raise MedLVMError(f"seeds {list(config.seeds)}: training seeds must lie in [0, {HELD_OUT_SEED_START}) "
                          "(higher seeds are evaluation phantoms)")
    progress = ensure(progress)
    progress.stage("phantoms", stop - start)
    jobs = [(s, config.n_phases, config.shape, config.frame_size) for s in range(start, stop)]
    return _pooled_frames(phantom_frames, jobs, config.workers, progress)


class SliceSequences(Dataset):
    def __init__(self, frames: np.ndarray, seed: int = 0):
        self.frames, self.seed = frames, seed

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> torch.Tensor:
        item = torch.from_numpy(self.frames[index].astype(np.float32))  # (P, S, S)
        if torch.rand(()) < 0.5:
            item = item.flip(-1)
        return item[:, None]


class MotionBaselineSystem(pl.LightningModule):
    def __init__(self, config: MotionTrainConfig):
        super().__init__()
        self.config = config
        self.net = learned_motion.MotionNet(learned_motion.MotionNetConfig(
            kind=config.kind, frame_size=config.frame_size, hidden=config.hidden))
        self.started = time.monotonic()

    def losses(self, batch: torch.Tensor) -> dict:
        k = self.config.n_observed
        observed, future = batch[:, :k], batch[:, k:]
        predicted, fields = self.net(observed, future.shape[1])
        change = (batch.amax(dim=1) - batch.amin(dim=1)).clamp(0, 0.2) / 0.2  # 1 where the cycle moves things
        weight = 1.0 + self.config.change_weight * change[:, None]
        image = (weight * (predicted - future).abs()).mean() / weight.mean()
        copy = (weight * (observed[:, -1:] - future).abs()).mean() / weight.mean()
        out = {"loss": image, "l1": image.detach(), "l1_copy_last": copy.detach()}
        if fields is not None:
            dy = fields[..., 1:, :] - fields[..., :-1, :]
            dx = fields[..., :, 1:] - fields[..., :, :-1]
            smooth = (dy ** 2).mean() + (dx ** 2).mean()
            out["loss"] = image + self.config.smoothness * smooth * self.config.frame_size ** 2 / 4
            out["smooth"] = smooth.detach()
        return out

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        out = self.losses(batch)
        self.log_dict({f"train/{k}": v for k, v in out.items()}, prog_bar=True)
        return out["loss"]

    def configure_optimizers(self):
        c = self.config
        optim = torch.optim.AdamW(self.net.parameters(), lr=c.lr, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.LambdaLR(optim, cosine_lambda(50, c.max_steps, 0.05, c.max_minutes * 60))
        return {"optimizer": optim, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def fit(config: MotionTrainConfig, run_dir: Path, frames: Optional[np.ndarray] = None,
        progress: Optional[Progress] = None) -> tuple[learned_motion.MotionNet, dict]:
    """Train one baseline; returns the network and a summary (steps, minutes, samples, losses)."""
    import datetime

    torch.manual_seed(0)
    frames = build_frames(config, progress) if frames is None else frames
    if frames.shape[1] != config.n_phases:
        raise MedLVMError(f"frames hold {frames.shape[1]} phases, the config {config.n_phases}")
    system = MotionBaselineSystem(config)
    loader = DataLoader(SliceSequences(frames), batch_size=config.batch_size, shuffle=True, drop_last=True)
    trainer = pl.Trainer(max_steps=config.max_steps, max_time=datetime.timedelta(minutes=config.max_minutes),
                         accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         default_root_dir=str(run_dir), enable_model_summary=False, log_every_n_steps=10,
                         enable_progress_bar=True)
    t0 = time.monotonic()
    trainer.fit(system, loader)
    system.net.eval()
    with torch.no_grad():
        sample = torch.from_numpy(frames[: min(256, len(frames))].astype(np.float32))[:, :, None]
        final = {k: float(v) for k, v in system.losses(sample).items()}
    summary = {"steps": int(trainer.global_step), "minutes": round((time.monotonic() - t0) / 60, 1),
               "slice_sequences": int(len(frames)), "seeds": list(config.seeds), "final": final}
    return system.net, summary
