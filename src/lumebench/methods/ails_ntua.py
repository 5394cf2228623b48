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

The source (iraklis07/llm-unlearning, ``methods/sequential.py``, ``configs/sequential_args.json``)
differs from lumebench's default variant (preset ``lumebench`` = the defaults) in two ways, both
reproduced by the preset ``original``:

- ``sequential``: one example per micro-batch (batch 1, sequential_args.json l. 12), in the
  source's order — each forget example followed by its 7 retain examples (``AdvSupervisedDataset``,
  sequential.py l. 33-49, read by a ``SequentialSampler``, l. 132-133) — and a chunk's retain
  examples are the same in each of its passes (one cycled retain slice per chunk, l. 294-300,
  ``_get_cycled_retain_samples`` l. 377-416); each example's loss is its mean token NLL × its
  factor (l. 119-130). lumebench's default puts a forget example and its 7 retain examples in one
  micro-batch (the teams' 8-GPU notebook) and takes new retain examples in every pass.
- ``restart_per_chunk``: a new HF ``Trainer`` per chunk (l. 338-348), so AdamW's moments and the
  linear lr schedule start again for every chunk (:attr:`TrainConfig.restarts`); lumebench's
  default runs one schedule over all chunks (on the official data the last chunks would then
  train at an lr near 0).

- ``train_outside_layers``: with ``train_last_k`` the notebooks freeze only the decoder layers below
  the last 8 (``for i, layer in enumerate(model.model.layers): ... requires_grad = False``,
  ``SUGD.ipynb`` cell 15), so the embeddings, the final norm and the LM head train too; lumebench's
  default trains the last 8 layers only.

Not reproduced: the forget and retain files' own order (lumebench shuffles both once, seeded),
the bf16/fp16 weights of the notebooks (lumebench trains fp32 master weights).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, ClassVar

from lumebench import checks
from lumebench.checks import setting
from lumebench.methods.base import Example, Method, collate, collate_share, later, sequence_nll
from lumebench.registry import METHODS


@dataclass
class AILSNTUAHparams:
    chunk_size: int = setting(32, checks.positive_int)         # forget examples per chunk (AILS-NTUA, SPEC.md §4)
    retain_ratio: int = setting(7, checks.nonnegative_int)        # retain examples mixed in per forget example, retain:forget = 7 (ibid.)
    forget_weight: float = setting(-1.0, checks.finite)  # weight of each forget example's NLL (ascent) (ibid.)
    retain_weight: float = setting(0.5, checks.finite)   # weight of each retain example's NLL (ibid.)
    last_layers: int = setting(8, checks.positive_int)         # trained decoder layers, counted from the top (ibid.; ignored with --lora)
    # one example per micro-batch in the source's order, the same retain examples every pass (see above)
    sequential: bool = later(False)
    # a fresh optimizer and lr schedule for every chunk (a new HF Trainer per chunk in the source)
    restart_per_chunk: bool = later(False)
    # also train what lies outside the decoder layers (embeddings, final norm, LM head), as the source does
    train_outside_layers: bool = later(False)


class _Chunked:
    """What both schedules share: ``steps[c]`` micro-batches per pass over chunk ``c``, ``epochs``
    passes over a chunk before the next one (chunk-major order)."""

    steps: list[int]
    epochs: int

    @property
    def per_epoch(self) -> int:
        return sum(self.steps)

    @property
    def total(self) -> int:
        return self.epochs * self.per_epoch

    @property
    def restarts(self) -> list[int]:
        """The micro-batch where each chunk's passes begin."""
        return [self.epochs * sum(self.steps[:c]) for c in range(len(self.steps))]

    def locate(self, k: int) -> tuple[int, int]:
        """Global micro-batch ``k`` -> (chunk, position inside a pass over it: the same every pass)."""
        rest = k
        for c, n in enumerate(self.steps):
            if rest < n * self.epochs:
                return c, rest % n
            rest -= n * self.epochs
        raise IndexError(k)


@dataclass
class ChunkSchedule(_Chunked):
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

    def batch(self, k: int) -> dict:
        c, j = self.locate(k)
        chunk = self.chunks[c]
        f = [self.forget[i] for i in chunk[j * self.batch_size:(j + 1) * self.batch_size]]
        start = k * self.retain_per_batch  # the retain stream continues across chunks, cyclically
        r = [self.retain[self.retain_order[p % len(self.retain)]] for p in range(start, start + self.retain_per_batch)]
        return {"forget": collate(f, self.pad_id), "retain": collate(r, self.pad_id)}


@dataclass
class SourceOrderSchedule(_Chunked):
    """The source's order (``sequential``): chunk by chunk, each pass over a chunk = its forget
    examples in order, each followed by its ``retain_ratio`` retain examples (the chunk's slice of
    the cycled retain stream, the same in every pass); ``batch_size`` consecutive items a
    micro-batch (1 in the source). Deterministic from the seed."""

    forget: list[Example]
    retain: list[Example]
    batch_size: int
    retain_ratio: int
    chunk_size: int
    epochs: int
    pad_id: int
    seed: int

    def __post_init__(self):
        order = list(range(len(self.forget)))
        random.Random(f"lumebench-ails:{self.seed}:forget").shuffle(order)
        retain_order = list(range(len(self.retain)))
        random.Random(f"lumebench-ails:{self.seed}:retain").shuffle(retain_order)
        self.chunks: list[list[tuple[str, int]]] = []
        used = 0  # retain examples handed out so far (the cycled stream continues chunk to chunk)
        for c in range(0, len(order), self.chunk_size):
            items = []
            for i in order[c:c + self.chunk_size]:
                items.append(("forget", i))
                items += [("retain", retain_order[(used + r) % len(self.retain)]) for r in range(self.retain_ratio)]
                used += self.retain_ratio
            self.chunks.append(items)
        self.steps = [math.ceil(len(c) / self.batch_size) for c in self.chunks]

    def batch(self, k: int) -> dict:
        c, j = self.locate(k)
        part = self.chunks[c][j * self.batch_size:(j + 1) * self.batch_size]
        f = [self.forget[i] for kind, i in part if kind == "forget"]
        r = [self.retain[i] for kind, i in part if kind == "retain"]
        return {"forget": collate_share(f, self.pad_id, self.forget[0]),
                "retain": collate_share(r, self.pad_id, self.retain[0])}


def per_example_nll(model, batch):
    """NLL̄ of each sequence (its own target tokens' mean)."""
    ell, n = sequence_nll(model, batch)
    return ell / n.clamp(min=1)


@METHODS.register("ails_ntua", help="AILS-NTUA (SemEval-25 1st): sequential GD over forget chunks of 32, "
                                    "retain mixed 7:1, weights -1 / 0.5, last 8 layers")
class AILSNTUA(Method):
    Hparams = AILSNTUAHparams
    source: ClassVar[str] = ("iraklis07/llm-unlearning methods/sequential.py + configs/sequential_args.json; "
                             "Premptis et al. 2025 (SemEval-2025 Task 4)")
    #: published recipe: lr 1e-5, 7 epochs per chunk, batch 1 (AILS-NTUA, SPEC.md §4)
    trainer_defaults: ClassVar[dict] = {"lr": 1e-5, "epochs": 7, "batch_size": 1}
    preset_defaults: ClassVar[dict] = {
        "original": {
            # configs/sequential_args.json (l. N below) and methods/sequential.py
            "chunk_size": 32,            # l. 4
            "retain_weight": 0.5,        # l. 6 (positive_factor)
            "retain_ratio": 7,           # l. 7 (positive_ratio)
            "forget_weight": -1.0,       # sequential.py l. 38 (factor -1 of a forget example)
            "last_layers": 8,            # l. 23-24 (train_last_k, k 8); apply_lora false (l. 20)
            "batch_size": 1, "grad_accum": 1,  # l. 12-13
            "lr": 1e-5,                  # l. 14
            "epochs": 7,                 # l. 15: 7 passes over each chunk (a Trainer's num_train_epochs)
            "sequential": True, "restart_per_chunk": True,  # sequential.py l. 33-49, 132-133, 294-348
            "train_outside_layers": True,  # SUGD.ipynb cell 15 freezes only the layers below the last k
            # TrainingArguments of example-notebooks/Sequential.ipynb (cell 18) set none of these:
            # the Trainer's defaults, AdamW (0.9, 0.999), no weight decay, no warm-up, linear decay
            # to 0 over each chunk's steps, gradients clipped at norm 1
            "adam_betas": [0.9, 0.999], "weight_decay": 0.0, "warmup_ratio": 0.0, "lr_schedule": "linear",
            "max_grad_norm": 1.0, "lora": False,
        },
        "lumebench": {},
    }

    def default_selection(self, n_layers: int) -> dict:
        first = max(0, n_layers - self.hp.last_layers)
        if self.hp.train_outside_layers:  # a name outside every layer, or inside one of the last k
            last = "|".join(str(i) for i in range(first, n_layers))
            return {"params": rf"^(?!(?:.*\.)?layers\.\d+\.)|(?:^|\.)layers\.(?:{last})\."}
        return {"layers": f"{first}-{n_layers - 1}"}

    def schedule(self, forget, retain, *, batch_size, retain_batch_size, pad_id, seed, epochs):
        if self.hp.sequential:
            plan = SourceOrderSchedule(forget, retain, batch_size, self.hp.retain_ratio, self.hp.chunk_size,
                                       epochs, pad_id, seed)
        else:
            plan = ChunkSchedule(forget, retain, batch_size, self.hp.retain_ratio * batch_size, self.hp.chunk_size,
                                 epochs, pad_id, seed)
        if not self.hp.restart_per_chunk:
            return _NoRestarts(plan)
        return plan

    def loss(self, ctx, forget, retain):
        (nf, kf), (nr, kr) = per_example_nll_rows(ctx.model, forget), per_example_nll_rows(ctx.model, retain)
        # each real example's weight x its mean token NLL, averaged over the real examples (a
        # placeholder row of an empty share, in the source's order, has no target and no weight)
        loss = (self.hp.forget_weight * nf.sum() + self.hp.retain_weight * nr.sum()) / max(1, kf + kr)
        return loss, {"forget_nll": float(nf.sum().detach()) / max(1, kf),
                      "retain_nll": float(nr.sum().detach()) / max(1, kr)}


def per_example_nll_rows(model, batch):
    """(NLL̄ of each row, 0 for a placeholder row; the number of rows with target tokens)."""
    ell, n = sequence_nll(model, batch)
    return ell / n.clamp(min=1), int((n > 0).sum())


@dataclass
class _NoRestarts:
    """A plan without restarts: one optimizer and lr schedule over the whole run."""

    plan: Any

    @property
    def per_epoch(self) -> int:
        return self.plan.per_epoch

    @property
    def total(self) -> int:
        return self.plan.total

    def batch(self, k: int) -> dict:
        return self.plan.batch(k)
