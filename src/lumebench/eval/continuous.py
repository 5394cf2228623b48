"""The fast engine's continuous batching with exact speculative decoding (see
:mod:`lumebench.eval.generation`): rows leave the batch when they stop and waiting rows join it, and
each forward verifies every row's pending token plus ``K`` draft tokens."""

from __future__ import annotations

import time

from lumebench.data.records import Row
from lumebench.eval import kv_cache
from lumebench.eval.batching import cache_kwarg
from lumebench.eval.decoding import Generation, decode_new
from lumebench.eval.early_exit import Tracker
from lumebench.eval.mia import length_buckets, max_padding

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


def _gold_sources(tokenizer, row: Row, eos: set[int]) -> list[list[int]]:
    """The row's gold continuation tokenised in context (see :mod:`lumebench.eval.drafts`)."""
    end = [min(eos)] if eos else []
    return [tokenizer(row.input + sep + row.output).input_ids + end for sep in ("", " ")]


class ContinuousBatch:
    """Continuous batching with exact speculative decoding (see :mod:`lumebench.eval.generation`)."""

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
        ids, mask = kv_cache.left_padded([self.prompts[i] for i in idx], self.pad_id, self.device)
        cache = kv_cache.new_cache()
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0),
                            use_cache=True, logits_to_keep=1, **{self.cache_kw: cache}).logits
        first = logits[:, -1, :].float().argmax(-1).tolist()
        st.prefills += 1
        st.seconds["prefill"] += time.perf_counter() - t0
        if not kv_cache.plain_dynamic(cache):
            raise StaticOnly()
        t0 = time.perf_counter()
        keep, new = [], []
        for r, (i, tok) in enumerate(zip(idx, first)):
            row = self.rows[i]
            tracker = Tracker(row, self.tokenizer, self.eos, self.max_new_tokens, self.early_exit,
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
                self.mask = kv_cache.cache_join(self.cache, self.mask, cache, mask)
            self.slots.extend(new)
            self.mask = kv_cache.cache_compact(self.cache, self.mask)
        st.seconds["cache"] += time.perf_counter() - t0

    def _step(self, results: dict) -> None:
        """One decoding forward: every row's pending token plus K draft tokens, verified at once;
        the accepted tokens are pushed, finished rows leave, the rejected columns leave the cache."""
        drafts, k = self._drafts()
        pred, mask = self._verify(drafts, k)
        keep, reject_cols = self._accept(pred, drafts, k, results)
        self._compact(keep, reject_cols, mask)

    def _drafts(self) -> tuple[list[list[int]], int]:
        """Each row's draft tokens and the number K of them to verify (0: plain greedy decoding)."""
        t0 = time.perf_counter()
        drafts: list[list[int]] = []
        k = 0
        if self.speculative:
            budget = self.max_new_tokens
            drafts = [s.drafter.propose(min(s.k, MAX_DRAFT, budget - len(s.tracker.ids) - 1)) for s in self.slots]
            k = _choose_k(drafts, [s.rate for s in self.slots], self.cost.fixed_tokens())
        self.stats.seconds["draft"] += time.perf_counter() - t0
        return drafts, k

    def _verify(self, drafts: list[list[int]], k: int):
        """One forward over every row's pending token and K draft columns (a row with fewer drafts
        repeats its pending token, whose predictions are never read); returns the argmax of each
        column and the attention mask over the cache with the new columns."""
        import torch

        t0 = time.perf_counter()
        slots, b, q = self.slots, len(self.slots), 1 + k
        cols = [[s.pending] + (drafts[r][:k] + [s.pending] * (k - len(drafts[r][:k])) if k else [])
                for r, s in enumerate(slots)]
        inp = torch.tensor(cols, dtype=torch.long, device=self.device)
        n_pos = torch.tensor([s.n_pos for s in slots], dtype=torch.long, device=self.device)
        position_ids = n_pos[:, None] + torch.arange(q, device=self.device)[None, :]
        mask = torch.cat([self.mask, self.mask.new_ones(b, q)], 1)
        logits = self.model(input_ids=inp, attention_mask=mask, position_ids=position_ids, use_cache=True,
                            logits_to_keep=q, **{self.cache_kw: self.cache}).logits
        pred = logits.float().argmax(-1).tolist()
        dt = time.perf_counter() - t0
        st = self.stats
        st.seconds["forward"] += dt
        st.forwards += 1
        st.rows_per_forward += b
        self.cost.add(b * q, dt)
        return pred, mask

    def _accept(self, pred: list[list[int]], drafts: list[list[int]], k: int,
                results: dict) -> tuple[list[int], list[tuple[int, int]]]:
        """Per row: the drafts equal to the model's argmax, then its own next token (token-identical
        to greedy decoding); a row that finishes leaves with its result. Returns the rows that go on
        and, for those that rejected a draft, (position among them, number of valid new columns)."""
        t0 = time.perf_counter()
        st = self.stats
        keep: list[int] = []
        reject_cols: list[tuple[int, int]] = []
        for r, s in enumerate(self.slots):
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
            if a < k:  # the columns past the accepted ones (a rejected draft, or padding) leave the cache
                reject_cols.append((len(keep) - 1, a + 1))
        st.seconds["accept"] += time.perf_counter() - t0
        return keep, reject_cols

    def _compact(self, keep: list[int], reject_cols: list[tuple[int, int]], mask) -> None:
        """Keep the cache rows of ``keep``, mask their rejected draft columns, and drop the cache
        columns no row attends to any more."""
        import torch

        t0 = time.perf_counter()
        if not keep:
            self.slots, self.cache, self.mask = [], None, None
            return
        w = self.mask.shape[1]
        if len(keep) < len(self.slots):
            index = torch.tensor(keep, device=self.device)
            self.cache.batch_select_indices(index)
            mask = mask[index]
        for r, valid in reject_cols:
            mask[r, w + valid:] = 0
        self.slots = [self.slots[r] for r in keep]
        self.mask = kv_cache.cache_compact(self.cache, mask)
        self.stats.seconds["cache"] += time.perf_counter() - t0

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


class StaticOnly(Exception):
    """The model's cache has layers the continuous batch cannot re-shape (e.g. sliding windows)."""


