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
principle with real checkpoints (the tests check token identity on a tiny model). In bf16/fp16 on a
CPU it happens (the attention's output depends on padding and on the number of query tokens), so
there the fast engine runs one row at a time without drafts, keeping only its early exits
(:func:`lumebench.eval.mia.one_at_a_time`): token for token the official bf16 ``generate``.

Decoding (both engines): only the new tokens, ``skip_special_tokens=True,
clean_up_tokenization_spaces=False``, then the transformers-4 clean-up applied explicitly
(:func:`lumebench.eval.metrics.clean_up_tokenization`) — what the official environment did.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Literal, Sequence

from lumebench.data.records import Row
from lumebench.errors import LumeError
from lumebench.eval.batching import cache_kwarg, eval_mode, halved_batch, pad_id
from lumebench.eval.metrics import (clean_up_tokenization, em_still_possible, rouge_tokens,
                                    rougeL_recall_settled)
from lumebench.eval.mia import length_buckets, max_padding, one_at_a_time
from lumebench.progress import bar, log

Engine = Literal["fast", "reference"]

# auto batch size: prompt+generation tokens held per batch. 16k tokens of KV cache is ~0.7 GB for a
# 135M model in fp32 and a few GB for 1B/7B in bf16 on a GPU; OOM halves it anyway.
AUTO_TOKEN_BUDGET = 16_384
AUTO_MAX_BATCH = 64

# generation_config settings that would make model.generate (the official call passes only
# do_sample=False, max_new_tokens, use_cache and pad_token_id; the rest comes from the checkpoint's
# generation_config) differ from a plain argmax loop: logits processors that change the argmax,
# other decoding strategies (beam search, contrastive search, DoLa, classifier-free guidance,
# constrained beams) and extra stopping rules. Sampling-only settings (temperature, top_p, ...) are
# inert under do_sample=False and are not listed.
_UNSUPPORTED = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "bad_words_ids": None,
                "min_length": 0, "min_new_tokens": None, "suppress_tokens": None,
                "begin_suppress_tokens": None, "forced_bos_token_id": None,
                "forced_eos_token_id": None, "sequence_bias": None, "encoder_repetition_penalty": 1.0,
                "exponential_decay_length_penalty": None, "num_beams": 1, "num_beam_groups": 1,
                "penalty_alpha": None, "dola_layers": None, "guidance_scale": None,
                "force_words_ids": None, "constraints": None, "watermarking_config": None,
                "stop_strings": None, "forced_decoder_ids": None}


@dataclass
class Generation:
    id: str
    text: str                      # decoded new tokens after clean-up
    token_ids: list[int] = field(repr=False)  # new tokens (including a final EOS)
    stop_reason: str               # eos | max_new_tokens | qa_mismatch | rouge_settled

    @property
    def n_new_tokens(self) -> int:
        return len(self.token_ids)


def decode_new(tokenizer, token_ids: Sequence[int]) -> str:
    """Decode generated tokens the official way (see module docstring)."""
    text = tokenizer.decode(list(token_ids), skip_special_tokens=True,
                            clean_up_tokenization_spaces=False)
    return clean_up_tokenization(text)


def eos_ids(model, tokenizer) -> set[int]:
    """The ids that end a generation — those of ``model.generation_config`` only, as
    ``model.generate`` (the official script) reads them; no fallback to the tokenizer's EOS, which
    would stop rows that the official run continues to 256 tokens."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        return set()
    return set(eos) if isinstance(eos, (list, tuple)) else {int(eos)}


def has_byte_fallback(tokenizer) -> bool:
    """Whether the decoder turns raw ``<0xNN>`` byte tokens into text (Llama-2, Mistral, Gemma).

    Such a decoder may replace several already-visible words with U+FFFD once a later byte makes
    the run invalid UTF-8, so "the last words cannot change" does not hold and the sc early exit
    (ROUGE-L settled) is switched off for it. Byte-level BPE (GPT-2, OLMo, SmolLM2, tiny) is safe.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.decoder is None:
        return True  # unknown decoder: be conservative
    import json

    return "ByteFallback" in json.dumps(json.loads(backend.to_str()).get("decoder"))


