"""Generation engines: the official one-prompt-at-a-time protocol, and a fast batched one that gives
the same scores.

``generate(model, tokenizer, rows, engine="fast"|"reference", ...) -> list[Generation]`` (in the
order of ``rows``).

**reference** = the official ``evaluate_generations.py`` protocol (SPEC.md §2): one prompt at a
time, ``tokenizer(input, return_tensors="pt")`` with the default special tokens,
``model.generate(input_ids, do_sample=False, max_new_tokens=256, use_cache=True,
pad_token_id=eos)`` without an attention mask, no early exit. ``official_extra_forward=True`` also
runs the official second, teacher-forced forward pass over ``input + output`` whose result no metric
uses — only so that speed comparisons pay the official cost.

**fast** = our own greedy loop with a KV cache:
- rows sorted sc first (they run long), then by prompt length, longest first;
- left padding, an attention mask and position ids counting each row's real tokens, so each row
  sees exactly the positions and context it sees alone;
- **continuous batching** (``continuous=True``): finished rows leave the batch (their KV-cache rows
  are dropped, as are cache columns no remaining row needs) and, once a quarter of the slots is
  free, the next waiting rows are prefilled (in buckets of similar prompt length, as MIA documents:
  padding costs in full on a CPU) and join the running batch (their cache left-padded to its width), so the batch stays full instead of ending in a long tail of a few
  rows. ``continuous=False`` is the static path (one batch from prefill to its last row, kinds not
  mixed), kept as its reference; models whose cache is not plain ``DynamicLayer`` use it;
- **exact speculative decoding** (``speculative=True``): each forward feeds every row its pending
  token plus ``K`` draft tokens (:mod:`lumebench.eval.drafts`: the row's gold continuation, n-grams
  of its prompt and of its own output) and reads the argmax at every position; a row keeps the
  drafts up to the first one that differs from the argmax, plus the argmax after the last kept one
  — exactly the tokens plain greedy decoding produces, one forward for several of them. Rejected
  draft positions are masked out of the cache (and compacted away when they add up). ``K`` is
  chosen per forward to maximise expected kept tokens per unit of forward cost, from each row's
  acceptance rate (its draft length adapts: +2 when all kept, -1 otherwise) and an online fit of
  forward time = a + b x tokens (on a CPU extra columns cost nearly in full, on a GPU almost
  nothing);
- ``batch_size="auto"`` starts from a token budget and halves on out-of-memory, then retries (rows
  already finished are kept);
- early exits that cannot change any score (``early_exit=True``):
  * qa: stop once the text can no longer equal the gold after strip + lower. The test compares
    with all whitespace removed (clean-up only deletes spaces, and later tokens only append), the
    final-sigma of ``str.lower`` folded, and trailing U+FFFD (an incomplete UTF-8 character)
    ignored — so it is conservative;
  * sc: stop once ROUGE-L recall is 1 on the rouge tokens that can no longer change (the last two
    are dropped: a later token can extend the last word, and " n't" clean-up can merge the last
    word into the previous one). LCS can only grow as tokens are appended, so recall stays 1, and
    ROUGE-1 recall is then 1 too;
  * every row stops at EOS (any id of ``generation_config.eos_token_id``) or ``max_new_tokens``.
  The tests are monotone, so they run every token for qa rows (short) and every
  ``SC_CHECK_EVERY`` tokens for sc rows; a hit is bisected back to the first token where the test
  holds, and a row that reaches EOS or the limit is tested on the tokens before it first: a row
  stops exactly where a test after every token (``check_every=1``) stops it, at a fraction of the
  decoding and stemming, which was quadratic in the output length.
  The stored text of an early-exited row is a prefix of the reference text; every metric is equal.
  ``Generation.stop_reason`` says why a row stopped: ``eos``, ``max_new_tokens``, ``qa_mismatch``,
  ``rouge_settled``.

Greedy argmax ties resolve to the lowest id in both engines (``torch.argmax``). Batched float
arithmetic can differ from batch-1 arithmetic in the last bits; a near-tie flip is possible in
principle with real checkpoints (the tests check token identity on a tiny model). In bf16/fp16 it
happens, on a CPU and on a GPU (the attention's output depends on padding and on the number of query
tokens; 8 of 60 rows changed on an H100), so there the fast engine runs one row at a time without drafts, keeping only its early exits
(:func:`lumebench.eval.mia.one_at_a_time`): token for token the official bf16 ``generate``. One row
at a time (bf16/fp16, or ``batch_size=1`` without drafts) runs :mod:`.batch1`, the continuous batch's
one-row case without its per-token bookkeeping (no host round trip of the token, no mask, no cache
edits; on a GPU the next forward is queued before the current token is read).

Decoding (both engines): only the new tokens, ``skip_special_tokens=True,
clean_up_tokenization_spaces=False``, then the transformers-4 clean-up applied explicitly
(:func:`lumebench.eval.metrics.clean_up_tokenization`) — what the official environment did.

This module is the entry point (:func:`generate`); the parts live in :mod:`.decoding` (the
:class:`Generation` record, :class:`GenerationStats`, decoding, stop ids), :mod:`.reference_engine`,
:mod:`.early_exit` (the per-row stop rules), :mod:`.kv_cache`, :mod:`.continuous` (continuous batching
with speculative decoding) and :mod:`.static_batch` (static batching, the automatic batch size).
"""

