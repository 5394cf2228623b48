"""Exact Memorization and Extraction Strength of the forget rows (opt-in metrics, issue 26).

Both read one teacher-forced forward pass per forget row: ``ids = prompt + answer`` with
``prompt = tokenizer(row.input)`` (the tokenizer's default special tokens, as generation encodes a
prompt) and ``answer = tokenizer(row.output, add_special_tokens=False)``; ``pred[j]`` is the argmax of
the logits at the position before answer token ``j``, i.e. the greedy prediction given the prompt
and the gold answer prefix ``answer[:j]``.

- **Exact Memorization** (Tirumala et al. 2022, "Memorization without overfitting", §2; OpenUnlearning
  ``exact_memorization``): per row, the fraction of answer tokens with ``pred[j] == answer[j]``;
  the metric is the mean over the forget rows.
- **Extraction Strength** (Carlini et al. 2021, "Extracting training data from large language
  models", prefix extraction; OpenUnlearning ``extraction_strength``): per row,
  ``1 - k/|y|`` for the smallest ``k`` such that greedy decoding from ``prompt + y[:k]`` gives the
  rest ``y[k:]`` exactly. Greedy decoding reproduces ``y[k:]`` exactly if and only if every
  teacher-forced prediction from ``k`` on is right (each generated token then equals the gold one,
  so the next context is the gold prefix again), so ``k`` = one past the last wrong prediction (0
  when none is wrong: ES = 1; ``|y|`` when the last is wrong: ES = 0). Mean over the forget rows.

Lower is better after unlearning for both (less of the forget answers memorised).
"""

from __future__ import annotations

from lumebench.eval.batching import eval_mode
from lumebench.eval.mia import model_device


def answer_predictions(model, tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """(greedy predictions, gold answer tokens) of one row, teacher-forced (see the module doc)."""
    import torch

    p = tokenizer(prompt)["input_ids"]
    y = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if not y:
        return [], []
    ids = torch.tensor([p + y], device=model_device(model))
    with eval_mode(model), torch.no_grad():
        logits = model(ids).logits[0]
    pred = logits[len(p) - 1:len(p) + len(y) - 1].argmax(-1).tolist()
    return pred, y


def em_of(pred: list[int], gold: list[int]) -> float:
    return sum(a == b for a, b in zip(pred, gold)) / len(gold)


def es_of(pred: list[int], gold: list[int]) -> float:
    wrong = [j for j, (a, b) in enumerate(zip(pred, gold)) if a != b]
    k = wrong[-1] + 1 if wrong else 0
    return 1.0 - k / len(gold)


def _per_row(inp, fn, key: str) -> dict:
    rows = [r for r in inp.rows if r.split == "forget"]
    per = []
    for r in rows:
        pred, gold = answer_predictions(inp.model, inp.tokenizer, r.input, r.output)
        if gold:
            per.append({"id": r.id, "task": r.task, "kind": r.kind, key: fn(pred, gold), "n_tokens": len(gold)})
    value = sum(x[key] for x in per) / len(per) if per else None
    return {"results": {key: value}, "rows": per}


def exact_memorization(inp) -> dict:
    """The metric ``exact_memorization`` (:data:`lumebench.metrics_table.METRICS`)."""
    return _per_row(inp, em_of, "exact_memorization")


def extraction_strength(inp) -> dict:
    """The metric ``extraction_strength`` (:data:`lumebench.metrics_table.METRICS`)."""
    return _per_row(inp, es_of, "extraction_strength")
