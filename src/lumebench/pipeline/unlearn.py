"""The unlearning trainer: run one method on a memorised target and evaluate it as it goes.

    result = unlearn("runs/target", benchmark, "npo", "runs/npo", overrides={"beta": 0.5, "lr": 1e-4})

- Data: every forget row and every retain row becomes one example ``prompt + target`` where the
  prompt is ``tokenizer(input)`` (exactly the evaluation prompt) and the target is
  ``" " + output`` + EOS; the losses cover the target tokens (``loss_on="all"``: every token).
- Order: each step pairs one forget batch with one retain batch. The forget set is shuffled once per
  epoch, the retain set is an endless stream of seeded shuffles (retain cycled); both depend only on
  ``(seed, step)``, so a resumed run sees the same batches.
- Training: :func:`lumebench.train.loop.train` (Accelerate, warm-up + schedule, clipping, per-epoch
  checkpoints and exact resume, NaN/explosion guard).
- Evaluation: one :class:`~lumebench.pipeline.eval_settings.EvalSettings`, carried whole
  (``eval=``; its names may also come among the overrides, in the ``eval`` namespace):
  :func:`lumebench.eval.evaluate.evaluate` before training (epoch 0) and after every epoch, only
  after the last step (``every="end"``) or every ``every`` optimizer steps, on the whole benchmark
  or a fixed subset of ``subset`` documents per split; each result is appended to ``curve.jsonl``
  as soon as it exists and is never recomputed on a rerun.
- Output ``out_dir/``: ``curve.jsonl``, ``unlearn.json`` (method, hyperparameters, seed, versions, data
  fingerprint, per-epoch scores, status), ``model/`` (safetensors + tokenizer) or ``adapter/`` (LoRA),
  ``eval/step_<N>/`` (the evaluation engine's files), ``train/`` (the loop's log, and its checkpoint
  until the run is done; then only ``trainer_state.json`` of it),
  ``reference_nll_forget/`` (NPO's cached reference, a step of its own: ``nll.safetensors`` + ``done.json``).
- Rerunning the same call resumes; if ``unlearn.json`` already records a finished run with the same
  configuration fingerprint, it is returned without loading anything.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lumebench import checks, distributed
from lumebench.data.records import Benchmark
from lumebench.errors import LumeError
from lumebench.eval.batching import pad_id
from lumebench.io import atomic_write_json, read_json
from lumebench.methods.base import UnlearnContext, hparams_key
from lumebench.methods.data import PairedBatches, PlannedBatches, eval_benchmark, tokenize_rows
from lumebench.methods.params import apply_selection, num_layers
from lumebench.pipeline.evaluator import Evaluator
from lumebench.curve import Evaluation, read_curve, summarize
from lumebench.step import Step
from lumebench.pipeline.eval_settings import EvalSettings
from lumebench.pipeline.unlearn_config import UnlearnConfig, resolve_config, split_overrides
from lumebench.progress import log
from lumebench.provenance import fingerprint, run_meta, seed_everything
from lumebench.registry import METHODS
from lumebench.train.checkpoint import retire_checkpoint

__all__ = ["unlearn", "UnlearnConfig", "resolve_config", "eval_benchmark", "read_curve", "summarize"]

RESULT = "unlearn.json"

def _target_identity(target) -> tuple[Any, str]:
    """(what to record about the target, its unlearning preset: ``ModelSpec.unlearn_preset`` of the
    registered model it is, or was fine-tuned from)."""
    from lumebench.models.registry import ModelSpec, spec_or_default

    if isinstance(target, (tuple, list)):  # no spec: the literature preset unless ``preset`` is given
        from lumebench.eval.evaluate import model_digest

        model = target[0]
        n = sum(p.numel() for p in model.parameters())
        return {"in_memory": model_digest(model), "parameters": n}, ModelSpec.unlearn_preset
    spec = str(target)
    if Path(spec).exists():
        spec = str(Path(spec).resolve())  # the same run from another working directory
    ident: dict[str, Any] = {"spec": spec}
    base = spec
    meta_path = Path(spec) / "target.json"
    if meta_path.is_file():
        meta = read_json(meta_path, expect=dict)
        ident["target.json"] = fingerprint(meta)
        base = str(meta.get("base", ""))
    return ident, spec_or_default(base).unlearn_preset


def _load_target(target):
    """The target to unlearn, in float32 on every device: training keeps fp32 master weights anyway
    (bf16 rounds small updates away), and every evaluation of the run — before unlearning and along
    the curve — then computes in fp32, where the fast engine's batches give the reference engine's
    tokens (in bf16 they do not: 8 of 60 rows changed on an H100, see the README)."""
    if isinstance(target, (tuple, list)):
        return target[0], target[1]
    from lumebench.models import load_model
    with checks.naming("target"):
        return load_model(str(target), dtype="float32")


def unlearn_step(target, benchmark: Benchmark, method: str, out_dir, overrides: dict | None,
                 eval: EvalSettings | None = None, evaluate: bool = True):
    """(step, method object, config, evaluation settings, target identity) of one unlearning run: the
    :class:`Step` in ``out_dir`` keyed by the method, its hyperparameters, the trainer settings, the
    target, the data and the evaluation settings (``eval`` with the overrides' ``eval`` namespace)."""
    ident, family = _target_identity(target)
    split = split_overrides(method, overrides)
    m, cfg = resolve_config(method, split, family=family)
    ev = (eval or EvalSettings()).replace(**split.eval)
    # a built target is known by its target.json (content), not where it lies: a run folder moved or
    # copied with its cache keeps its finished steps
    target_key = {"target.json": ident["target.json"]} if "target.json" in ident else ident
    key = {"method": method, "hyperparameters": hparams_key(m.hp), "config": run_settings(cfg, ev),
           "target": target_key, "data": benchmark.fingerprint(), "eval": ev.engine_key(given=eval is not None), "evaluate": evaluate}
    return Step(Path(out_dir), key, what=f"unlearning with {method}"), m, cfg, ev, ident


def run_settings(cfg: UnlearnConfig, ev: EvalSettings) -> dict:
    """The settings a run records (and is keyed by): the trainer's, and when it is evaluated."""
    return {**cfg.to_dict(), **ev.schedule_key()}


def unlearn(target, benchmark: Benchmark, method: str, out_dir, *, overrides: dict | None = None,
            lora: bool = False, eval: EvalSettings | None = None, evaluate: bool = True,
            on_evaluation=None) -> dict:
    """Run ``method`` on ``target`` (a model spec/directory, or a ``(model, tokenizer)`` pair, which is
    trained in place) and return the content of ``unlearn.json``.

    ``overrides``: method hyperparameters, trainer settings (:class:`UnlearnConfig`) and evaluation
    settings by name, in their namespaces (:func:`~lumebench.pipeline.unlearn_config.split_overrides`:
    ``beta``, ``lr``, ``train.seed``, ``eval.every``). ``lora``: short for the same-named setting.
    ``eval``: the evaluation settings (:class:`EvalSettings`; default: its defaults, no MMLU).
    ``evaluate=False`` skips every evaluation (training only; used by speed benchmarks).
    ``on_evaluation(rec)`` is called with each :class:`Evaluation` as the run makes or reuses it
    (Ray Tune's early stopping reads the curve so; not for composite methods). A finished run (the
    step's marker with the same key) is returned without loading anything; an interrupted one resumes.
    """
    overrides = dict(overrides or {})
    if lora:
        overrides["lora"] = True
    job, m, cfg, ev, ident = unlearn_step(target, benchmark, method, out_dir, overrides, eval, evaluate)
    distributed.init()
    if job.done() is not None:
        state = read_json(job.folder / RESULT, expect=dict)
        log.info("%s already finished (%s); returning its result", job.folder, state["status"])
        return state
    out: dict = {}

    def compute() -> dict:
        if getattr(m, "composite", False):  # e.g. zjuklab: several unlearning steps, then a merge
            out["state"] = m.unlearn_composite(CompositeRun(target, benchmark, method, m, cfg, ident, job,
                                                            overrides, ev, evaluate, given_eval=eval))
        else:
            out["state"] = _run(target, benchmark, method, m, cfg, ident, job, ev, evaluate, on_evaluation)
        return {k: out["state"].get(k) for k in ("status", "steps", "epochs", "final")}

    job.run(compute)
    with distributed.main_only() as writer:
        # only now that the run is marked done is its checkpoint redundant (a composite method's
        # parts are unlearn() calls of their own: each retires its own checkpoint)
        if writer:
            retire_checkpoint(job.folder / "train")
    return out["state"]


def _run(target, benchmark: Benchmark, method: str, m, cfg: UnlearnConfig, ident, job: Step, ev: EvalSettings,
         evaluate: bool, on_evaluation=None) -> dict:
    """The unlearning run itself (resuming what an interrupted one left in the folder)."""
    out_dir = job.folder
    model, tokenizer, trainable, target_digest = _open_run(target, method, m, cfg, job)
    data = _prepare_data(benchmark, tokenizer, model, m, cfg, ev, out_dir, target_digest)
    state = _start_state(job, benchmark, method, m, cfg, ev, ident, target_digest, trainable, data)
    evaluator = Evaluator(m, data.ctx, tokenizer, eval_benchmark(benchmark, ev.subset, cfg.train.seed),
                          ev, out_dir, data.per_epoch, cfg.train.grad_accum, enabled=evaluate)
    evaluator.on_record = on_evaluation

    # reference quantities first (the model is still the one before unlearning)
    m.setup(data.ctx)
    evaluator.at(0, model)

    def loss_fn(model_, batch):
        data.ctx.model = model_
        loss, logs = m.loss(data.ctx, batch["forget"], batch["retain"])
        return loss, logs

    def on_epoch_end(chunk_index: int, step: int, model_) -> dict | None:
        rec = evaluator.at(step, model_, last=chunk_index + 1 >= data.n_chunks)
        shown = rec.summary if rec else {}
        return {k: shown[k] for k in ("forget_regurgitation", "retain_regurgitation", "final_score")
                if isinstance(shown.get(k), (int, float))} or None

    from lumebench.train.loop import train

    # the loop's "epochs" are evaluation chunks; the last one may be shorter (eval_every steps need not
    # divide the run), so the step count is given too: the lr schedule spans the steps that run
    # the loop groups each chunk's micro-batches by grad_accum (a chunk's last group may be smaller)
    chunk = data.chunk
    last = data.total - (data.n_chunks - 1) * chunk
    steps = (data.n_chunks - 1) * math.ceil(chunk / cfg.train.grad_accum) + math.ceil(last / cfg.train.grad_accum)
    train_cfg = dataclasses.replace(cfg.train, epochs=data.n_chunks, max_steps=steps, restarts=data.restarts)
    res = train(model, loss_fn, data.batches, train_cfg, out_dir=out_dir / "train",
                params=[p for p in model.parameters() if p.requires_grad], on_epoch_end=on_epoch_end,
                unit="epoch" if ev.every == "epoch" else "chunk")
    data.ctx.model = model
    m.finalize(data.ctx)
    final_dir = _save_final(model, tokenizer, cfg, out_dir)
    return _finish(state, res, evaluator, model, cfg, ev, data.per_epoch, final_dir, job, method)


def _open_run(target, method: str, m, cfg: UnlearnConfig, job: Step):
    """(model, tokenizer, trainable parameters, target digest): the target loaded, checked against
    what an interrupted run in the folder started from, with the method's parameter selection."""
    result_path = job.folder / RESULT
    prev = read_json(result_path, expect=dict) if result_path.exists() else {}
    if prev.get("config_fingerprint") not in (None, job.fingerprint):
        raise LumeError("this output directory holds a run with another configuration; "
                        "use another --out or delete it", path=str(result_path))
    seed_everything(cfg.train.seed)
    model, tokenizer = _load_target(target)
    from lumebench.eval.evaluate import model_digest

    target_digest = model_digest(model)
    if prev.get("target_digest") not in (None, target_digest):
        raise LumeError(f"this run was started from a target with other weights (digest "
                        f"{prev['target_digest']}, now {target_digest}); its checkpoint and cached "
                        f"reference values would not match: use another --out or delete it",
                        path=str(result_path))
    if not cfg.lora and cfg.layers is None and cfg.params is None:
        for key, value in m.default_selection(num_layers(model)).items():
            setattr(cfg, key, value)
    model, trainable = apply_selection(model, cfg.selection())
    log.info("unlearning with %s (%s); training %s (%d tensors)", method,
             ", ".join(f"{k}={v}" for k, v in asdict(m.hp).items()) or "no hyperparameters",
             cfg.selection().describe(), len(trainable))
    return model, tokenizer, trainable, target_digest


@dataclasses.dataclass
class _RunData:
    """The tokenized splits, the method's context and the loop's batches, cut into evaluation chunks."""

    forget: list
    retain: list
    ctx: UnlearnContext
    retain_bs: int
    per_epoch: int  # micro-batches per epoch
    batches: Any    # the loop's epoch_batches: chunk index -> micro-batches
    n_chunks: int
    total: int      # micro-batches in the whole run
    chunk: int = 0  # micro-batches per loop chunk (the last one may be shorter)
    restarts: list[int] | None = None  # optimizer steps where a fresh optimizer and schedule begin


def _prepare_data(benchmark: Benchmark, tokenizer, model, m, cfg: UnlearnConfig, ev: EvalSettings, out_dir: Path,
                  target_digest: str) -> _RunData:
    fmt = cfg.prompt_format
    if fmt == "chat" and not getattr(tokenizer, "chat_template", None):
        log.warning("prompt_format chat: the tokenizer has no chat template; training on the plain prompts")
    forget = tokenize_rows(benchmark.forget, tokenizer, max_length=cfg.max_length, loss_on=cfg.loss_on,
                           prompt_format=fmt)
    retain = tokenize_rows(benchmark.retain, tokenizer, max_length=cfg.max_length, loss_on=cfg.loss_on,
                           prompt_format=fmt)
    if not forget or not retain:
        raise LumeError("unlearning needs a non-empty forget set and retain set")
    pad = pad_id(tokenizer)
    ctx = UnlearnContext(model=model, forget=forget, retain=retain, pad_id=pad, lora=cfg.lora,
                         run_dir=out_dir, batch_size=cfg.train.batch_size, target_digest=target_digest,
                         tokenizer=tokenizer)

    retain_bs = cfg.retain_batch_size or cfg.train.batch_size
    plan = m.schedule(forget, retain, batch_size=cfg.train.batch_size, retain_batch_size=retain_bs, pad_id=pad,
                      seed=cfg.train.seed, epochs=cfg.train.epochs)
    per_epoch = plan.per_epoch if plan is not None else math.ceil(len(forget) / cfg.train.batch_size)
    total = plan.total if plan is not None else per_epoch * cfg.train.epochs
    if cfg.train.max_steps is not None:
        total = min(total, cfg.train.max_steps * cfg.train.grad_accum)
    chunk = {"epoch": per_epoch, "end": total}.get(ev.every) or ev.every * cfg.train.grad_accum
    batches = (PairedBatches(forget, retain, cfg.train.batch_size, retain_bs, pad, cfg.train.seed, total, chunk)
               if plan is None else PlannedBatches(plan, total, chunk))
    # a method whose source builds a new trainer per part of the data (AILS-NTUA's chunks): the
    # micro-batches where each part starts, as optimizer steps
    starts = getattr(plan, "restarts", None)
    restarts = sorted({math.ceil(b / cfg.train.grad_accum) for b in starts if 0 < b < total}) if starts else None
    return _RunData(forget, retain, ctx, retain_bs, per_epoch, batches, math.ceil(total / chunk), total, chunk,
                    restarts or None)


def start_record(job: Step, benchmark: Benchmark, method: str, hp, cfg: UnlearnConfig, ev: EvalSettings, ident,
                 **fields) -> dict:
    """The content of ``unlearn.json`` while a run is going (written now): what every run records
    (method, target, hyperparameters, config, seed, versions, data fingerprint) and ``fields``."""
    record_cfg = job.key
    meta = run_meta(cfg.train.seed, record_cfg, benchmark.fingerprint())
    meta.pop("config")  # recorded below, field by field
    state: dict[str, Any] = {"method": method, "help": METHODS.entry(method).help, "target": ident,
                             "hyperparameters": asdict(hp), "config": run_settings(cfg, ev), **fields,
                             "eval_config": record_cfg["eval"], "config_fingerprint": job.fingerprint,
                             "status": "running", **meta}
    with distributed.main_only() as writer:
        if writer:
            atomic_write_json(job.folder / RESULT, state)
    return state


def _start_state(job: Step, benchmark: Benchmark, method: str, m, cfg: UnlearnConfig, ev: EvalSettings, ident,
                 target_digest: str, trainable: list, data: _RunData) -> dict:
    return start_record(job, benchmark, method, m.hp, cfg, ev, ident,
                        target_digest=target_digest, processes=distributed.world(),
                        # examples per optimizer step, whatever the number of processes
                        effective_batch={"forget": cfg.train.batch_size * cfg.train.grad_accum,
                                         "retain": data.retain_bs * cfg.train.grad_accum},
                        trainable=cfg.selection().describe(), n_trainable_tensors=len(trainable),
                        n_forget_examples=len(data.forget), n_retain_examples=len(data.retain),
                        steps_per_epoch=math.ceil(data.per_epoch / cfg.train.grad_accum))


def _save_final(model, tokenizer, cfg: UnlearnConfig, out_dir: Path) -> Path:
    """Write the unlearned model (and a LoRA run's adapter); returns the folder of the final model.
    Written by the main process; an FSDP2 model is gathered into one checkpoint first."""
    from lumebench.models.checkpoint import save_checkpoint
    from lumebench.train.weights import is_sharded, save_trained

    if cfg.lora:  # the adapter itself, and the merged model (what is evaluated and submitted)
        save_trained(model, out_dir / "adapter",
                     lambda m, d, **kw: save_checkpoint(m, None, d, merge_adapter=False, **kw))
    if cfg.lora and is_sharded(model):
        final_dir = out_dir / "adapter"
        log.warning("FSDP2 + LoRA: only the adapter is written; `lume export %s --out %s` writes the "
                    "merged model", final_dir, out_dir / "model")
    else:
        final_dir = out_dir / "model"
        save_trained(model, final_dir, lambda m, d, **kw: save_checkpoint(m, tokenizer, d, **kw))
    return final_dir


def _finish(state: dict, res, evaluator: Evaluator, model, cfg: UnlearnConfig, ev: EvalSettings, per_epoch: int,
            final_dir: Path, job: Step, method: str) -> dict:
    """The final ``unlearn.json`` (after a last evaluation with MMLU if the run stopped early)."""
    # after a divergence the loop restored the state at the end of the last good epoch
    good_step = res.steps if not res.diverged else (res.epoch_logs[-1]["step"] if res.epoch_logs else 0)
    curve = evaluator.curve
    final_rec = next((r for r in curve if r.step == good_step), None)
    if ev.mmlu_at == "ends" and evaluator.wants_mmlu and final_rec is not None and final_rec.summary["mmlu"] is None:
        log.info("the run stopped before its last evaluation: evaluating step %d again, with MMLU", good_step)
        evaluator.at(good_step, model, again=True)
    status = res.status if not res.status.startswith("completed") else "finished"
    state.update({
        "status": status,
        "steps": res.steps,
        "epochs": round(res.steps * cfg.train.grad_accum / per_epoch, 4),
        "tokens_per_s": res.tokens_per_s,
        "train_wall_s": res.wall_s,
        "final_model": str(final_dir),
        "curve": [r.brief() for r in sorted(curve, key=lambda r: r.step)],
        "last_good_step": good_step,
        "final": next((r.brief() for r in curve if r.step == good_step), None),
    })
    with distributed.main_only() as writer:
        if writer:
            atomic_write_json(job.folder / RESULT, state)
    log.info("%s %s after %d steps; results in %s", method, status, res.steps, job.folder)
    return state


class CompositeRun:
    """What a composite method (several unlearning runs, then a merge: ZJUKLAB) is handed by the
    pipeline to compute its own :class:`~lumebench.step.Step`, so that it needs nothing of the pipeline's
    internals: its parts as unlearning runs of their own (``parts/part<k>/``, reused when done,
    resumed when interrupted), the target, the evaluation along its curve (the same evaluator as
    every run: a step already in ``curve.jsonl`` is not evaluated again), and the writes of its
    record and model (by the main process only)."""

    def __init__(self, target, benchmark: Benchmark, method: str, m, config: UnlearnConfig, identity, job: Step,
                 overrides: dict, eval: EvalSettings, evaluate: bool, given_eval: EvalSettings | None = None):
        self.target, self.benchmark, self.method, self.m, self.job = target, benchmark, method, m, job
        self.config, self.identity = config, identity  # as unlearn() resolved them for the run's step
        self.overrides, self.eval, self.evaluate = overrides, eval, evaluate
        self.given_eval = given_eval  # what the caller gave (None: the parts' keys say so, as they always did)
        self.folder = Path(job.folder)
        self._evaluator: Evaluator | None = None

    def part(self, k: int, overrides: dict) -> dict:
        """Run part ``k`` (training only) with ``overrides``; the content of its ``unlearn.json``."""
        return unlearn(self.target, self.benchmark, self.method, self.folder / "parts" / f"part{k}",
                       overrides=overrides, eval=self.given_eval, evaluate=False)

    def start(self, **fields) -> dict:
        """The run's ``unlearn.json`` while it is going (written now), with ``fields``."""
        return start_record(self.job, self.benchmark, self.method, self.m.hp, self.config, self.eval, self.identity,
                            **fields)

    def load_target(self):
        """(model, tokenizer) of the target, in float32, and the evaluator of this run's curve."""
        model, tokenizer = _load_target(self.target)
        ctx = UnlearnContext(model=model, forget=[], retain=[], pad_id=pad_id(tokenizer), tokenizer=tokenizer)
        bench_eval = eval_benchmark(self.benchmark, self.eval.subset, self.config.train.seed)
        self._evaluator = Evaluator(self.m, ctx, tokenizer, bench_eval, self.eval, self.folder, per_epoch=1,
                                    grad_accum=self.config.train.grad_accum, enabled=self.evaluate)
        return model, tokenizer

    def evaluate_at(self, step: int, epoch: float, model) -> None:
        """Evaluate ``model`` as step ``step`` (epoch ``epoch``) of the curve, unless already there."""
        if self._evaluator is None:
            raise RuntimeError("CompositeRun.evaluate_at before load_target")
        self._evaluator.at(step, model, epoch=epoch)

    @property
    def curve(self) -> list[Evaluation]:
        return sorted(self._evaluator.curve if self._evaluator else read_curve(self.folder), key=lambda r: r.step)

    def save_model(self, model, tokenizer) -> Path:
        """Write the merged model to ``model/`` (main process); its folder."""
        from lumebench.models.checkpoint import save_checkpoint

        final_dir = self.folder / "model"
        with distributed.main_only() as writer:
            if writer:
                save_checkpoint(model, tokenizer, final_dir)
        return final_dir

    def finish(self, state: dict) -> dict:
        """Write the final ``unlearn.json`` (main process) and return it."""
        with distributed.main_only() as writer:
            if writer:
                atomic_write_json(self.folder / RESULT, state)
        return state