def _check_plain_greedy(model) -> None:
    gc = model.generation_config
    for name, neutral in _UNSUPPORTED.items():
        value = getattr(gc, name, neutral)
        if name == "penalty_alpha" and (not value or (getattr(gc, "top_k", None) or 0) <= 1):
            continue  # contrastive search needs penalty_alpha > 0 and top_k > 1
        if name == "guidance_scale" and value in (None, 1, 1.0):
            continue
        if value is not None and value != neutral:
            raise LumeError(f"the model's generation_config sets {name}={value!r}, which the fast "
                            f"engine does not apply (the official generate would); use --engine reference")


# --- reference engine ----------------------------------------------------------------------------

def _generate_reference(model, tokenizer, rows, max_new_tokens, official_extra_forward):
    import torch

    pad = tokenizer.eos_token_id  # the official generate's argument (batch 1: nothing is padded)
    out: list[Generation] = []
    for row in bar(rows, desc="generating (reference engine)", unit="row"):
        input_ids = tokenizer(row.input, return_tensors="pt").input_ids.to(model.device)
        with torch.no_grad():
            seq = model.generate(input_ids, do_sample=False, max_new_tokens=max_new_tokens,
                                 use_cache=True, pad_token_id=pad)
            new = seq[0, input_ids.shape[1]:].tolist()
            if official_extra_forward:  # the official unused NLL pass over question+answer
                both = tokenizer(row.input + row.output, return_tensors="pt").input_ids.to(model.device)
                labels = both.clone()
                labels[:, : input_ids.shape[1]] = -100
                model(both, labels=labels)
        stop = "eos" if new and new[-1] in eos_ids(model, tokenizer) else "max_new_tokens"
        out.append(Generation(row.id, decode_new(tokenizer, new), new, stop))
    return out


# --- fast engine ---------------------------------------------------------------------------------

@dataclass
class GenerationStats:
    """What the fast engine did (filled when passed as ``generate(..., stats=GenerationStats())``).

    forwards: decoding forward passes (each verifies ``1 + K`` tokens per row); prefills: prompt
    forward passes (rows joining the batch); rows_per_forward: summed batch size over decoding
    forwards; draft_proposed / draft_accepted: draft tokens verified / kept; new_tokens: tokens kept;
    checks: early-exit tests run (decode + test); seconds: wall time per part (forward, prefill,
    draft, accept (acceptance + early-exit tests), cache (join, drop, compact)).
    """

    forwards: int = 0
    prefills: int = 0
    rows_per_forward: int = 0
    draft_proposed: int = 0
    draft_accepted: int = 0
    new_tokens: int = 0
    checks: int = 0
    seconds: dict = field(default_factory=lambda: {k: 0.0 for k in ("forward", "prefill", "draft", "accept", "cache")})

    @property
    def accepted_per_forward(self) -> float:
        """Draft tokens accepted per decoding forward, summed over the rows of the batch."""
        return self.draft_accepted / self.forwards if self.forwards else 0.0

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("forwards", "prefills", "rows_per_forward", "draft_proposed",
                                             "draft_accepted", "new_tokens", "checks")}
        out["accepted_per_forward"] = self.accepted_per_forward
        out["seconds"] = dict(self.seconds)
        return out


# An sc row's ROUGE test runs every SC_CHECK_EVERY tokens; when it holds, a bisection over the
# tokens since the last test finds the first one where it holds (the test is monotone: see
# _Tracker), so the row stops exactly where a test after every token would stop it.
SC_CHECK_EVERY = 8


