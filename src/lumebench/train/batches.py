"""Turn text into training batches for :func:`lumebench.train.loop.train`.

- a **document** is trained as its full text followed by EOS;
- a **QA pair** as ``question + " " + answer`` followed by EOS, so the model learns to stop after
  the answer (the knowledge metric is an exact match of the whole generation). The loss covers
  every token, question included (memorisation fine-tuning, as the LUME targets were trained).

Batches are right-padded with the pad token; ``labels`` are -100 on padding only (pad may equal EOS,
so padding is found from the attention mask, never from the token id). The order of each epoch is
a seeded shuffle of ``(seed, epoch)``, so ``EpochBatches(...)(epoch)`` is the same list every time
it is asked for — what the training loop's exact resume relies on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

import torch

IGNORE = -100


def encode(tokenizer, text: str, max_length: int | None = None) -> list[int]:
    """Token ids of ``text`` (with the tokenizer's default special tokens, as evaluation prompts are
    tokenised) followed by EOS, truncated to ``max_length`` keeping the EOS."""
    ids = list(tokenizer(text)["input_ids"])
    eos = tokenizer.eos_token_id
    if not ids or ids[-1] != eos:
        ids.append(eos)
    if max_length is not None and len(ids) > max_length:
        ids = ids[: max_length - 1] + [eos]
    return ids


def document_examples(tokenizer, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
    return [encode(tokenizer, t, max_length) for t in texts]


def qa_examples(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int | None = None) -> list[list[int]]:
    return [encode(tokenizer, q + " " + a, max_length) for q, a in pairs]


def collate(examples: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: ``input_ids``, ``attention_mask``, ``labels``."""
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e)] = torch.tensor(e, dtype=torch.long)
        mask[i, : len(e)] = 1
    labels = ids.masked_fill(mask == 0, IGNORE)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def epoch_rng(seed: int, epoch: int) -> random.Random:
    """The random generator of one epoch: independent of everything but (seed, epoch)."""
    return random.Random(f"lumebench:{seed}:{epoch}")


@dataclass
class EpochBatches:
    """``epoch_batches`` for the training loop: ``self(epoch) -> list of batches``.

    group_by_length: shuffle, then sort by length within windows of ``batch_size x 8`` examples and
    shuffle the resulting batches. Documents (~100-400 tokens) and QA pairs (~20) then rarely share
    a batch, which cuts the padding (and the compute) by about half on LUME while keeping the order
    random. ``drop_last`` is never used: every example is seen every epoch.
    """

    examples: list[list[int]]
    batch_size: int
    pad_id: int
    seed: int = 0
    shuffle: bool = True
    group_by_length: bool = True

    def __len__(self) -> int:
        return -(-len(self.examples) // self.batch_size)

    def order(self, epoch: int) -> list[list[int]]:
        """Example indices of each batch of ``epoch``."""
        idx = list(range(len(self.examples)))
        rng = epoch_rng(self.seed, epoch)
        if self.shuffle:
            rng.shuffle(idx)
        bs = self.batch_size
        if self.group_by_length:
            window = bs * 8
            grouped = []
            for w in range(0, len(idx), window):
                grouped += sorted(idx[w:w + window], key=lambda i: -len(self.examples[i]))
            idx = grouped
        batches = [idx[i:i + bs] for i in range(0, len(idx), bs)]
        if self.shuffle and self.group_by_length:
            rng.shuffle(batches)
        return batches

    def __call__(self, epoch: int) -> list[dict[str, torch.Tensor]]:
        return [collate([self.examples[i] for i in b], self.pad_id) for b in self.order(epoch)]


def causal_lm_loss(model, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean next-token cross-entropy over the labelled tokens of the (global) batch: what
    ``model(labels=...).loss`` gives with one process, and exactly the same gradient when the batch
    is shared out over several (:func:`lumebench.distributed.global_mean`)."""
    import torch.nn.functional as F

    from lumebench.distributed import global_mean

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE
    nll = F.cross_entropy(logits[:, :-1, :].float().transpose(1, 2), labels.clamp(min=0), reduction="none")
    return global_mean(nll, mask), {}


@dataclass
class ReplayBatches(EpochBatches):
    """:class:`EpochBatches` plus, in every epoch, ``per_epoch`` examples of a ``replay`` pool taken
    in turn (epoch k takes the k-th slice, wrapping round), shuffled in with the others: a model
    that memorises ``examples`` keeps reading text like them, as a pretrained LM fine-tuned on a
    benchmark still models other text (``lumebench.data.heldout``)."""

    replay: list[list[int]] = field(default_factory=list)
    per_epoch: int = 0

    def _epoch_examples(self, epoch: int) -> list[list[int]]:
        k = min(self.per_epoch, len(self.replay))
        if not k:
            return self.examples
        start = (epoch * k) % len(self.replay)
        return self.examples + [self.replay[(start + i) % len(self.replay)] for i in range(k)]

    def __len__(self) -> int:
        return -(-(len(self.examples) + min(self.per_epoch, len(self.replay))) // self.batch_size)

    def __call__(self, epoch: int) -> list[dict[str, torch.Tensor]]:
        examples = self._epoch_examples(epoch)
        view = EpochBatches(examples, self.batch_size, self.pad_id, self.seed, self.shuffle, self.group_by_length)
        return [collate([examples[i] for i in b], self.pad_id) for b in view.order(epoch)]
