"""AILS-NTUA (SemEval-2025 Task 4, 1st place; Premptis et al. 2025, "AILS-NTUA at SemEval-2025 Task 4:
Parameter-Efficient Unlearning for Large Language Models using Data Chunking").

Sequential gradient difference over *chunks* of the forget set: the forget set is shuffled once and cut
into chunks of ``chunk_size`` examples; the chunks are unlearned one after the other, each for
``epochs`` passes, and every forget example of a chunk is mixed with ``retain_ratio`` retain examples
taken cyclically from a (once shuffled) retain stream. The published recipe trains with batch 1 on
the mixed data, i.e. every example contributes ``weight · NLL̄(example)`` with weight −1 (forget) or
0.5 (retain); a micro-batch here holds ``b`` forget and ``retain_ratio·b`` retain examples and its
loss is the mean of those per-example terms — the same objective as batch-1 steps in expectation:

    L = ( w_f·Σ_{i∈F} NLL̄_i + w_r·Σ_{j∈R} NLL̄_j ) / (|F| + |R|)

Evaluation "epochs" are progress units: one unit = as many micro-batches as one pass over the whole
forget set, so the curve is comparable with the other methods (the chunks are visited in order).
Weights trained: the last 8 decoder layers (all of them on a model with ≤ 8), or ``--lora``
(the paper's LoRA option, r 16 / α 64, is the trainer's LoRA default).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import ClassVar

from lumebench.methods.base import Example, Method, collate, sequence_nll
from lumebench.registry import METHODS


@dataclass
class AILSNTUAHparams:
    chunk_size: int = 32         # forget examples per chunk (AILS-NTUA, SPEC.md §4)
    retain_ratio: int = 7        # retain examples mixed in per forget example, retain:forget = 7 (ibid.)
    forget_weight: float = -1.0  # weight of each forget example's NLL (ascent) (ibid.)
    retain_weight: float = 0.5   # weight of each retain example's NLL (ibid.)
    last_layers: int = 8         # trained decoder layers, counted from the top (ibid.; ignored with --lora)


@dataclass
class ChunkSchedule:
    """Global micro-batch ``k`` -> (chunk, pass, position) in chunk-major order; deterministic from the seed."""

    forget: list[Example]
    retain: list[Example]
    batch_size: int
    retain_per_batch: int
    chunk_size: int
    epochs: int
    pad_id: int
    seed: int

    def __post_init__(self):
        order = list(range(len(self.forget)))
        random.Random(f"lumebench-ails:{self.seed}:forget").shuffle(order)
        self.chunks = [order[i:i + self.chunk_size] for i in range(0, len(order), self.chunk_size)]
        self.steps = [math.ceil(len(c) / self.batch_size) for c in self.chunks]  # micro-batches per pass
        self.retain_order = list(range(len(self.retain)))
        random.Random(f"lumebench-ails:{self.seed}:retain").shuffle(self.retain_order)

    @property
    def per_epoch(self) -> int:
        return sum(self.steps)

    @property
    def total(self) -> int:
        return self.epochs * self.per_epoch

    def batch(self, k: int) -> dict:
        rest = k
        for chunk, n in zip(self.chunks, self.steps):
            if rest < n * self.epochs:
                break
            rest -= n * self.epochs
        else:
            raise IndexError(k)
        j = rest % n  # position inside this pass over the chunk (the same order every pass)
        f = [self.forget[i] for i in chunk[j * self.batch_size:(j + 1) * self.batch_size]]
        start = k * self.retain_per_batch  # the retain stream continues across chunks, cyclically
        r = [self.retain[self.retain_order[p % len(self.retain)]] for p in range(start, start + self.retain_per_batch)]
        return {"forget": collate(f, self.pad_id), "retain": collate(r, self.pad_id)}


def per_example_nll(model, batch):
    """NLL̄ of each sequence (its own target tokens' mean)."""
    ell, n = sequence_nll(model, batch)
    return ell / n.clamp(min=1)


@METHODS.register("ails_ntua", help="AILS-NTUA (SemEval-25 1st): sequential GD over forget chunks of 32, "
                                    "retain mixed 7:1, weights -1 / 0.5, last 8 layers")
class AILSNTUA(Method):
    Hparams = AILSNTUAHparams
    #: published recipe: lr 1e-5, 7 epochs per chunk, batch 1 (AILS-NTUA, SPEC.md §4)
    trainer_defaults: ClassVar[dict] = {"lr": 1e-5, "epochs": 7, "batch_size": 1}

    def default_selection(self, n_layers: int) -> dict:
        first = max(0, n_layers - self.hp.last_layers)
        return {"layers": f"{first}-{n_layers - 1}"}

    def schedule(self, forget, retain, *, batch_size, retain_batch_size, pad_id, seed, epochs):
        return ChunkSchedule(forget, retain, batch_size, self.hp.retain_ratio * batch_size, self.hp.chunk_size,
                             epochs, pad_id, seed)

    def loss(self, ctx, forget, retain):
        nf, nr = per_example_nll(ctx.model, forget), per_example_nll(ctx.model, retain)
        loss = (self.hp.forget_weight * nf.sum() + self.hp.retain_weight * nr.sum()) / (len(nf) + len(nr))
        return loss, {"forget_nll": float(nf.mean().detach()), "retain_nll": float(nr.mean().detach())}