class _Tracker:
    """Per-row state of the fast loop: generated ids, stop rules and the early-exit test.

    ``push(token)`` returns the reason the row stops at that token (None = go on). When an
    early-exit test fires it may truncate ``ids`` to the first token where the test holds. The
    early-exit test ``exit_at(n)`` (on the first ``n`` tokens) is monotone — once it holds it
    holds for every longer output (qa: a text that can no longer match stays so; sc: the settled
    rouge tokens only grow, see :func:`lumebench.eval.metrics.rougeL_recall_settled`) — so
    testing every ``every`` tokens and bisecting on a hit gives the stop of a test after every
    token (``every=1``, the full recheck), at a fraction of the decoding and stemming.
    """

    def __init__(self, row: Row, tokenizer, eos: set[int], max_new_tokens: int, early_exit: bool,
                 sc_exit: bool = True, every: int | None = None, stats: GenerationStats | None = None):
        self.row = row
        self.ids: list[int] = []
        self.tokenizer, self.eos, self.max_new_tokens = tokenizer, eos, max_new_tokens
        self.test = early_exit and (row.kind == "qa" or sc_exit)
        self.every = every if every is not None else (1 if row.kind == "qa" else SC_CHECK_EVERY)
        self.gold_tokens = rouge_tokens(row.output) if row.kind == "sc" else None
        self.checked = 0  # exit_at(n) is known False for every n <= checked
        self.stats = stats

    def exit_at(self, n: int) -> str | None:
        """The early-exit reason for the first ``n`` generated tokens (None = none applies)."""
        if self.stats is not None:
            self.stats.checks += 1
        text = decode_new(self.tokenizer, self.ids[:n])
        if self.row.kind == "qa":
            return None if em_still_possible(self.row.output, text) else "qa_mismatch"
        return "rouge_settled" if rougeL_recall_settled(self.gold_tokens, text) else None

    def _first_exit(self, hi: int) -> tuple[int, str] | None:
        """The first n in (checked, hi] where the early exit holds, else None (checked becomes hi)."""
        if hi <= self.checked:
            return None
        reason = self.exit_at(hi)
        if reason is None:
            self.checked = hi
            return None
        lo = self.checked
        while hi - lo > 1:
            mid = (lo + hi) // 2
            r = self.exit_at(mid)
            if r is None:
                lo = mid
            else:
                hi, reason = mid, r
        return hi, reason

    def push(self, tok: int) -> str | None:
        self.ids.append(tok)
        n = len(self.ids)
        final = "eos" if tok in self.eos else ("max_new_tokens" if n >= self.max_new_tokens else None)
        if self.test and (final is not None or n - self.checked >= self.every):
            # at EOS / the length limit the early exit of the tokens before it still comes first
            hit = self._first_exit(n - 1 if final is not None else n)
            if hit is not None:
                del self.ids[hit[0]:]
                return hit[1]
        return final


def _left_padded(prompts: list[list[int]], pad_id: int, device):
    import torch

    n, width = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    return ids.to(device), mask.to(device)


