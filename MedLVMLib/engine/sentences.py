"""Visual sentences: how image codes are laid out as one token sequence per query, and read back.

LVM was trained on plain concatenations of image codes (no BOS token, no separators), each image
`tokens_per_image` tokens long. A sentence layout is a small object that turns per-image codes into
prompts and splits generated tokens back into images. Every layout respects the transformer's
`block_size`: when a prompt would leave no room for the images to generate, the OLDEST images (or
example pairs) are dropped, as LVM's own inference keeps only the most recent frames.

Layouts:
    MotionSentence  [phase_0, phase_1, ..., phase_{k-1}]  -> phase_k, phase_{k+1}, ...  (one per slice)
    PairSentence    [a_1, b_1, ..., a_n, b_n, query]      -> answer                      (in-context pairs)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from MedLVMLib.errors import MedLVMError


def context_images(block_size: Optional[int], tokens_per_image: int) -> Optional[int]:
    """How many whole images fit in the transformer's context (None = unlimited)."""
    if block_size is None:
        return None
    n = int(block_size) // int(tokens_per_image)
    if n < 2:
        raise MedLVMError(
            f"the transformer's context ({block_size} tokens) holds fewer than 2 images of "
            f"{tokens_per_image} tokens: this model cannot continue a visual sentence"
        )
    return n


@dataclass(frozen=True)
class MotionSentence:
    """One sentence per slice position: the codes of the observed phases in breathing order.

    Args:
        n_observed: phases given to the model (k).
        tokens_per_image: codes per image (256 for a 16x16 latent).
        block_size: transformer context in tokens; None = unlimited.
    """

    n_observed: int
    tokens_per_image: int
    block_size: Optional[int] = None

    @property
    def max_prompt_images(self) -> int:
        """Observed phases kept in the prompt: all of them, or the most recent ones that leave room
        for one generated image (later images slide the window inside `generate_images`)."""
        fit = context_images(self.block_size, self.tokens_per_image)
        if fit is None:
            return self.n_observed
        return min(self.n_observed, fit - 1)

    @property
    def max_context_images(self) -> Optional[int]:
        """Images kept as context when the generator slides its window (None = unlimited): all that fit
        beside the image being generated, as LVM keeps the last 15 of 16 frames."""
        fit = context_images(self.block_size, self.tokens_per_image)
        return None if fit is None else fit - 1

    def build(self, codes: np.ndarray) -> np.ndarray:
        """Prompts from per-phase codes.

        Args:
            codes: int [n_observed, N, tokens_per_image], phase-major (N slice positions).
        Returns:
            int64 [N, n_kept * tokens_per_image]: per slice, phases oldest -> newest, oldest dropped first.
        """
        codes = np.asarray(codes)
        if codes.ndim != 3 or codes.shape[0] != self.n_observed or codes.shape[2] != self.tokens_per_image:
            raise MedLVMError(
                f"motion sentence expects codes [{self.n_observed}, N, {self.tokens_per_image}], got {codes.shape}"
            )
        kept = codes[self.n_observed - self.max_prompt_images :]  # (k', N, tpi)
        n = kept.shape[1]
        return np.ascontiguousarray(kept.transpose(1, 0, 2).reshape(n, -1)).astype(np.int64)

    def split(self, generated: np.ndarray) -> np.ndarray:
        """Generated tokens back to per-phase codes.

        Args:
            generated: int [N, n_future, tokens_per_image] or [N, n_future * tokens_per_image].
        Returns:
            int64 [n_future, N, tokens_per_image], phase-major like the input of `build`.
        """
        generated = np.asarray(generated)
        n = generated.shape[0]
        per_slice = generated.reshape(n, -1, self.tokens_per_image)  # (N, n_future, tpi)
        return np.ascontiguousarray(per_slice.transpose(1, 0, 2)).astype(np.int64)


@dataclass(frozen=True)
class PairSentence:
    """In-context analogy: example pairs (input, answer) then a query; the model writes its answer.

    Used by segmentation ([slice, mask, ...]), denoising and super-resolution ([degraded, clean, ...]).
    When the pairs do not fit `block_size`, the oldest (first) pairs are dropped: put the most relevant
    example last.
    """

    tokens_per_image: int
    block_size: Optional[int] = None
    n_answer_images: int = 1

    def max_pairs(self) -> Optional[int]:
        """Example pairs that fit with the query and the answer (None = unlimited)."""
        fit = context_images(self.block_size, self.tokens_per_image)
        if fit is None:
            return None
        n = (fit - 1 - self.n_answer_images) // 2
        if n < 1:
            raise MedLVMError(
                f"the transformer's context ({self.block_size} tokens) cannot hold one example pair, "
                "a query and an answer"
            )
        return n

    def build(self, inputs: np.ndarray, answers: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Prompts [a_1, b_1, ..., a_n, b_n, query] per batch row.

        Args:
            inputs: int [B, n_pairs, tpi] (or [n_pairs, tpi], shared by every row) example inputs.
            answers: same shape as `inputs`, the example answers.
            query: int [B, tpi].
        Returns:
            int64 [B, (2 * n_kept + 1) * tpi].
        """
        query = np.asarray(query)
        inputs, answers = np.asarray(inputs), np.asarray(answers)
        if inputs.shape != answers.shape:
            raise MedLVMError(f"example inputs {inputs.shape} and answers {answers.shape} differ in shape")
        if inputs.ndim == 2:
            inputs = np.broadcast_to(inputs, (query.shape[0],) + inputs.shape)
            answers = np.broadcast_to(answers, inputs.shape)
        if inputs.ndim != 3 or inputs.shape[2] != self.tokens_per_image or query.shape[-1] != self.tokens_per_image:
            raise MedLVMError(f"pair sentence expects [B, n, {self.tokens_per_image}] examples, got {inputs.shape}")
        if inputs.shape[1] < 1:
            raise MedLVMError("a pair sentence needs at least one example pair")
        limit = self.max_pairs()
        if limit is not None and inputs.shape[1] > limit:
            inputs, answers = inputs[:, -limit:], answers[:, -limit:]
        pairs = np.stack([inputs, answers], axis=2)  # (B, n, 2, tpi)
        b = pairs.shape[0]
        sentence = np.concatenate([pairs.reshape(b, -1), query.reshape(b, -1)], axis=1)
        return np.ascontiguousarray(sentence).astype(np.int64)

    def split(self, generated: np.ndarray) -> np.ndarray:
        """Generated tokens [B, n_answer * tpi] or [B, n_answer, tpi] -> [B, n_answer, tpi]."""
        generated = np.asarray(generated)
        return generated.reshape(generated.shape[0], -1, self.tokens_per_image).astype(np.int64)