from __future__ import annotations

import time
from typing import Literal, Sequence

from lumebench.data.records import Row
from lumebench.errors import LumeError
from lumebench.eval.batch1 import generate_one_at_a_time
from lumebench.eval.batching import eval_mode, halved_batch, pad_id
from lumebench.eval.continuous import ContinuousBatch, StaticOnly
from lumebench.eval.decoding import (Generation, GenerationStats, check_plain_greedy, decode_new,  # noqa: F401
                                     eos_ids, has_byte_fallback)
from lumebench.eval.early_exit import SC_CHECK_EVERY  # noqa: F401
from lumebench.eval.mia import one_at_a_time
from lumebench.eval.reference_engine import generate_reference
from lumebench.eval.static_batch import auto_batch, generate_static
from lumebench.progress import bar, log

Engine = Literal["fast", "reference"]


def _generate_fast(model, tokenizer, rows, max_new_tokens, batch_size, early_exit, *, continuous=True,
                   speculative=True, check_every=None, stats=None):
    import torch

    check_plain_greedy(model)
    if one_at_a_time(model):
        # bf16/fp16: padding and draft columns change the attention's last bits (see
        # one_at_a_time); one row per forward and one token per step, as the official generate
        batch_size, speculative = 1, False
    stats = stats if stats is not None else GenerationStats()
    eos = eos_ids(model, tokenizer)
    sc_exit = not has_byte_fallback(tokenizer)  # once per call: it serialises the tokenizer
    pad = pad_id(tokenizer)
    prompts = [tokenizer(r.input).input_ids for r in rows]
    # sc rows first (they run long), then qa; longest prompt first within each kind
    order = sorted(range(len(rows)), key=lambda i: (rows[i].kind != "sc", -len(prompts[i]), i))
    out: dict[int, Generation] = {}
    progress = bar(total=len(rows), desc="generating (fast engine)", unit="row")
    with torch.inference_mode():
        if batch_size == 1 and not speculative and continuous:  # one row per forward: the lean exact path
            try:
                generate_one_at_a_time(model, tokenizer, rows, prompts, order, out, progress,
                                       max_new_tokens=max_new_tokens, early_exit=early_exit, eos=eos,
                                       sc_exit=sc_exit, check_every=check_every, stats=stats)
            except RuntimeError as e:  # out of memory with one row: one line (anything else re-raised)
                halved_batch(e, 1, "generation")
        else:
            _generate_batched(model, tokenizer, rows, prompts, order, out, progress, max_new_tokens, batch_size,
                              early_exit, eos, pad, sc_exit, continuous, speculative, check_every, stats)
    progress.close()
    return [out[i] for i in range(len(rows))]