@functools.cache
def _slack_layer_class():
    """``DynamicLayer`` that appends into spare room instead of concatenating.

    ``DynamicLayer.update`` does ``torch.cat([keys, new])``: every decoding step copies the whole
    cache of every layer, quadratic in the output length. With a batch of 64 rows of ~600 positions
    that copy is most of a small model's forward on a CPU (measured: 9 of 22 s of the tiny target's
    generation). This layer keeps keys and values in buffers with room for the next tokens and returns
    views of their used part; the engine's own cache edits (row selection, joining, compaction) assign
    new tensors to ``keys``/``values``, which the next update adopts into a fresh buffer. The values
    attention sees are the same tensors, so the outputs are unchanged.
    """
    from transformers.cache_utils import DynamicLayer

    class SlackLayer(DynamicLayer):
        _kbuf = _vbuf = None

        def _owns(self) -> bool:
            kb, k, v = self._kbuf, self.keys, self.values
            return (kb is not None and k.data_ptr() == kb.data_ptr() and k.shape[0] == kb.shape[0]
                    and k.stride() == kb.stride() and v.data_ptr() == self._vbuf.data_ptr()
                    and v.stride() == self._vbuf.stride())

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n, q = self.get_seq_length(), key_states.shape[-2]
            if not (n and self._owns()) or n + q > self._kbuf.shape[-2]:
                b, h, _, d = key_states.shape
                room = n + q + max(SLACK_MIN, (n + q) // 2)
                kb = key_states.new_empty(b, h, room, d)
                vb = value_states.new_empty(b, value_states.shape[1], room, value_states.shape[3])
                if n:
                    kb[:, :, :n] = self.keys
                    vb[:, :, :n] = self.values
                self._kbuf, self._vbuf = kb, vb
            self._kbuf[:, :, n:n + q] = key_states
            self._vbuf[:, :, n:n + q] = value_states
            self.keys, self.values = self._kbuf[:, :, :n + q], self._vbuf[:, :, :n + q]
            return self.keys, self.values

    return SlackLayer


SLACK_MIN = 64  # cache positions of spare room at least (then half the used length)


def _new_cache():
    """A ``DynamicCache`` whose layers append in place (see :func:`_slack_layer_class`)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.layer_class_to_replicate = _slack_layer_class()
    return cache


def _plain_dynamic(cache) -> bool:
    """Every layer is a plain growing layer (no sliding window, no static size): the engine may edit it."""
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) in (DynamicLayer, _slack_layer_class()) for layer in cache.layers)


def _run_batch(model, tokenizer, rows: list[Row], prompts: list[list[int]], *, max_new_tokens,
               early_exit, eos, pad_id, sc_exit: bool, check_every: int | None = None,
               stats: GenerationStats | None = None) -> list[Generation]:
    """Static batching (the slow path of the fast engine, kept as its reference): one batch from
    prefill to its last row, one token per forward, finished rows dropped."""
    import torch

    device = model.device
    n = len(rows)
    ids, mask = _left_padded(prompts, pad_id, device)
    trackers = [_Tracker(r, tokenizer, eos, max_new_tokens, early_exit, sc_exit, check_every, stats) for r in rows]
    cache_kw = cache_kwarg(model)
    alive = list(range(n))  # indices into rows of the batch rows, in cache order
    cache = _new_cache()
    results: dict[int, Generation] = {}
    step_input = ids
    while alive:
        position_ids = (mask.cumsum(-1) - 1).clamp_min(0)[:, -step_input.shape[1]:]
        logits = model(input_ids=step_input, attention_mask=mask, position_ids=position_ids,
                       use_cache=True, logits_to_keep=1, **{cache_kw: cache}).logits
        next_tok = logits[:, -1, :].float().argmax(-1)
        if stats is not None and step_input is ids:
            stats.prefills += 1
        elif stats is not None:
            stats.forwards += 1
            stats.rows_per_forward += len(alive)
        keep = []
        for slot, (i, tok) in enumerate(zip(alive, next_tok.tolist())):
            t = trackers[i]
            reason = t.push(tok)
            if reason is None:
                keep.append(slot)
            else:
                results[i] = Generation(rows[i].id, decode_new(tokenizer, t.ids), t.ids, reason)
        if not keep:
            break
        mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=mask.dtype, device=device)], 1)
        step_input = next_tok[:, None]
        if len(keep) < len(alive):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, step_input = mask[index], step_input[index]
            alive = [alive[s] for s in keep]
            # drop the left padding columns that no remaining row needs
            trim = int((mask.sum(0) == 0).long().cumprod(0).sum())
            if trim and _plain_dynamic(cache):
                mask = mask[:, trim:]
                for layer in cache.layers:
                    layer.keys = layer.keys[:, :, trim:, :]
                    layer.values = layer.values[:, :, trim:, :]
    if stats is not None:
        stats.new_tokens += sum(len(t.ids) for t in trackers)
    return [results[i] for i in range(n)]


def _auto_batch(prompt_len: int, max_new_tokens: int) -> int:
    return max(1, min(AUTO_MAX_BATCH, AUTO_TOKEN_BUDGET // (prompt_len + max_new_tokens)))


# --- continuous batching with exact speculative decoding --------------------------------------

MAX_DRAFT = 16          # draft tokens verified per row and forward, at most
# Prior of the forward-cost model time = a + b * (query tokens in the batch): a / b, in tokens.
# On a CPU a forward costs about its tokens (a small a / b); on a GPU one forward costs the same
# for one token or hundreds per row (a large a / b). Refitted online from the measured forwards.
COST_PRIOR_TOKENS = {"cpu": 8.0, "cuda": 512.0}


class _CostModel:
    """Online least-squares fit of a decoding forward's wall time to ``a + b * tokens`` (tokens =
    rows x (1 + K)); gives ``a / b``, the fixed cost of a forward in units of one query token."""

    def __init__(self, prior: float):
        self.prior = prior
        self.n = self.sx = self.sy = self.sxx = self.sxy = 0.0

    def add(self, tokens: int, seconds: float) -> None:
        decay = 0.97  # recent forwards count more (the cache grows, other processes come and go)
        self.n, self.sx, self.sy = self.n * decay + 1, self.sx * decay + tokens, self.sy * decay + seconds
        self.sxx, self.sxy = self.sxx * decay + tokens * tokens, self.sxy * decay + tokens * seconds

    def fixed_tokens(self) -> float:
        var = self.sxx - self.sx * self.sx / self.n if self.n else 0.0
        if self.n < 4 or var <= 1e-9 * max(self.sxx, 1.0):
            return self.prior
        b = (self.sxy - self.sx * self.sy / self.n) / var
        a = (self.sy - b * self.sx) / self.n
        if b <= 0:
            return self.prior
        # timings on a shared machine are noisy: stay within a factor 4 of the device's prior
        return min(4.0 * self.prior, max(self.prior / 4.0, a / b))


def _choose_k(drafts: list[list[int]], rates: list[float], fixed: float) -> int:
    """The number of draft columns K that maximises expected kept tokens per unit of forward cost:
    ``(rows + sum_r sum_{j<=min(K, len d_r)} q_r^j) / (fixed + rows * (1 + K))``."""
    longest = max((len(d) for d in drafts), default=0)
    if longest == 0:
        return 0
    rows = len(drafts)
    gain = [0.0] * (longest + 1)  # gain[K] = expected accepted tokens with K columns
    for d, q in zip(drafts, rates):
        p = 1.0
        for j in range(1, len(d) + 1):
            p *= q
            gain[j] += p
    best_k, best, acc = 0, rows / (fixed + rows), 0.0
    for k in range(1, longest + 1):
        acc += gain[k]
        value = (rows + acc) / (fixed + rows * (1 + k))
        if value > best:
            best_k, best = k, value
    return best_k


class _Slot:
    """A row in the running batch: its tracker, drafter, pending token (generated, not yet in the
    cache), number of real tokens in the cache, and draft acceptance counts."""

    __slots__ = ("i", "tracker", "drafter", "pending", "n_pos", "accepted", "tested", "k")

    def __init__(self, i, tracker, drafter, pending, n_pos):
        self.i, self.tracker, self.drafter, self.pending, self.n_pos = i, tracker, drafter, pending, n_pos
        self.accepted, self.tested, self.k = 0, 0, 4

    @property
    def rate(self) -> float:
        return (self.accepted + 1) / (self.tested + 2)


def _layers(cache):
    return cache.layers


def _cache_pad_left(cache, mask, extra: int):
    import torch

    for layer in _layers(cache):
        for name in ("keys", "values"):
            t = getattr(layer, name)
            pad = t.new_zeros(t.shape[0], t.shape[1], extra, t.shape[3])
            setattr(layer, name, torch.cat([pad, t], 2))
    return torch.cat([mask.new_zeros(mask.shape[0], extra), mask], 1)


def _cache_join(cache, mask, new_cache, new_mask):
    """The batch of ``cache`` followed by the rows of ``new_cache`` (left-padded to one width)."""
    import torch

    w, nw = mask.shape[1], new_mask.shape[1]
    if nw < w:
        new_mask = _cache_pad_left(new_cache, new_mask, w - nw)
    elif w < nw:
        mask = _cache_pad_left(cache, mask, nw - w)
    for layer, new in zip(_layers(cache), _layers(new_cache)):
        layer.keys = torch.cat([layer.keys, new.keys], 0)
        layer.values = torch.cat([layer.values, new.values], 0)
    return torch.cat([mask, new_mask], 0)


def _cache_compact(cache, mask, force: bool = False):
    """Drop cache columns that no row uses: left padding (a slice), and when rejected drafts have
    left holes worth it, right-align every row's real columns (a gather). Attention ignores masked
    columns, and each key already carries its rotary position, so the model sees the same thing."""
    import torch

    counts = mask.sum(1)
    width, need = mask.shape[1], int(counts.max())
    if width == need:
        return mask
    lead = int((mask.sum(0) == 0).long().cumprod(0).sum())  # all-zero columns on the left
    if not force and width - lead - need < max(32, need // 2):
        if lead:
            for layer in _layers(cache):
                layer.keys = layer.keys[:, :, lead:, :]
                layer.values = layer.values[:, :, lead:, :]
            mask = mask[:, lead:]
        return mask
    order = torch.argsort(mask * width + torch.arange(width, device=mask.device), dim=1)[:, width - need:]
    for layer in _layers(cache):
        b, h, _, d = layer.keys.shape
        index = order[:, None, :, None].expand(b, h, need, d)
        layer.keys = layer.keys.gather(2, index)
        layer.values = layer.values.gather(2, index)
    return mask.gather(1, order)


def _gold_sources(tokenizer, row: Row, eos: set[int]) -> list[list[int]]:
    """The row's gold continuation tokenised in context (see :mod:`lumebench.eval.drafts`)."""
    end = [min(eos)] if eos else []
    return [tokenizer(row.input + sep + row.output).input_ids + end for sep in ("", " ")]


