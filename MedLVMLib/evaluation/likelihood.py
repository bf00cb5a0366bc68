"""Does a model predict breathing, or only copy the last phase? Teacher-forced likelihood of continuations.

For a 4D CT whose future phases are known, every slice position gives one sentence
[observed phases ..., continuation] that the transformer scores in one forward pass (teacher forcing):
per continuation frame, the mean log-probability of its codes (over the codebook, specials excluded as in
generation) and the argmax accuracy (the share of positions where the most likely code is the
continuation's). Continuations: the true future, copy-last (the last observed phase repeated) and mirror
(breathing symmetry, phase 10 - j). A model that has learned breathing gives the TRUE future a higher
likelihood than copy-last; `margin` (true minus copy-last, nats per token) is the number to track for
every trained model.

Free-running decoding (greedy, sampled, and greedy with the codes restricted to those the observed phases hold
within one code of each position, "greedy-nearby", the motion task's default) is scored by agreement: per
generated frame, the share of codes equal to the true future's, to copy-last's and to mirror's. A copying model
agrees with copy-last. Kind "vocab" says how much of each continuation the restricted vocabularies can reach:
the share of its codes that the observed phases hold within one code of the position ("nearby") or exactly
there ("same").

    rows = diagnose_case(model, case.phases, n_observed=5)          # long-form rows
    summary = summarize(rows)                                       # means per continuation / decoding
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

from MedLVMLib.engine.sentences import MotionSentence, context_images
from MedLVMLib.errors import MedLVMError
from MedLVMLib.imaging.volume import Phases
from MedLVMLib.tasks.motion import CODE_CHOICES

CONTINUATIONS = ("true", "copy-last", "mirror")
VOCABULARIES = {name: radius for name, radius in CODE_CHOICES.items() if radius is not None}  # all but "any"
DECODINGS = ("greedy", "sampled", "greedy-nearby")


def _reference_futures(phases: Phases, n_observed: int) -> dict[str, np.ndarray]:
    """HU [F, Z, Y, X] per continuation: the truth and the two shortcut baselines."""
    from MedLVMLib.baselines.motion import MOTION_BASELINES

    observed = phases.select(list(range(n_observed)))
    n_future = phases.n_phases - n_observed
    return {"true": phases.array[n_observed:],
            "copy-last": MOTION_BASELINES["copy-last"](observed, n_future).array,
            "mirror": MOTION_BASELINES["mirror"](observed, n_future, n_total=phases.n_phases).array}


@torch.inference_mode()
def teacher_forced(model, prompt: np.ndarray, continuation: np.ndarray, batch_size: int = 32) -> tuple:
    """Score continuations under the model.

    Args:
        prompt: int [N, T] sentences (observed images).
        continuation: int [F, N, tpi] codes that follow each sentence.
    Returns:
        (log_prob, accuracy): float arrays [F], means over slices and positions of each frame.
    """
    tpi = model.tokens_per_image
    n_future, n = continuation.shape[:2]
    tokens = np.concatenate([prompt, continuation.transpose(1, 0, 2).reshape(n, -1)], axis=1)  # (N, T + F*tpi)
    block = model.transformer.config.block_size
    if tokens.shape[1] > block:
        raise MedLVMError(f"{tokens.shape[1]} tokens do not fit the model's context of {block}: observe fewer "
                          "phases or score fewer future frames")
    start = prompt.shape[1]
    codebook = model.tokenizer.config.codebook_size
    log_prob = np.zeros((n, n_future * tpi))
    hits = np.zeros((n, n_future * tpi))
    transformer = model.transformer
    for lo in range(0, n, batch_size):
        idx = torch.as_tensor(tokens[lo:lo + batch_size], device=model.device)
        logits = transformer(idx)[:, start - 1:-1, :codebook].float()  # (b, F*tpi, K): position t predicts t + 1
        targets = idx[:, start:]
        scores = torch.log_softmax(logits, dim=-1)
        log_prob[lo:lo + batch_size] = scores.gather(-1, targets[..., None])[..., 0].cpu().numpy()
        hits[lo:lo + batch_size] = (logits.argmax(-1) == targets).float().cpu().numpy()
    per_frame = (n, n_future, tpi)
    return log_prob.reshape(per_frame).mean(axis=(0, 2)), hits.reshape(per_frame).mean(axis=(0, 2))


def agreement(generated: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Share of equal codes per frame: generated and reference int [F, N, tpi] -> float [F]."""
    return (np.asarray(generated) == np.asarray(reference)).mean(axis=(1, 2))


def _prompt_for(model, n_observed: int, n_future: int) -> MotionSentence:
    """The sentence layout, keeping as many observed phases as leave room for all scored frames."""
    fit = context_images(model.transformer.config.block_size, model.tokens_per_image)
    keep = n_observed if fit is None else min(n_observed, fit - n_future)
    if keep < 1:
        raise MedLVMError(f"the model's context holds {fit} images: too few to score {n_future} future frames")
    return MotionSentence(keep, model.tokens_per_image, None)


