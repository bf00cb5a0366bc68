"""DataModules: images for the tokenizer, token sentences for the transformer.

Items are generated on the fly from (seed, index), so a dataset is deterministic and needs no files.
The transformer's sentences are tokenised ONCE per run by the tokenizer it will be used with (a token
cache, saved as .npz in the run folder and reusable with `data.cache`): encoding is the slow part on CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from MedLVMLib.errors import MedLVMError
from MedLVMLib.progress import Progress, ensure
from MedLVMLib.training import corpus
from MedLVMLib.training.recipe import Recipe


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index)])


def ct_pool_for(seeds, size: int, preprocess) -> Optional[corpus.CTPool]:
    start, stop = int(seeds[0]), int(seeds[1])
    if stop > corpus.HELD_OUT_SEED_START:
        raise MedLVMError(f"data.ct_seeds {list(seeds)}: phantom seeds >= {corpus.HELD_OUT_SEED_START} are held out "
                          "for evaluation and must not be trained on")
    return corpus.CTPool(range(start, stop), size, preprocess)


class ImageDataset(Dataset):
    """Tokenizer training images [3, size, size]; item i is a pure function of (seed, i)."""

    def __init__(self, size: int, length: int, seed: int, weights: dict, ct: Optional[corpus.CTPool] = None):
        self.size, self.length, self.seed, self.weights, self.ct = size, length, seed, weights, ct

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        img = corpus.tokenizer_image(_rng(self.seed, index), self.size, self.weights, self.ct)
        return torch.from_numpy(np.ascontiguousarray(img))


class TokenizerDataModule(pl.LightningDataModule):
    def __init__(self, recipe: Recipe):
        super().__init__()
        self.recipe = recipe
        self.dataset: Optional[ImageDataset] = None

    def setup(self, stage: Optional[str] = None) -> None:
        if self.dataset is not None:
            return
        d, t = self.recipe.data, self.recipe.trainer
        weights = {"natural": d.natural, "texture": d.texture, "masks": d.masks, "degrade": d.degrade, "ct": d.ct}
        ct = ct_pool_for(d.ct_seeds, self.recipe.model.resolution, self.recipe.preprocess) if d.ct > 0 else None
        length = max(d.images_per_epoch, t.batch_size)
        self.dataset = ImageDataset(self.recipe.model.resolution, length, d.seed, weights, ct)

    def train_dataloader(self) -> DataLoader:
        t = self.recipe.trainer
        return DataLoader(self.dataset, batch_size=t.batch_size, shuffle=False, num_workers=t.num_workers,
                          drop_last=True, persistent_workers=t.num_workers > 0)


def _make_sentences(job) -> np.ndarray:
    """Sentences [n, n_images, 3, s, s] for indices `idx` (a top-level function: picklable for workers)."""
    seed, idx, size, n_images, weights, ct, phase0 = job
    return np.stack([corpus.sentence(_rng(seed, i), size, n_images, weights, ct, phase0) for i in idx])


def build_sentences(recipe: Recipe, tokenizer, progress: Optional[Progress] = None,
                    batch_images: int = 256) -> np.ndarray:
    """Generate `data.n_sentences` sentences and encode them: int16 codes [N, n_images, tokens_per_image].

    With `trainer.num_workers` > 0 the images are generated in that many processes (same result).
    """
    d = recipe.data
    size = tokenizer.config.resolution
    weights = {"video": d.video, "pairs": d.pairs, "ct": d.ct}
    ct = ct_pool_for(d.ct_seeds, size, recipe.preprocess) if d.ct > 0 else None
    progress = ensure(progress)
    progress.stage("tokenising sentences", d.n_sentences)
    per_batch = max(1, batch_images // d.n_images)
    jobs = [(d.seed, range(i, min(i + per_batch, d.n_sentences)), size, d.n_images, weights, ct, d.ct_phase0)
            for i in range(0, d.n_sentences, per_batch)]
    device = next(tokenizer.parameters()).device
    tokenizer.eval()
    out = []
    pool = None
    if recipe.trainer.num_workers > 0:
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(recipe.trainer.num_workers)
    try:
        batches = pool.map(_make_sentences, jobs) if pool is not None else map(_make_sentences, jobs)
        for imgs in batches:
            flat = torch.from_numpy(imgs.reshape((-1,) + imgs.shape[2:]))  # (n*T, 3, H, W)
            with torch.no_grad():
                codes = tokenizer.encode(flat.to(device)).cpu()  # (n*T, h, w)
            out.append(codes.reshape(len(imgs), d.n_images, -1).numpy().astype(np.int16))
            progress.advance(len(imgs))
    finally:
        if pool is not None:
            pool.shutdown()
    return np.concatenate(out)


class SentenceDataset(Dataset):
    """Token sentences [n_images * tokens_per_image] int64 from a code cache [N, n_images, tpi]."""

    def __init__(self, codes: np.ndarray):
        self.codes = codes

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.codes[index].reshape(-1).astype(np.int64))


class TransformerDataModule(pl.LightningDataModule):
    """Sentences from a token cache: loaded from `data.cache` or built with `tokenizer` and saved to `cache_path`."""

    def __init__(self, recipe: Recipe, tokenizer=None, cache_path: Optional[Path] = None,
                 progress: Optional[Progress] = None):
        super().__init__()
        self.recipe, self.tokenizer, self.cache_path, self.progress = recipe, tokenizer, cache_path, progress
        self.codes: Optional[np.ndarray] = None

    def prepare_codes(self) -> np.ndarray:
        if self.codes is not None:
            return self.codes
        d = self.recipe.data
        if d.cache and Path(d.cache).is_file():
            self.codes = np.load(d.cache)["codes"]
        else:
            if self.tokenizer is None:
                raise MedLVMError("no token cache and no tokenizer: set data.tokenizer (a model folder) or data.cache")
            self.codes = build_sentences(self.recipe, self.tokenizer, self.progress)
            if self.cache_path is not None:
                Path(self.cache_path).parent.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(self.cache_path, codes=self.codes)
        self._check(self.codes)
        return self.codes

    def _check(self, codes: np.ndarray) -> None:
        m = self.recipe.model
        if codes.ndim != 3 or codes.shape[1] * codes.shape[2] > m.block_size:
            raise MedLVMError(f"token cache {codes.shape}: sentences must fit block_size {m.block_size}")
        if int(codes.max()) >= m.codebook_size:
            raise MedLVMError(f"token cache holds code {int(codes.max())} >= codebook_size {m.codebook_size}")

    def setup(self, stage: Optional[str] = None) -> None:
        self.prepare_codes()

    def train_dataloader(self) -> DataLoader:
        t = self.recipe.trainer
        gen = torch.Generator().manual_seed(int(t.seed))
        return DataLoader(SentenceDataset(self.codes), batch_size=t.batch_size, shuffle=True, generator=gen,
                          num_workers=t.num_workers, drop_last=True, persistent_workers=t.num_workers > 0)
