"""The fast engine's per-row stop rules: EOS, the length limit and the early exits that cannot change
any score (qa: the gold can no longer match; sc: ROUGE-L recall settled at 1), tested every few
tokens and bisected back to the first token where they hold (see :mod:`lumebench.eval.generation`).
"""

from __future__ import annotations

from lumebench.data.records import Row
from lumebench.eval.decoding import GenerationStats, decode_new
from lumebench.eval.metrics import em_still_possible, rouge_tokens, rougeL_recall_settled


# An sc row's ROUGE test runs every SC_CHECK_EVERY tokens; when it holds, a bisection over the
# tokens since the last test finds the first one where it holds (the test is monotone: see
# Tracker), so the row stops exactly where a test after every token would stop it.
SC_CHECK_EVERY = 8


class Tracker:
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