class _ContinuousBatch:
    """Continuous batching with exact speculative decoding (see :func:`_generate_continuous`)."""

    def __init__(self, model, tokenizer, rows, prompts, *, max_new_tokens, early_exit, eos, pad_id,
                 sc_exit, cap, speculative, check_every, stats):
        from lumebench.eval.drafts import Drafter

        self.Drafter = Drafter
        self.model, self.tokenizer, self.rows, self.prompts = model, tokenizer, rows, prompts
        self.max_new_tokens, self.early_exit, self.eos, self.pad_id = max_new_tokens, early_exit, eos, pad_id
        self.sc_exit, self.cap, self.speculative, self.check_every = sc_exit, cap, speculative, check_every
        self.stats = stats
        self.cache_kw = cache_kwarg(model)
        self.device = model.device
        self.cost = _CostModel(COST_PRIOR_TOKENS.get(self.device.type, COST_PRIOR_TOKENS["cuda"]))
        self.slots: list[_Slot] = []
        self.cache = None
        self.mask = None

    def _finish(self, slot: _Slot, reason: str, results: dict) -> None:
        t = slot.tracker
        self.stats.new_tokens += len(t.ids)
        results[slot.i] = Generation(self.rows[slot.i].id, decode_new(self.tokenizer, t.ids), t.ids, reason)

    def _admit(self, idx: list[int], results: dict) -> None:
        """Prefill the prompts of ``idx`` in one forward and let the rows that go on join the batch."""
        import torch

        st = self.stats
        t0 = time.perf_counter()
        ids, mask = _left_padded([self.prompts[i] for i in idx], self.pad_id, self.device)
        cache = _new_cache()
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0),
                            use_cache=True, logits_to_keep=1, **{self.cache_kw: cache}).logits
        first = logits[:, -1, :].float().argmax(-1).tolist()
        st.prefills += 1
        st.seconds["prefill"] += time.perf_counter() - t0
        if not _plain_dynamic(cache):
            raise _StaticOnly()
        t0 = time.perf_counter()
        keep, new = [], []
        for r, (i, tok) in enumerate(zip(idx, first)):
            row = self.rows[i]
            tracker = _Tracker(row, self.tokenizer, self.eos, self.max_new_tokens, self.early_exit,
                               self.sc_exit, self.check_every, st)
            reason = tracker.push(tok)
            slot = _Slot(i, tracker, None, tok, len(self.prompts[i]))
            if reason is not None:
                self._finish(slot, reason, results)
                continue
            if self.speculative:
                slot.drafter = self.Drafter(self.prompts[i], _gold_sources(self.tokenizer, row, self.eos))
                slot.drafter.extend([tok])
            keep.append(r)
            new.append(slot)
        st.seconds["accept"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        if new:
            if len(keep) < len(idx):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                mask = mask[index]
            if self.cache is None:
                self.cache, self.mask = cache, mask
            else:
                self.mask = _cache_join(self.cache, self.mask, cache, mask)
            self.slots.extend(new)
            self.mask = _cache_compact(self.cache, self.mask)
        st.seconds["cache"] += time.perf_counter() - t0

    def _step(self, results: dict) -> None:
        """One decoding forward: every row's pending token plus K draft tokens, verified at once."""
        import torch

        st, slots = self.stats, self.slots
        t0 = time.perf_counter()
        drafts: list[list[int]] = []
        if self.speculative:
            budget = self.max_new_tokens
            drafts = [s.drafter.propose(min(s.k, MAX_DRAFT, budget - len(s.tracker.ids) - 1)) for s in slots]
            k = _choose_k(drafts, [s.rate for s in slots], self.cost.fixed_tokens())
        else:
            k = 0
        cols = [[s.pending] + (drafts[r][:k] + [s.pending] * (k - len(drafts[r][:k])) if k else [])
                for r, s in enumerate(slots)]
        st.seconds["draft"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        b, q = len(slots), 1 + k
        inp = torch.tensor(cols, dtype=torch.long, device=self.device)
        n_pos = torch.tensor([s.n_pos for s in slots], dtype=torch.long, device=self.device)
        position_ids = n_pos[:, None] + torch.arange(q, device=self.device)[None, :]
        mask = torch.cat([self.mask, self.mask.new_ones(b, q)], 1)
        logits = self.model(input_ids=inp, attention_mask=mask, position_ids=position_ids, use_cache=True,
                            logits_to_keep=q, **{self.cache_kw: self.cache}).logits
        pred = logits.float().argmax(-1).tolist()
        dt = time.perf_counter() - t0
        st.seconds["forward"] += dt
        st.forwards += 1
        st.rows_per_forward += b
        self.cost.add(b * q, dt)

        t0 = time.perf_counter()
        keep: list[int] = []
        reject_cols: list[tuple[int, int]] = []  # (row, number of valid new columns)
        for r, s in enumerate(slots):
            p = pred[r]
            d = drafts[r][:k] if k else []
            a = 0
            while a < len(d) and d[a] == p[a]:
                a += 1
            if d:
                s.accepted += a
                s.tested += min(a + 1, len(d))
                s.k = min(MAX_DRAFT, s.k + 2) if a == len(d) else max(1, s.k - 1)
                st.draft_proposed += len(d)
                st.draft_accepted += a
            new = d[:a] + [p[a]]
            reason = None
            for tok in new:
                reason = s.tracker.push(tok)
                if reason is not None:
                    break
            if reason is not None:
                self._finish(s, reason, results)
                continue
            if s.drafter is not None:
                s.drafter.extend(new)
            s.pending = new[-1]
            s.n_pos += a + 1
            keep.append(r)
            if a + 1 < q:
                reject_cols.append((len(keep) - 1, a + 1))
        st.seconds["accept"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        if not keep:
            self.slots, self.cache, self.mask = [], None, None
            return
        w = self.mask.shape[1]
        if len(keep) < b:
            index = torch.tensor(keep, device=self.device)
            self.cache.batch_select_indices(index)
            mask = mask[index]
        for r, valid in reject_cols:
            mask[r, w + valid:] = 0
        self.slots = [slots[r] for r in keep]
        self.mask = _cache_compact(self.cache, mask)
        st.seconds["cache"] += time.perf_counter() - t0

    def run(self, order: list[int], results: dict, progress) -> None:
        from collections import deque

        waiting = deque(i for i in order if i not in results)
        while waiting or self.slots:
            free = self.cap - len(self.slots)
            # rows join in groups (one prefill forward, one cache join) once a quarter of the slots is free
            if waiting and (not self.slots or free >= max(1, self.cap // 4) or len(waiting) <= free):
                before = len(results)
                group = sorted((waiting.popleft() for _ in range(min(free, len(waiting)))),
                               key=lambda i: -len(self.prompts[i]))
                # prefill in buckets of similar prompt length: padding costs in full on a CPU
                for bucket in length_buckets(group, [len(self.prompts[i]) for i in group], max_padding(self.device)):
                    self._admit(bucket, results)
                progress.update(len(results) - before)
            if self.slots:
                before = len(results)
                self._step(results)
                progress.update(len(results) - before)


class _StaticOnly(Exception):
    """The model's cache has layers the continuous batch cannot re-shape (e.g. sliding windows)."""


def _generate_fast(model, tokenizer, rows, max_new_tokens, batch_size, early_exit, *, continuous=True,
                   speculative=True, check_every=None, stats=None):
    import torch

    _check_plain_greedy(model)
    if one_at_a_time(model):
        # bf16/fp16 on a CPU: padding and draft columns change the attention's last bits (see
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
        if continuous:
            cap = (_auto_batch(max(len(p) for p in prompts), max_new_tokens) if batch_size == "auto"
                   else int(batch_size))
            while True:
                try:
                    _ContinuousBatch(model, tokenizer, rows, prompts, max_new_tokens=max_new_tokens,
                                     early_exit=early_exit, eos=eos, pad_id=pad, sc_exit=sc_exit, cap=cap,
                                     speculative=speculative, check_every=check_every,
                                     stats=stats).run(order, out, progress)
                    break
                except _StaticOnly:
                    continuous = False
                    break
                except RuntimeError as e:  # finished rows are kept; the rows in flight start again
                    cap = halved_batch(e, cap, "generation", "continuing with at most %d rows in the batch")
        if not continuous:
            _generate_static(model, tokenizer, rows, prompts, order, out, progress, max_new_tokens=max_new_tokens,
                             batch_size=batch_size, early_exit=early_exit, eos=eos, pad_id=pad,
                             sc_exit=sc_exit, check_every=check_every, stats=stats)
    progress.close()
    return [out[i] for i in range(len(rows))]


def _generate_static(model, tokenizer, rows, prompts, order, out, progress, *, max_new_tokens, batch_size,
                     early_exit, eos, pad_id, sc_exit, check_every, stats):
    order = [i for i in order if i not in out]
    cap: int | None = None if batch_size == "auto" else int(batch_size)
    pos = 0
    while pos < len(order):
        first = order[pos]
        bs = _auto_batch(len(prompts[first]), max_new_tokens) if batch_size == "auto" else int(batch_size)
        if cap is not None:
            bs = min(bs, cap)
        # a batch never mixes kinds
        chunk = [i for i in order[pos: pos + bs] if rows[i].kind == rows[first].kind]
        try:
            gens = _run_batch(model, tokenizer, [rows[i] for i in chunk], [prompts[i] for i in chunk],
                              max_new_tokens=max_new_tokens, early_exit=early_exit, eos=eos,
                              pad_id=pad_id, sc_exit=sc_exit, check_every=check_every, stats=stats)
        except RuntimeError as e:
            cap = halved_batch(e, len(chunk), "generation")
            continue
        for i, g in zip(chunk, gens):
            out[i] = g
        pos += len(chunk)
        progress.update(len(chunk))


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
            gens = _generate_reference(model, tokenizer, rows, max_new_tokens, official_extra_forward)
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
