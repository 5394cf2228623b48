"""Draft tokens for exact speculative decoding (used by the fast generation engine).

A draft is only a guess: the engine verifies it in one forward pass and keeps the prefix where every
draft token equals the model's own argmax, plus the model's next token. So a draft can make
generation faster or slower, never different. Good guesses for an evaluation are:

- the row's **gold continuation**: a target that memorised the benchmark regurgitates it, token for
  token. The gold is tokenised in context (``input + output`` and ``input + " " + output``, then the
  model's EOS), and while the generated tokens follow it the draft is simply its next tokens;
- **n-grams of the row's own context** (prompt + generated text, "prompt lookup"): after the last
  ``n`` tokens (longest ``n`` first, ``n <= MAX_NGRAM``) propose what followed their latest earlier
  occurrence. A model that loops (typical after unlearning) repeats itself exactly; a draft that runs
  past the end of the context continues the repetition (periodic extension).

The gold pointer wins while it is valid; after a divergence the longest n-gram match, in the gold
(first occurrence) or the context (latest occurrence), proposes the next draft; gold wins a tie.
"""

from __future__ import annotations

from typing import Sequence

MAX_NGRAM = 4


def _index(seq: Sequence[int], max_n: int, latest: bool) -> dict[tuple[int, ...], int]:
    """n-gram (n = 1..max_n) -> position right after it, for every n-gram followed by a token."""
    out: dict[tuple[int, ...], int] = {}
    for end in range(1, len(seq)):
        for n in range(1, min(max_n, end) + 1):
            key = tuple(seq[end - n:end])
            if latest or key not in out:
                out[key] = end
    return out


class Drafter:
    """Proposes draft tokens for one row; :meth:`extend` feeds it the tokens actually generated."""

    def __init__(self, prompt: Sequence[int], golds: Sequence[Sequence[int]] = (), max_ngram: int = MAX_NGRAM):
        self.max_n = max_ngram
        self.ctx = list(prompt)
        self.ctx_index = _index(self.ctx, max_ngram, latest=True)
        self.golds = [list(g) for g in golds if g]
        self.gold_index = [_index(g, max_ngram, latest=False) for g in self.golds]
        self.ptr: tuple[int, int] | None = None  # (gold source, position of the next expected token)
        p = len(self.ctx)
        for s, g in enumerate(self.golds):
            if len(g) > p and g[:p] == self.ctx:
                self.ptr = (s, p)
                break

    def extend(self, tokens: Sequence[int]) -> None:
        for t in tokens:
            end = len(self.ctx)
            for n in range(1, min(self.max_n, end) + 1):  # n-grams now followed by t
                self.ctx_index[tuple(self.ctx[end - n:end])] = end
            self.ctx.append(t)
            if self.ptr is not None:
                s, p = self.ptr
                g = self.golds[s]
                self.ptr = (s, p + 1) if p < len(g) and g[p] == t else None

    def _match(self) -> tuple[int | None, int] | None:
        """(gold source or None for the context, start of the continuation) after the longest n-gram
        match of the context's end."""
        ctx = self.ctx
        for n in range(min(self.max_n, len(ctx)), 0, -1):
            key = tuple(ctx[-n:])
            for s, index in enumerate(self.gold_index):
                start = index.get(key)
                if start is not None:
                    return s, start
            start = self.ctx_index.get(key)
            if start is not None:
                return None, start
        return None

    def propose(self, k: int) -> list[int]:
        """Up to ``k`` draft tokens for the positions after the current context."""
        if k <= 0:
            return []
        if self.ptr is not None:
            s, p = self.ptr
            return self.golds[s][p:p + k]
        m = self._match()
        if m is None:
            return []
        s, start = m
        if s is not None:  # follow this gold source from now on
            self.ptr = (s, start)
            return self.golds[s][start:start + k]
        draft: list[int] = []
        n_ctx = len(self.ctx)
        for j in range(k):  # periodic extension past the end of the context
            i = start + j
            draft.append(self.ctx[i] if i < n_ctx else draft[i - n_ctx])
        return draft
