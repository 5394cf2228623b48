"""The data helpers of unlearning: rows -> tokenised examples, the (forget, retain) micro-batch order,
and the evaluation subset. Deterministic from the seed, so a resumed run sees the same batches."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from lumebench.data.records import Benchmark, Row
from lumebench.methods.base import Example, collate, collate_share


def tokenize_rows(rows: list[Row], tokenizer, *, max_length: int = 1024, loss_on: str = "target",
                  prompt_format: str = "plain") -> list[Example]:
    """One :class:`Example` per row: ``tokenizer(input)`` + ``" " + output`` + EOS.

    ``prompt_format="chat"`` (SHA256's training data, its ``unlearn.py`` l. 34-43): the prompt is the
    input as one user turn in the tokenizer's chat template with the generation prompt, followed by
    the output's tokens (no space) + EOS. A tokenizer without a chat template keeps the plain prompt.
    """
    out = []
    eos = tokenizer.eos_token_id
    chat = prompt_format == "chat" and getattr(tokenizer, "chat_template", None)
    for i, r in enumerate(rows):
        if chat:
            prompt = chat_prompt(tokenizer, r.input)
            target = list(tokenizer(r.output, add_special_tokens=False)["input_ids"]) + [eos]
        else:
            prompt = list(tokenizer(r.input)["input_ids"])
            target = list(tokenizer(" " + r.output, add_special_tokens=False)["input_ids"]) + [eos]
        target = target[:max_length - 1]
        prompt = prompt[-(max_length - len(target)):]
        n_target = len(target) if loss_on == "target" else len(prompt) + len(target) - 1
        out.append(Example(tuple(prompt + target), n_target, i, n_prompt=len(prompt)))
    return out


def chat_prompt(tokenizer, text: str) -> list[int]:
    """The ids of ``text`` as a user turn in the chat template, ending with the assistant's prompt."""
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                        add_generation_prompt=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return [int(x) for x in ids]


@dataclass
class PairedBatches:
    """``self(chunk) -> [{"forget": batch, "retain": batch}, ...]``, deterministic from (seed, step).

    Global micro-batch ``k`` is forget batch ``k mod n_f`` of epoch ``k // n_f`` paired with the
    ``k``-th retain batch of the retain stream. The loop's "epochs" are chunks of ``chunk`` micro-batches
    (one real epoch, or ``eval_every`` optimizer steps) so that evaluation follows the chunking.
    """

    forget: list[Example]
    retain: list[Example]
    batch_size: int
    retain_batch_size: int
    pad_id: int
    seed: int
    total: int          # micro-batches in the whole run
    chunk: int          # micro-batches per loop "epoch"

    @property
    def per_epoch(self) -> int:
        return math.ceil(len(self.forget) / self.batch_size)

    def _forget_batch(self, k: int) -> list[Example]:
        epoch, j = divmod(k, self.per_epoch)
        idx = list(range(len(self.forget)))
        random.Random(f"lumebench-unlearn:{self.seed}:forget:{epoch}").shuffle(idx)
        return [self.forget[i] for i in idx[j * self.batch_size:(j + 1) * self.batch_size]]

    def _retain_batch(self, k: int) -> list[Example]:
        n, bs = len(self.retain), self.retain_batch_size
        out = []
        for pos in range(k * bs, (k + 1) * bs):
            cycle, j = divmod(pos, n)
            idx = list(range(n))
            random.Random(f"lumebench-unlearn:{self.seed}:retain:{cycle}").shuffle(idx)
            out.append(self.retain[idx[j]])
        return out

    def batch(self, k: int) -> dict:
        return {"forget": collate(self._forget_batch(k), self.pad_id),
                "retain": collate(self._retain_batch(k), self.pad_id)}

    def __call__(self, chunk_index: int) -> list[dict]:
        start = chunk_index * self.chunk
        return [self.batch(k) for k in range(start, min(start + self.chunk, self.total))]


@dataclass
class MixedBatches:
    """Micro-batches drawn from the forget and retain examples *shuffled together*: every epoch the
    concatenated list (retain then forget, as Atyaephyra's ``pd.concat`` builds it) is shuffled
    (seeded by the epoch, like a ``DataLoader(shuffle=True)``) and cut into ``batch_size`` examples,
    so a micro-batch holds a random mix (possibly no forget or no retain example: that share is a
    placeholder row without target tokens). A method's :meth:`~lumebench.methods.base.Method.schedule`.
    Each share carries ``epoch`` (a 0-d tensor) for methods whose loss depends on it (SHA256).
    One epoch = one pass over forget + retain."""

    forget: list[Example]
    retain: list[Example]
    batch_size: int
    epochs: int
    pad_id: int
    seed: int

    @property
    def per_epoch(self) -> int:
        return math.ceil((len(self.forget) + len(self.retain)) / self.batch_size)

    @property
    def total(self) -> int:
        return self.epochs * self.per_epoch

    def batch(self, k: int) -> dict:
        import torch

        epoch, j = divmod(k, self.per_epoch)
        items = [("retain", e) for e in self.retain] + [("forget", e) for e in self.forget]
        random.Random(f"lumebench-mixed:{self.seed}:{epoch}").shuffle(items)
        part = items[j * self.batch_size:(j + 1) * self.batch_size]
        out = {}
        for kind, pool in (("forget", self.forget), ("retain", self.retain)):
            share = collate_share([e for what, e in part if what == kind], self.pad_id, pool[0])
            share["epoch"] = torch.tensor(epoch)
            out[kind] = share
        return out


@dataclass
class PlannedBatches:
    """A method's own micro-batch order (:meth:`Method.schedule`) cut into the loop's chunks."""

    plan: Any
    total: int
    chunk: int

    def __call__(self, chunk_index: int) -> list[dict]:
        start = chunk_index * self.chunk
        return [self.plan.batch(k) for k in range(start, min(start + self.chunk, self.total))]


def eval_benchmark(benchmark: Benchmark, n_docs: int | None, seed: int) -> Benchmark:
    """The whole benchmark, or a fixed subset of ``n_docs`` documents per split, spread over the tasks
    round-robin (every task keeps documents so that the 12-number harmonic mean stays defined)."""
    if not n_docs:
        return benchmark
    keep: list[str] = []
    for split in ("forget", "retain"):
        by_task: dict[str, list[str]] = {}
        for r in benchmark.split(split):
            lst = by_task.setdefault(r.task, [])
            if r.doc_id not in lst:
                lst.append(r.doc_id)
        queues = []
        for task in sorted(by_task):
            ids = sorted(by_task[task])
            random.Random(f"lumebench-eval-subset:{seed}:{split}:{task}").shuffle(ids)
            queues.append(ids)
        chosen: list[str] = []
        while len(chosen) < n_docs and any(queues):
            for q in queues:
                if q and len(chosen) < n_docs:
                    chosen.append(q.pop(0))
        keep += chosen
    return benchmark.subset(keep)
