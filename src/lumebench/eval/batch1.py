"""The fast engine's exact one-row path: one prompt per prefill, one token per forward, as the official
``model.generate`` runs (bf16/fp16, where batches change near-tie tokens; see
:func:`lumebench.eval.mia.one_at_a_time`), with the fast engine's early exits.

It is the continuous batch at batch 1 (:mod:`lumebench.eval.continuous`) without its per-token
bookkeeping, which a single row does not need:

- the next token stays on the device: the forward's input is the argmax tensor itself (no host list
  turned back into a device tensor) and the positions are views of one ``arange`` made per row;
- no attention mask: one unpadded row attends to everything, and transformers turns an all-ones mask
  into no mask anyway (``masking_utils._ignore_causal_mask_sdpa``) — after a host sync on it at
  every forward, which ``None`` skips. The attention kernel and its inputs are the same, so are the
  bits (``tests/test_eval_engine.py::test_batch1_path_is_token_identical``);
- no cache edits (no row leaves, no column is dropped), so no mask sums and no host sync for them;
- on a GPU, **one step of lookahead**: the forward for token ``t + 1`` is queued before token
  ``t`` is read on the host (copied to pinned memory behind an event, so the read waits for that
  copy only, not for the queued forward), so the early-exit test and the Python of the next launch
  overlap the GPU's work. When token ``t`` ends the row the queued forward is thrown away: every
  kept token comes from the same forward as without lookahead. On a CPU a forward runs when it is
  called, so there is nothing to overlap (``LOOKAHEAD_DEVICES``).
"""

from __future__ import annotations

import time

from lumebench.eval import kv_cache
from lumebench.eval.batching import cache_kwarg
from lumebench.eval.decoding import Generation, GenerationStats, decode_new
from lumebench.eval.early_exit import Tracker

#: device types where the next forward is queued before the current token is read (see the module
#: docstring); the tests add "cpu" to run the same code path here.
LOOKAHEAD_DEVICES = {"cuda"}


class _TokenReader:
    """Reads device token tensors on the host. On CUDA the copy goes to pinned memory without
    blocking and an event marks it, so reading waits for that copy, not for work queued after it."""

    def __init__(self, device):
        import torch

        self.cuda = device.type == "cuda"
        if self.cuda:
            self.bufs = [torch.empty(1, dtype=torch.long, pin_memory=True) for _ in range(2)]
            self.events = [torch.cuda.Event() for _ in range(2)]
        self.slot = 0
        self.pending = None

    def start(self, tok) -> None:
        if self.cuda:
            s = self.slot
            self.bufs[s].copy_(tok.view(-1), non_blocking=True)
            self.events[s].record()
            self.pending, self.slot = s, 1 - s
        else:
            self.pending = tok

    def read(self) -> int:
        if self.cuda:
            self.events[self.pending].synchronize()
            return int(self.bufs[self.pending][0])
        return int(self.pending)


def generate_one_at_a_time(model, tokenizer, rows, prompts, order, out: dict, progress, *, max_new_tokens,
                           early_exit, eos, sc_exit, check_every, stats: GenerationStats) -> None:
    """Generate the rows of ``order`` (indices into ``rows``/``prompts``) not in ``out`` yet, one
    at a time; each result goes into ``out[i]`` as soon as it is done."""
    import torch

    device = model.device
    cache_kw = cache_kwarg(model)
    lookahead = device.type in LOOKAHEAD_DEVICES
    with torch.inference_mode():
        for i in order:
            if i in out:
                continue
            tracker = Tracker(rows[i], tokenizer, eos, max_new_tokens, early_exit, sc_exit, check_every, stats)
            reason = _decode(model, prompts[i], tracker, device, cache_kw, lookahead, stats)
            stats.new_tokens += len(tracker.ids)
            out[i] = Generation(rows[i].id, decode_new(tokenizer, tracker.ids), tracker.ids, reason)
            progress.update(1)


def _decode(model, prompt: list[int], tracker: Tracker, device, cache_kw: str, lookahead: bool,
            stats: GenerationStats) -> str:
    """Greedy decoding of one prompt until the tracker stops it; returns the stop reason."""
    import torch

    n = len(prompt)
    positions = torch.arange(n + tracker.max_new_tokens + 1, device=device)[None, :]
    cache = kv_cache.new_cache()
    t0 = time.perf_counter()
    logits = model(input_ids=torch.tensor([prompt], dtype=torch.long, device=device),
                   position_ids=positions[:, :n], use_cache=True, logits_to_keep=1, **{cache_kw: cache}).logits
    cur = logits[:, -1, :].float().argmax(-1, keepdim=True)  # [1, 1]: the next token, on the device
    stats.prefills += 1
    stats.seconds["prefill"] += time.perf_counter() - t0
    reader = _TokenReader(device)
    reader.start(cur)

    def forward(tok, pos: int):
        t = time.perf_counter()
        lg = model(input_ids=tok, position_ids=positions[:, pos:pos + 1], use_cache=True, logits_to_keep=1,
                   **{cache_kw: cache}).logits
        nxt = lg[:, -1, :].float().argmax(-1, keepdim=True)
        stats.forwards += 1
        stats.rows_per_forward += 1
        stats.seconds["forward"] += time.perf_counter() - t
        return nxt

    while True:
        nxt = forward(cur, n) if lookahead else None  # queued before ``cur`` is read (thrown away at a stop)
        t = time.perf_counter()
        reason = tracker.push(reader.read())
        stats.seconds["accept"] += time.perf_counter() - t
        if reason is not None:
            return reason
        if nxt is None:
            nxt = forward(cur, n)
        n += 1
        cur = nxt
        reader.start(cur)
