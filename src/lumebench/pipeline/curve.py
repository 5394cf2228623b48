"""The records of an unlearning run's evaluations: ``curve.jsonl`` (one line per evaluation, appended
as each exists) and the numbers of one evaluation that a curve shows (:func:`summarize`)."""

from __future__ import annotations

from pathlib import Path

from lumebench.errors import LumeError
from lumebench.io import iter_jsonl

CURVE = "curve.jsonl"


def summarize(results: dict) -> dict:
    """The numbers of one evaluation that a curve shows (from the official keys)."""
    def get(d, *keys):
        for k in keys:
            if not isinstance(d, dict) or k not in d:
                return None
            d = d[k]
        return d
    return {
        "forget_regurgitation": get(results, "forget-set", "overall-regurgitation-score"),
        "forget_knowledge": get(results, "forget-set", "overall-knowledge-score"),
        "retain_regurgitation": get(results, "retain-set", "overall-regurgitation-score"),
        "retain_knowledge": get(results, "retain-set", "overall-knowledge-score"),
        "task_aggregate": results.get("harmonic-mean-task-aggregate"),
        "mia_auc": results.get("mia_loss_acc"),
        "mia_score": results.get("mia_final_score"),
        "mmlu": results.get("mmlu_average"),
        "final_score": results.get("aggregate-score"),
    }


def read_curve(out_dir: Path) -> list[dict]:
    """The evaluations of ``curve.jsonl`` in step order; a step evaluated again (with MMLU, after a
    divergence under ``mmlu_at="ends"``) keeps its last record."""
    path = out_dir / CURVE
    if not path.exists():
        return []
    by_step: dict[int, dict] = {}
    for line, rec in iter_jsonl(path, tolerate_truncated_tail=True):
        if isinstance(rec.get("step"), bool) or not isinstance(rec.get("step"), int):
            raise LumeError(f"expected a whole number of steps, got {rec.get('step')!r}", path=str(path),
                            line=line, field="step")
        by_step[rec["step"]] = rec
    return [by_step[k] for k in sorted(by_step)]
