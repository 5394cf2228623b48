"""Batching glue shared by the evaluation engines (generation, MIA, MMLU) and the training code.

- :func:`is_oom` / :func:`halved_batch`: the one rule for absorbing an out-of-memory error by
  halving the batch (a batch of one that still runs out of memory is a one-line :class:`LumeError`);
  :func:`run_batches` runs a list in chunks with that rule (MIA, MMLU); the generation engines call
  :func:`halved_batch` from their own loops (their batches are not plain consecutive chunks).
- :func:`pad_id`: the token id that fills padded positions.
- :func:`eval_mode`: ``model.eval()`` for a block, the training flag restored after it.
- :func:`cache_kwarg` / :func:`output_cache`: the KV-cache keyword of ``model.forward`` and the cache
  of its output, under the names of every supported transformers version.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, Iterator, Sequence

from lumebench.errors import LumeError
from lumebench.progress import bar, log


def is_oom(err: BaseException) -> bool:
    """True for CUDA / CPU out-of-memory errors (the only errors batch halving may absorb)."""
    import torch
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "not enough memory" in text)


def halved_batch(err: BaseException, size: int, what: str, then: str = "retrying with %d") -> int:
    """Call in an ``except`` block: the batch size to retry with after ``err`` at batch ``size``
    (half of it), logged as ``"{what}: out of memory at batch size {size}; " + then % new``.
    Re-raises ``err`` when it is not an out-of-memory error; at batch size 1 raises a one-line
    :class:`LumeError`."""
    import torch
    if not is_oom(err):
        raise err
    if size <= 1:
        raise LumeError(f"{what}: out of memory even with batch size 1") from None
    new = max(1, size // 2)
    log.info("%s: out of memory at batch size %d; " + then, what, size, new)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return new


def run_batches(items: Sequence[Any], start_size: int, fn: Callable[[list], None], *,
                desc: str = "", unit: str = "doc") -> int:
    """Call ``fn(chunk)`` over consecutive chunks of ``items``; on out-of-memory halve the chunk
    size and retry the same chunk (:func:`halved_batch`). Returns the last batch size used."""
    size, i = max(1, int(start_size)), 0
    with bar(total=len(items), desc=desc, unit=unit) as pbar:
        while i < len(items):
            chunk = list(items[i:i + size])
            try:
                fn(chunk)
            except RuntimeError as e:  # torch.OutOfMemoryError is a RuntimeError
                size = halved_batch(e, size, desc or "evaluation", "batch size lowered to %d")
                continue
            i += len(chunk)
            pbar.update(len(chunk))
    return size


def pad_id(tokenizer) -> int:
    """The id that fills padded positions: the tokenizer's pad token, else its EOS, else 0.

    Every caller (generation's left padding, MIA's and MMLU's right padding, the unlearning
    batches) masks padded positions out of the attention and reads no logit or label there, so the
    value cannot change a number; it only has to be a valid id. (The reference generation engine's
    ``pad_token_id=eos`` is the official ``generate`` argument, not padding: it keeps its own.)"""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0


@contextlib.contextmanager
def eval_mode(model) -> Iterator[Any]:
    """``with eval_mode(model):`` — the model in eval mode for the block, its training flag (on or
    off) restored afterwards, also on an exception."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def cache_kwarg(model) -> str:
    """``cache`` in recent transformers (``past_key_values`` is deprecated there), else the old name.
    A PEFT model's own ``forward`` takes ``**kwargs`` and passes them on: its base model decides."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def output_cache(out):
    """The KV cache of a forward's output (``cache``, or ``past_key_values`` in older transformers)."""
    c = getattr(out, "cache", None)
    return c if c is not None else getattr(out, "past_key_values", None)