def _generate_batched(model, tokenizer, rows, prompts, order, out, progress, max_new_tokens, batch_size,
                      early_exit, eos, pad, sc_exit, continuous, speculative, check_every, stats):
    if continuous:
        cap = (auto_batch(max(len(p) for p in prompts), max_new_tokens) if batch_size == "auto"
               else int(batch_size))
        while True:
            try:
                ContinuousBatch(model, tokenizer, rows, prompts, max_new_tokens=max_new_tokens,
                                early_exit=early_exit, eos=eos, pad_id=pad, sc_exit=sc_exit, cap=cap,
                                speculative=speculative, check_every=check_every,
                                stats=stats).run(order, out, progress)
                break
            except StaticOnly:
                continuous = False
                break
            except RuntimeError as e:  # finished rows are kept; the rows in flight start again
                cap = halved_batch(e, cap, "generation", "continuing with at most %d rows in the batch")
    if not continuous:
        generate_static(model, tokenizer, rows, prompts, order, out, progress, max_new_tokens=max_new_tokens,
                        batch_size=batch_size, early_exit=early_exit, eos=eos, pad_id=pad,
                        sc_exit=sc_exit, check_every=check_every, stats=stats)


def generate(model, tokenizer, rows: Sequence[Row], *, engine: Engine = "fast",
             max_new_tokens: int = 256, batch_size: int | str = "auto", early_exit: bool = True,
             official_extra_forward: bool = False, continuous: bool = True, speculative: bool = True,
             check_every: int | None = None, stats: GenerationStats | None = None) -> list[Generation]:
    """Greedy generations for ``rows`` (returned in the same order). See the module docstring.

    Fast engine only: ``continuous`` (continuous batching; False = static batches),
    ``speculative`` (exact speculative decoding), ``check_every`` (early-exit test interval; None =
    every token for qa rows, every ``SC_CHECK_EVERY`` for sc rows, 1 = the full recheck after every
    token), ``stats`` (a :class:`GenerationStats` to fill). None of them changes an output."""
    rows = list(rows)
    if not rows:
        return []
    t0 = time.perf_counter()
    with eval_mode(model):
        if engine == "reference":
            gens = generate_reference(model, tokenizer, rows, max_new_tokens, official_extra_forward)
        elif engine == "fast":
            gens = _generate_fast(model, tokenizer, rows, max_new_tokens, batch_size, early_exit,
                                  continuous=continuous, speculative=speculative, check_every=check_every,
                                  stats=stats)
        else:
            raise LumeError(f"unknown engine {engine!r}; choose fast or reference")
    n_tok = sum(g.n_new_tokens for g in gens)
    log.debug("%s engine: %d rows, %d new tokens in %.1fs", engine, len(rows), n_tok,
              time.perf_counter() - t0)
    return gens


# --- parallel rows (lumebench.eval.parallel_rows): every row computed alone by a worker ------------

def generate_rows(pool, tokenizer, rows: Sequence, **kwargs) -> list:
    """:func:`generate` with every row computed alone by a worker of ``pool`` (a
    :class:`~lumebench.eval.parallel_rows.RowPool`: the fast engine's batch-1 path, or the reference
    engine), in the order of ``rows``."""
    if not rows:
        return []
    lens = [len(tokenizer(r.input).input_ids) for r in rows]
    # sc rows first (they run long), then the longer prompts
    costs = [(1e9 if r.kind == "sc" else 0) + n for r, n in zip(rows, lens)]
    return pool.map(_generate_one, [(r, kwargs) for r in rows], costs, desc="generating (parallel rows)")


def _generate_one(model, tokenizer, item):
    row, kwargs = item
    kwargs = dict(kwargs)
    if kwargs.get("engine", "fast") == "fast":
        kwargs.update(batch_size=1, speculative=False)
    return generate(model, tokenizer, [row], **kwargs)[0]