def diagnose_case(model, phases: Phases, n_observed: int = 5, axis: str = "coronal", case: str = "case",
                  decodings: Sequence[str] = DECODINGS, seed: int = 0,
                  batch_size: Optional[int] = None) -> list[dict]:
    """Rows {case, kind, name, frame, metric, value} for one 4D CT with known future phases.

    kind "teacher" (name = continuation; metrics log_prob, argmax_acc), kind "free" (name = decoding;
    metrics agree_<continuation>) and kind "vocab" (name = restricted vocabulary; metrics covers_<continuation>).
    """
    from MedLVMLib.engine import lvm
    from MedLVMLib.engine.generate import prompt_vocabulary
    from MedLVMLib.tasks import common

    unknown = [d for d in decodings if d not in DECODINGS]
    if unknown:
        raise MedLVMError(f"unknown decoding '{unknown[0]}'; choose from {', '.join(DECODINGS)}")
    n_future = phases.n_phases - n_observed
    if n_observed < 1 or n_future < 1:
        raise MedLVMError(f"need observed and future phases: {phases.n_phases} phases, {n_observed} observed")
    sentence = _prompt_for(model, n_observed, n_future)
    observed = phases.array[n_observed - sentence.n_observed:n_observed]
    prompt = sentence.build(common.encode_volumes(model, observed, axis, batch_size=batch_size))  # (N, T)
    futures = {name: common.encode_volumes(model, hu, axis, batch_size=batch_size)
               for name, hu in _reference_futures(phases, n_observed).items()}  # name -> (F, N, tpi)
    rows = []

    def add(kind: str, name: str, metric: str, values: np.ndarray) -> None:
        rows.extend({"case": case, "kind": kind, "name": name, "frame": n_observed + f, "metric": metric,
                     "value": float(v)} for f, v in enumerate(values))

    for name, codes in futures.items():
        log_prob, accuracy = teacher_forced(model, prompt, codes, batch_size or 32)
        add("teacher", name, "log_prob", log_prob)
        add("teacher", name, "argmax_acc", accuracy)
    for vocabulary, radius in VOCABULARIES.items():
        allowed = prompt_vocabulary(torch.as_tensor(prompt), model.tokens_per_image,
                                    model.tokenizer.config.codebook_size, radius).numpy()  # (N, tpi, K)
        for name, codes in futures.items():
            covered = np.take_along_axis(allowed[None], codes[..., None], axis=-1)[..., 0]  # (F, N, tpi)
            add("vocab", vocabulary, f"covers_{name}", covered.mean(axis=(1, 2)))
    for decoding in decodings:
        generated = lvm.generate(model, prompt, n_future, greedy=decoding != "sampled", seed=seed,
                                 batch_size=batch_size,
                                 prompt_radius=VOCABULARIES["nearby"] if decoding.endswith("-nearby") else None)
        codes = sentence.split(generated)  # (F, N, tpi)
        for name, reference in futures.items():
            add("free", decoding, f"agree_{name}", agreement(codes, reference))
        if decoding == "greedy":
            add("teacher", "greedy", "argmax_acc", teacher_forced(model, prompt, codes, batch_size or 32)[1])
    return rows


def as_report_rows(rows: Sequence[dict]) -> list[dict]:
    """The rows in the long CSV form of `report.write_csv`: phase = the frame, method = "<kind>:<name>"."""
    return [{"case": r["case"], "phase": str(r["frame"]), "method": f"{r['kind']}:{r['name']}", "organ": "",
             "metric": r["metric"], "value": r["value"]} for r in rows]


def summarize(rows: Sequence[dict]) -> dict[str, Any]:
    """Means over cases and frames: {kind/name/metric: value}, plus `margin` = log_prob(true - copy-last)."""
    groups: dict[str, list] = {}
    for row in rows:
        groups.setdefault(f"{row['kind']}/{row['name']}/{row['metric']}", []).append(row["value"])
    out: dict[str, Any] = {key: float(np.mean(values)) for key, values in sorted(groups.items())}
    true, copy = out.get("teacher/true/log_prob"), out.get("teacher/copy-last/log_prob")
    if true is not None and copy is not None:
        out["margin"] = true - copy
    return out


def frame_table(rows: Sequence[dict]) -> str:
    """A Markdown table: one line per (kind, name, metric), one column per frame (mean over cases)."""
    frames = sorted({r["frame"] for r in rows})
    keys = list(dict.fromkeys((r["kind"], r["name"], r["metric"]) for r in rows))
    lines = ["| kind | continuation / decoding | metric | " + " | ".join(f"phase {f}" for f in frames) + " |",
             "|---" * (3 + len(frames)) + "|"]
    for kind, name, metric in keys:
        cells = []
        for f in frames:
            values = [r["value"] for r in rows if (r["kind"], r["name"], r["metric"], r["frame"]) ==
                      (kind, name, metric, f)]
            cells.append(f"{np.mean(values):.3f}" if values else "-")
        lines.append(f"| {kind} | {name} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
