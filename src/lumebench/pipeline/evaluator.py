"""The evaluations along an unlearning run's curve: :class:`Evaluator` evaluates the model at a step
(or reuses the record ``curve.jsonl`` already holds for it: a resumed run never evaluates a step
twice) and appends the record as soon as it exists; the main process writes. Used by every
unlearning run and by composite methods (:class:`lumebench.pipeline.unlearn.CompositeRun`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lumebench import distributed
from lumebench.curve import CURVE, Evaluation, read_curve
from lumebench.data.records import Benchmark
from lumebench.eval.batching import eval_mode
from lumebench.faults import fault
from lumebench.io import append_jsonl
from lumebench.methods.base import UnlearnContext
from lumebench.pipeline.eval_settings import EvalSettings
from lumebench.progress import log


def evaluate_model(model, tokenizer, bench: Benchmark, eval_cfg, out_dir: Path) -> dict:
    """``evaluate`` of the evaluation engine (settings ``eval_cfg``: an
    :class:`~lumebench.eval.evaluate.EvalConfig`) on ``model`` in eval mode, its files in ``out_dir``."""
    from lumebench.eval.evaluate import evaluate

    with eval_mode(model):
        return evaluate(model, tokenizer, bench, eval_cfg, out_dir=out_dir)


class Evaluator:
    """Evaluates the model at a step, or reuses the curve's record of it; appends to ``curve.jsonl``.

    Under ``mmlu_at="ends"`` the evaluations between the ends leave MMLU out (``curve_cfg``).
    """

    def __init__(self, m, ctx: UnlearnContext, tokenizer, bench_eval: Benchmark, ev: EvalSettings,
                 out_dir: Path, per_epoch: int, grad_accum: int, *, enabled: bool):
        self.m, self.ctx, self.tokenizer, self.bench_eval = m, ctx, tokenizer, bench_eval
        self.out_dir, self.per_epoch, self.grad_accum, self.enabled = out_dir, per_epoch, grad_accum, enabled
        self.eval_cfg = ev.engine_config()
        self.wants_mmlu = self.eval_cfg.mmlu is not None
        self.curve_cfg = (dataclasses.replace(self.eval_cfg, mmlu=None) if self.wants_mmlu and ev.mmlu_at == "ends"
                          else self.eval_cfg)
        self.curve = read_curve(out_dir)
        self.on_record = None

    def at(self, step: int, model_now, *, last: bool = True, again: bool = False,
           epoch: float | None = None) -> Evaluation | None:
        """Evaluate (or reuse the curve's record of) ``step``; without MMLU between the ends under
        ``mmlu_at="ends"``. ``again``: evaluate a step whose record lacks MMLU once more. ``epoch``:
        the step's epoch when it is not ``step`` optimizer steps of this run (a composite's merge)."""
        if not self.enabled:
            return None
        known = next((r for r in self.curve if r.step == step), None)
        if known is not None and not again:
            if self.on_record is not None:
                self.on_record(known)
            return known
        self.ctx.model = model_now
        with self.m.evaluated(self.ctx) as shown:  # the model as the method defines it (task vector: θ0 − α·Δ)
            results = evaluate_model(shown, self.tokenizer, self.bench_eval, self.eval_cfg if last else self.curve_cfg,
                                     self.out_dir / "eval" / f"step_{step:06d}")
        if epoch is None:
            epoch = round(step * self.grad_accum / self.per_epoch, 4)
        rec = Evaluation.of(step, epoch, results)
        with distributed.main_only() as writer:
            if writer:
                append_jsonl(self.out_dir / CURVE, rec.to_json())
        fault("unlearn:after-eval")
        self.curve[:] = [r for r in self.curve if r.step != step] + [rec]
        if self.on_record is not None:
            self.on_record(rec)
        log.info("evaluation at step %d (epoch %s): %s", step, rec.epoch,
                 ", ".join(f"{k} {v:.3f}" for k, v in rec.summary.items() if isinstance(v, float)))
        return rec
