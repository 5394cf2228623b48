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
- Evaluation: :func:`lumebench.eval.evaluate.evaluate` before training (epoch 0) and after every
  epoch, or every ``eval_every`` optimizer steps, on the whole benchmark or a fixed subset of
  ``eval_subset`` documents per split; each result is appended to ``curve.jsonl`` as soon as it
  exists and is never recomputed on a rerun.
- Output ``out_dir/``: ``curve.jsonl``, ``unlearn.json`` (method, hyperparameters, seed, versions, data
  fingerprint, per-epoch scores, status), ``model/`` (safetensors + tokenizer) or ``adapter/`` (LoRA),
  ``eval/step_<N>/`` (the evaluation engine's files), ``train/`` (the loop's checkpoint and log),
  ``reference_nll_forget.safetensors`` (NPO's cached reference).
- Rerunning the same call resumes; if ``unlearn.json`` already records a finished run with the same
  configuration fingerprint, it is returned without loading anything.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lumebench import checks, distributed
from lumebench.data.records import Benchmark, Row
from lumebench.errors import LumeError
from lumebench.faults import fault
from lumebench.io import append_jsonl, atomic_write_json, iter_jsonl, read_json
from lumebench.methods.base import Example, Method, UnlearnContext, collate, hparam_fields
from lumebench.methods.params import ParamSelection, apply_selection, num_layers
from lumebench.progress import log
from lumebench.provenance import fingerprint, run_meta, seed_everything
from lumebench.registry import METHODS

CURVE = "curve.jsonl"
RESULT = "unlearn.json"


@dataclass
class UnlearnConfig:
    """Trainer settings (method hyperparameters live in each method's ``Hparams``).

    Literature defaults (TOFU code base, used by the LUME baselines and most SemEval entries):
    lr 1e-5 with AdamW for full fine-tuning, 10 epochs, effective batch 32, 1 epoch of linear warm-up
    out of 10 (warmup_ratio 0.1) then linear decay, weight decay 0.01. Presets below adapt them to a
    model family; anything given explicitly (``overrides``, ``--set``) wins.
    """

    lr: float = 1e-5
    epochs: int = 10
    batch_size: int = 32            # forget examples per step (the retain batch has as many)
    retain_batch_size: int | None = None  # None = batch_size
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    lr_schedule: str = "linear"
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "auto"
    explode_grad_norm: float = 1e4  # divergence guard (pre-clipping gradient norm)
    max_steps: int | None = None
    seed: int = 0
    max_length: int = 1024          # prompt is cut from the left so that the target always fits
    loss_on: str = "target"         # "target": the row's output tokens; "all": prompt too
    eval_every: str | int = "epoch"  # "epoch" or a number of optimizer steps
    eval_subset: int | None = None  # evaluate on this many documents per split (fixed, seeded); None = all
    preset: str = "auto"            # "auto" (tiny targets -> "tiny"), "tiny", "literature"
    # which weights are trained (see lumebench.methods.params)
    layers: str | None = None
    params: str | None = None
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 64
    lora_dropout: float = 0.0
    # several processes (torchrun / accelerate launch): "auto" = DDP, "fsdp" = FSDP2 (see TrainConfig)
    distributed: str = "auto"
    log_with: str | None = None     # Accelerate trackers for losses, lr and evaluations (None = off)

    def selection(self) -> ParamSelection:
        return ParamSelection(layers=self.layers, pattern=self.params, lora=self.lora, lora_r=self.lora_r,
                              lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout)

    def to_dict(self) -> dict:
        return asdict(self)


#: Per-model-family settings, applied before the user's overrides.
#: tiny (the few-million-parameter target of lumebench.models.tiny, memorised with lr ~3e-3):
#: at lr 1e-5 nothing moves in 10 epochs, so lr 1e-3 (a third of its memorisation lr, the same
#: ratio of forget-lr to fine-tune-lr 1e-5/3e-5 as the 7B setting would give), batch 8 so that a
#: ~50-row forget set still gives several steps per epoch, no weight decay (it would only add noise
#: at this lr), 10 epochs. Measured: GA drives forget regurgitation to ~0 within these settings.
PRESETS: dict[str, dict[str, Any]] = {
    "literature": {},
    "tiny": {"lr": 1e-3, "batch_size": 8, "weight_decay": 0.0, "epochs": 10},
}
#: LoRA trains a few parameters from zero: the SemEval LoRA entries used lr 1e-4 (10x full FT)
LORA_LR_FACTOR = 10.0

TRAIN_KEYS = {f.name for f in dataclasses.fields(UnlearnConfig)}


# ----------------------------------------------------------------------------- config resolution

def parse_value(text: str) -> Any:
    """``--set`` values: int, float, bool (true/false), none, else the string."""
    low = text.strip().lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def split_overrides(method_name: str, overrides: dict[str, Any]) -> tuple[dict, dict]:
    """Separate method hyperparameters from trainer settings; unknown key -> one-line error."""
    cls = METHODS.get(method_name)
    hp_keys = hparam_fields(cls)
    hp, tr = {}, {}
    for k, v in (overrides or {}).items():
        if k in hp_keys:
            hp[k] = v
        elif k in TRAIN_KEYS:
            tr[k] = v
        else:
            listed = ", ".join(f"{n}={d}" for n, d in hp_keys.items()) or "(none)"
            raise LumeError(f"unknown setting for method '{method_name}'; its hyperparameters: "
                            f"{listed}; trainer settings: {', '.join(sorted(TRAIN_KEYS))}", field=k)
    return hp, tr


def _dropout(v, k):
    x = checks.finite_float(v, k, minimum=0.0)
    if x >= 1.0:
        raise LumeError(f"must be >= 0 and < 1, got {x:g}", field=k)
    return x


def _layers(v, k):
    from lumebench.methods.params import parse_layers

    try:
        parse_layers(v)
    except LumeError as e:
        raise LumeError(e.message.removeprefix(f"--layers {v!r}: "), field=k) from None
    return v


#: Ranges of the trainer settings and of the hyperparameter names methods share, checked (with the
#: types of the dataclass fields) where a value enters: ``--set``, a flag, a run config's overrides.
RANGES: dict[str, Any] = {
    **checks.TRAINING_RANGES,
    "retain_batch_size": checks.positive_int, "eval_subset": checks.positive_int,
    "loss_on": lambda v, k: checks.choice(v, k, ("target", "all")),
    "preset": lambda v, k: checks.choice(v, k, ("auto", *PRESETS)),
    "layers": _layers, "params": checks.regex,
    "lora_r": checks.positive_int, "lora_alpha": checks.positive_int, "lora_dropout": _dropout,
    # method hyperparameters
    "beta": checks.positive_float, "alpha": lambda v, k: checks.finite_float(v, k, minimum=0.0),
    "layer": lambda v, k: checks.integer(v, k, minimum=0),
}


def _coerce(cls, values: dict) -> dict:
    """Cast override values to the field's default type (an int given for a float field, ...)."""
    out = {}
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for k, v in values.items():
        d = defaults.get(k)
        if isinstance(d, bool) or v is None or d is None or isinstance(d, str):
            out[k] = v
        elif isinstance(d, float) and isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
        elif isinstance(d, int) and isinstance(v, float) and v.is_integer():
            out[k] = int(v)
        else:
            out[k] = v
    return out


def resolve_config(method_name: str, overrides: dict, *, family: str = "literature"
                   ) -> tuple[Method, UnlearnConfig]:
    hp_over, tr_over = split_overrides(method_name, overrides)
    cls = METHODS.get(method_name)
    hp_over = checks.check_fields(cls.Hparams, hp_over, RANGES)
    tr_over = checks.check_fields(UnlearnConfig, tr_over, RANGES)
    preset = tr_over.get("preset", "auto")
    if preset == "auto":
        preset = family
    if preset not in PRESETS:
        raise LumeError(f"unknown preset '{preset}'; known: {', '.join(PRESETS)}")
    values = {**PRESETS[preset], "preset": preset}
    if preset == "literature":
        values.update(cls.trainer_defaults)
    hp_preset, tr_preset = split_overrides(method_name, cls.preset_defaults.get(preset, {}))
    values.update(tr_preset)
    values.update(cls.recipe)  # what defines the method (LoRA, its rank, loss_on, ...), every preset
    lr_given = "lr" in tr_over or "lr" in tr_preset or (preset == "literature" and "lr" in cls.trainer_defaults)
    if tr_over.get("lora", values.get("lora")) and not lr_given:
        values["lr"] = values.get("lr", UnlearnConfig.lr) * LORA_LR_FACTOR
    values.update(tr_over)
    values["preset"] = preset
    cfg = UnlearnConfig(**_coerce(UnlearnConfig, values))
    if cfg.loss_on not in ("target", "all"):
        raise LumeError(f"loss_on must be 'target' or 'all', got {cfg.loss_on!r}")
    if not (cfg.eval_every == "epoch" or (isinstance(cfg.eval_every, int) and cfg.eval_every > 0)):
        raise LumeError(f"eval_every must be 'epoch' or a positive number of steps, got {cfg.eval_every!r}")
    method = cls(cls.Hparams(**_coerce(cls.Hparams, {**hp_preset, **hp_over})))
    return method, cfg


# ----------------------------------------------------------------------------- data

def tokenize_rows(rows: list[Row], tokenizer, *, max_length: int = 1024, loss_on: str = "target"
                  ) -> list[Example]:
    """One :class:`Example` per row: ``tokenizer(input)`` + ``" " + output`` + EOS."""
    out = []
    eos = tokenizer.eos_token_id
    for i, r in enumerate(rows):
        prompt = list(tokenizer(r.input)["input_ids"])
        target = list(tokenizer(" " + r.output, add_special_tokens=False)["input_ids"]) + [eos]
        target = target[:max_length - 1]
        prompt = prompt[-(max_length - len(target)):]
        n_target = len(target) if loss_on == "target" else len(prompt) + len(target) - 1
        out.append(Example(tuple(prompt + target), n_target, i, n_prompt=len(prompt)))
    return out


@dataclass
class PairedBatches:
    """``self(chunk) -> [{"forget": batch, "retain": batch}, ...]``, deterministic from (seed, step).

    Global micro-batch ``k`` is forget batch ``k mod n_f`` of epoch ``k // n_f`` paired with the
    ``k``-th retain batch of the retain stream. The loop's "epochs" are chunks of ``chunk`` micro-batches
    (one real epoch, or ``eval_every`` optimizer steps) so that evaluation follows the chunking.
    """

    forget: list[Example]
    retain: list[Example]
    batch_size: int
    retain_batch_size: int
    pad_id: int
    seed: int
    total: int          # micro-batches in the whole run
    chunk: int          # micro-batches per loop "epoch"

    @property
    def per_epoch(self) -> int:
        return math.ceil(len(self.forget) / self.batch_size)

    def _forget_batch(self, k: int) -> list[Example]:
        epoch, j = divmod(k, self.per_epoch)
        idx = list(range(len(self.forget)))
        random.Random(f"lumebench-unlearn:{self.seed}:forget:{epoch}").shuffle(idx)
        return [self.forget[i] for i in idx[j * self.batch_size:(j + 1) * self.batch_size]]

    def _retain_batch(self, k: int) -> list[Example]:
        n, bs = len(self.retain), self.retain_batch_size
        out = []
        for pos in range(k * bs, (k + 1) * bs):
            cycle, j = divmod(pos, n)
            idx = list(range(n))
            random.Random(f"lumebench-unlearn:{self.seed}:retain:{cycle}").shuffle(idx)
            out.append(self.retain[idx[j]])
        return out

    def batch(self, k: int) -> dict:
        return {"forget": collate(self._forget_batch(k), self.pad_id),
                "retain": collate(self._retain_batch(k), self.pad_id)}

    def __call__(self, chunk_index: int) -> list[dict]:
        start = chunk_index * self.chunk
        return [self.batch(k) for k in range(start, min(start + self.chunk, self.total))]


@dataclass
class PlannedBatches:
    """A method's own micro-batch order (:meth:`Method.schedule`) cut into the loop's chunks."""

    plan: Any
    total: int
    chunk: int

    def __call__(self, chunk_index: int) -> list[dict]:
        start = chunk_index * self.chunk
        return [self.plan.batch(k) for k in range(start, min(start + self.chunk, self.total))]


def eval_benchmark(benchmark: Benchmark, n_docs: int | None, seed: int) -> Benchmark:
    """The whole benchmark, or a fixed subset of ``n_docs`` documents per split, spread over the tasks
    round-robin (every task keeps documents so that the 12-number harmonic mean stays defined)."""
    if not n_docs:
        return benchmark
    keep: list[str] = []
    for split in ("forget", "retain"):
        by_task: dict[str, list[str]] = {}
        for r in benchmark.split(split):
            lst = by_task.setdefault(r.task, [])
            if r.doc_id not in lst:
                lst.append(r.doc_id)
        queues = []
        for task in sorted(by_task):
            ids = sorted(by_task[task])
            random.Random(f"lumebench-eval-subset:{seed}:{split}:{task}").shuffle(ids)
            queues.append(ids)
        chosen: list[str] = []
        while len(chosen) < n_docs and any(queues):
            for q in queues:
                if q and len(chosen) < n_docs:
                    chosen.append(q.pop(0))
        keep += chosen
    return benchmark.subset(keep)


# ----------------------------------------------------------------------------- evaluation records

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
    path = out_dir / CURVE
    if not path.exists():
        return []
    curve = []
    for line, rec in iter_jsonl(path, tolerate_truncated_tail=True):
        if isinstance(rec.get("step"), bool) or not isinstance(rec.get("step"), int):
            raise LumeError(f"expected a whole number of steps, got {rec.get('step')!r}", path=str(path),
                            line=line, field="step")
        curve.append(rec)
    return curve


# ----------------------------------------------------------------------------- the trainer

def _target_identity(target) -> tuple[Any, str]:
    """(what to record about the target, a family name for presets)."""
    if isinstance(target, (tuple, list)):
        model = target[0]
        import hashlib
        h = hashlib.sha256()
        for name, t in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
        n = sum(p.numel() for p in model.parameters())
        return {"in_memory": h.hexdigest()[:16], "parameters": n}, ("tiny" if n < 50_000_000 else "literature")
    spec = str(target)
    if Path(spec).exists():
        spec = str(Path(spec).resolve())  # the same run from another working directory
    ident: dict[str, Any] = {"spec": spec}
    meta_path = Path(spec) / "target.json"
    family = "tiny" if spec == "tiny" else "literature"
    if meta_path.is_file():
        meta = read_json(meta_path, expect=dict)
        ident["target.json"] = fingerprint(meta)
        base = str(meta.get("base", meta.get("base_model", "")))
        if base == "tiny" or "tiny" in str(meta.get("model", "")):
            family = "tiny"
    return ident, family


def _load_target(target):
    if isinstance(target, (tuple, list)):
        return target[0], target[1]
    from lumebench.models import load_model
    with checks.naming("target"):
        return load_model(str(target))


def _evaluate(model, tokenizer, bench: Benchmark, eval_cfg, out_dir: Path) -> dict:
    from lumebench.eval.evaluate import EvalConfig, evaluate

    was_training = model.training
    model.eval()
    try:
        return evaluate(model, tokenizer, bench, eval_cfg if eval_cfg is not None else EvalConfig(),
                        out_dir=out_dir)
    finally:
        model.train(was_training)


def _eval_cfg_dict(eval_cfg) -> Any:
    if eval_cfg is None:
        return None
    if dataclasses.is_dataclass(eval_cfg):
        return {k: (v if isinstance(v, (int, float, str, bool, type(None), list, dict)) else str(v))
                for k, v in asdict(eval_cfg).items()}
    return str(eval_cfg)


def unlearn(target, benchmark: Benchmark, method: str, out_dir, *, overrides: dict | None = None,
            lora: bool = False, eval_cfg=None, eval_subset: int | None = None,
            eval_every: str | int = "epoch", evaluate: bool = True) -> dict:
    """Run ``method`` on ``target`` (a model spec/directory, or a ``(model, tokenizer)`` pair, which is
    trained in place) and return the content of ``unlearn.json``.

    ``overrides``: method hyperparameters and/or :class:`UnlearnConfig` fields by name. ``lora``,
    ``eval_subset`` and ``eval_every`` are shortcuts for the same-named settings. ``evaluate=False``
    skips every evaluation (training only; used by speed benchmarks).
    """
    out_dir = Path(out_dir)
    overrides = dict(overrides or {})
    if lora:
        overrides["lora"] = True
    if eval_subset is not None:
        overrides.setdefault("eval_subset", eval_subset)
    if eval_every != "epoch":
        overrides.setdefault("eval_every", eval_every)
    ident, family = _target_identity(target)
    m, cfg = resolve_config(method, overrides, family=family)
    if getattr(m, "composite", False):  # e.g. zjuklab: several normal runs, then a merge
        return m.unlearn_composite(target, benchmark, method, out_dir, overrides=overrides,
                                   eval_cfg=eval_cfg, evaluate=evaluate)
    record_cfg = {"method": method, "hyperparameters": asdict(m.hp), "config": cfg.to_dict(),
                  "target": ident, "data": benchmark.fingerprint(), "eval": _eval_cfg_dict(eval_cfg),
                  "evaluate": evaluate}
    cfg_fp = fingerprint(record_cfg)
    result_path = out_dir / RESULT
    distributed.init()
    prev: dict = {}
    if result_path.exists():
        prev = read_json(result_path, expect=dict)
        if prev.get("config_fingerprint") == cfg_fp and prev.get("status", "running") != "running":
            log.info("%s already finished (%s); returning its result", out_dir, prev["status"])
            return prev
        if prev.get("config_fingerprint") not in (None, cfg_fp):
            raise LumeError("this output directory holds a run with another configuration; "
                            "use another --out or delete it", path=str(result_path))
    out_dir.mkdir(parents=True, exist_ok=True)

    seed_everything(cfg.seed)
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

    forget = tokenize_rows(benchmark.forget, tokenizer, max_length=cfg.max_length, loss_on=cfg.loss_on)
    retain = tokenize_rows(benchmark.retain, tokenizer, max_length=cfg.max_length, loss_on=cfg.loss_on)
    if not forget or not retain:
        raise LumeError("unlearning needs a non-empty forget set and retain set")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ctx = UnlearnContext(model=model, forget=forget, retain=retain, pad_id=pad_id, lora=cfg.lora,
                         run_dir=out_dir, batch_size=cfg.batch_size, target_digest=target_digest,
                         tokenizer=tokenizer)

    rbs = cfg.retain_batch_size or cfg.batch_size
    plan = m.schedule(forget, retain, batch_size=cfg.batch_size, retain_batch_size=rbs, pad_id=pad_id,
                      seed=cfg.seed, epochs=cfg.epochs)
    per_epoch = plan.per_epoch if plan is not None else math.ceil(len(forget) / cfg.batch_size)
    total = plan.total if plan is not None else per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps * cfg.grad_accum)
    chunk = per_epoch if cfg.eval_every == "epoch" else cfg.eval_every * cfg.grad_accum
    batches = (PairedBatches(forget, retain, cfg.batch_size, rbs, pad_id, cfg.seed, total, chunk)
               if plan is None else PlannedBatches(plan, total, chunk))
    n_chunks = math.ceil(total / chunk)

    meta = run_meta(cfg.seed, record_cfg, benchmark.fingerprint())
    meta.pop("config")  # recorded below, field by field
    state: dict[str, Any] = {"method": method, "help": METHODS.entry(method).help, "target": ident,
                             "target_digest": target_digest, "processes": distributed.world(),
                             # examples per optimizer step, whatever the number of processes
                             "effective_batch": {"forget": cfg.batch_size * cfg.grad_accum,
                                                 "retain": rbs * cfg.grad_accum},
                             "hyperparameters": asdict(m.hp), "config": cfg.to_dict(),
                             "trainable": cfg.selection().describe(), "n_trainable_tensors": len(trainable),
                             "n_forget_examples": len(forget), "n_retain_examples": len(retain),
                             "steps_per_epoch": math.ceil(per_epoch / cfg.grad_accum),
                             "eval_config": record_cfg["eval"], "config_fingerprint": cfg_fp,
                             "status": "running", **meta}
    with distributed.main_only() as writer:
        if writer:
            atomic_write_json(result_path, state)

    bench_eval = eval_benchmark(benchmark, cfg.eval_subset, cfg.seed)
    curve = read_curve(out_dir)
    done_steps = {rec["step"] for rec in curve}

    def evaluate_at(step: int, model_now) -> dict | None:
        if not evaluate:
            return None
        if step in done_steps:
            rec = next(r for r in curve if r["step"] == step)
            return rec
        ctx.model = model_now
        with m.evaluated(ctx) as shown:  # the model as the method defines it (task vector: θ0 − α·Δ)
            results = _evaluate(shown, tokenizer, bench_eval, eval_cfg, out_dir / "eval" / f"step_{step:06d}")
        rec = {"epoch": round(step * cfg.grad_accum / per_epoch, 4), "step": step, **summarize(results),
               "results": {k: v for k, v in results.items() if k != "meta"}}
        with distributed.main_only() as writer:
            if writer:
                append_jsonl(out_dir / CURVE, rec)
        fault("unlearn:after-eval")
        curve.append(rec)
        done_steps.add(step)
        log.info("evaluation at step %d (epoch %s): %s", step, rec["epoch"],
                 ", ".join(f"{k} {v:.3f}" for k, v in summarize(results).items() if isinstance(v, float)))
        return rec

    # reference quantities first (the model is still the one before unlearning)
    m.setup(ctx)
    evaluate_at(0, model)

    def loss_fn(model_, batch):
        ctx.model = model_
        loss, logs = m.loss(ctx, batch["forget"], batch["retain"])
        return loss, logs

    def on_epoch_end(chunk_index: int, step: int, model_) -> dict | None:
        rec = evaluate_at(step, model_)
        return {k: rec[k] for k in ("forget_regurgitation", "retain_regurgitation", "final_score")
                if rec and isinstance(rec.get(k), (int, float))} or None

    from lumebench.train.loop import TrainConfig, is_sharded, save_trained, train

    tcfg = TrainConfig(lr=cfg.lr, epochs=n_chunks, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                       warmup_ratio=cfg.warmup_ratio, lr_schedule=cfg.lr_schedule,
                       weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
                       mixed_precision=cfg.mixed_precision, seed=cfg.seed,
                       explode_grad_norm=cfg.explode_grad_norm, max_steps=cfg.max_steps,
                       distributed=cfg.distributed, log_with=cfg.log_with)
    res = train(model, loss_fn, batches, tcfg, out_dir=out_dir / "train",
                params=[p for p in model.parameters() if p.requires_grad], on_epoch_end=on_epoch_end)
    ctx.model = model
    m.finalize(ctx)

    from lumebench.models.checkpoint import save_checkpoint

    # written by the main process; an FSDP2 model is gathered into one checkpoint first
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
    # after a divergence the loop restored the state at the end of the last good epoch
    good_step = res.steps if not res.diverged else (res.epoch_logs[-1]["step"] if res.epoch_logs else 0)
    status = res.status if not res.status.startswith("completed") else "finished"
    state.update({
        "status": status,
        "steps": res.steps,
        "epochs": round(res.steps * cfg.grad_accum / per_epoch, 4),
        "tokens_per_s": res.tokens_per_s,
        "train_wall_s": res.wall_s,
        "final_model": str(final_dir),
        "curve": [{k: v for k, v in r.items() if k != "results"} for r in sorted(curve, key=lambda r: r["step"])],
        "last_good_step": good_step,
        "final": next(({k: v for k, v in r.items() if k != "results"}
                       for r in curve if r["step"] == good_step), None),
    })
    with distributed.main_only() as writer:
        if writer:
            atomic_write_json(result_path, state)
    log.info("%s %s after %d steps; results in %s", method, status, res.steps, out_dir)
    return state
