"""The results schema of an unlearning run: ``curve.jsonl``, one :class:`Evaluation` per line, appended
as each exists. The jobs write it (:mod:`lumebench.pipeline.unlearn`, the ZJUKLAB merge, the
evaluation before unlearning that ``lume run`` shares) and the report reads it
(:mod:`lumebench.report.results`), through :meth:`Evaluation.to_json` / :meth:`Evaluation.from_json`
only: a line that does not follow the schema is an error naming the file, line and field.

One line::

    {"epoch": 2.0, "step": 16, "forget_regurgitation": .., ..., "final_score": ..,   # summary (readable)
     "mmlu_partial": true, "results": {...official keys of SPEC.md §2...}, "shared_from": "ga"?}

``results`` is the evaluator's ``results.json`` without its ``meta``; the summary fields are derived
from it (written for a reader of the file, never read back); ``mmlu_partial`` says that MMLU was
measured on a per-subject sample; ``shared_from`` names the method run whose evaluation before
unlearning this one reuses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from lumebench.errors import LumeError
from lumebench.io import iter_jsonl
from lumebench.metrics_table import curve_summary

CURVE = "curve.jsonl"


def summarize(results: dict) -> dict:
    """The numbers of one evaluation that a curve shows (the ``curve`` fields of
    :data:`lumebench.metrics_table.METRICS`, from the official keys)."""
    return curve_summary(results)


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of an unlearning run (one line of ``curve.jsonl``)."""

    step: int                  # optimizer steps done (0 = the target before unlearning)
    epoch: float               # passes over the forget set done
    results: dict              # the official results (SPEC.md §2), without ``meta``
    mmlu_partial: bool = False  # MMLU measured on a per-subject sample
    shared_from: str | None = None

    @classmethod
    def of(cls, step: int, epoch: float, results: dict) -> "Evaluation":
        """From what :func:`lumebench.eval.evaluate.evaluate` returned."""
        mmlu = (results.get("meta") or {}).get("mmlu") or {}
        return cls(step, epoch, {k: v for k, v in results.items() if k != "meta"},
                   bool(mmlu.get("partial")) and results.get("mmlu_average") is not None)

    @property
    def summary(self) -> dict:
        return summarize(self.results)

    def brief(self) -> dict:
        """Step, epoch and summary (what ``unlearn.json`` lists per evaluation)."""
        return {"epoch": self.epoch, "step": self.step, **self.summary}

    def to_json(self) -> dict:
        out = {**self.brief(), "mmlu_partial": self.mmlu_partial, "results": self.results}
        if self.shared_from is not None:
            out["shared_from"] = self.shared_from
        return out

    @classmethod
    def from_json(cls, obj: dict, *, path: str | Path = CURVE, line: int | None = None) -> "Evaluation":
        def bad(field: str, expected: str) -> LumeError:
            return LumeError(f"expected {expected}, got {obj.get(field)!r}", path=str(path), line=line, field=field)

        step, epoch = obj.get("step"), obj.get("epoch")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise bad("step", "a whole number of steps >= 0")
        if isinstance(epoch, bool) or not isinstance(epoch, (int, float)) or not math.isfinite(epoch) or epoch < 0:
            raise bad("epoch", "a number >= 0")
        if not isinstance(obj.get("results"), dict):
            raise bad("results", "the official results object")
        for split in ("forget-set", "retain-set"):
            block = obj["results"].get(split)
            if block is not None and not (isinstance(block, dict)
                                          and all(isinstance(v, (dict, int, float)) or v is None
                                                  for v in block.values())):
                raise LumeError(f"expected the official {split} object (per-task objects and scores)",
                                path=str(path), line=line, field=f"results.{split}")
        if not isinstance(obj.get("mmlu_partial"), bool):
            raise bad("mmlu_partial", "true or false (a curve written by this version of lumebench)")
        shared = obj.get("shared_from")
        if shared is not None and not isinstance(shared, str):
            raise bad("shared_from", "a method label")
        return cls(step, float(epoch), obj["results"], obj["mmlu_partial"], shared)


def read_curve(out_dir: Path) -> list[Evaluation]:
    """The evaluations of ``out_dir/curve.jsonl`` in step order (none if there is no file); a step
    evaluated again (with MMLU, after a divergence under ``mmlu_at="ends"``) keeps its last record."""
    path = Path(out_dir) / CURVE
    if not path.exists():
        return []
    by_step: dict[int, Evaluation] = {}
    for line, obj in iter_jsonl(path, tolerate_truncated_tail=True):
        e = Evaluation.from_json(obj, path=path, line=line)
        by_step[e.step] = e
    return [by_step[k] for k in sorted(by_step)]
