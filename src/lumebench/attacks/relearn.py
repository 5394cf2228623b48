"""Relearning on a disjoint subset (``lume attack relearn``): fine-tune the unlearned model on part T
of the forget documents for k steps and measure what comes back of the rest, V.

Protocol (Deeb & Roger 2024, "Do unlearning methods remove information from language model
weights?", arXiv 2410.08827, §3: split the forget facts into T and V, fine-tune on T, measure V):

- **split**: the forget *documents* (a fact is a document with its sc and QA rows) are split per task
  into T (``train_fraction``, at least one document when the task has two or more) and V by a seeded
  shuffle (``seed``); the split is recorded in the result;
- **fine-tuning**: T's documents (full text + EOS) and QA pairs (question + " " + answer + EOS), as
  the target learned them (:mod:`lumebench.pipeline.target`), with the shared training loop
  (:func:`lumebench.train.loop.train`): AdamW at a constant ``lr`` (no warm-up, so the run to k = 5
  is the first 5 steps of the run to k = 20), ``batch_size`` examples a step; all weights
  (``full``) or a LoRA adapter of rank ``lora_r`` (``lora``, peft);
- **measure**: after 0 and each k in ``steps`` optimizer steps, V's knowledge (QA exact match) and
  regurgitation (sc ROUGE-L recall) with the evaluation engine; the **recovery ratio**
  ``(V_attacked − V_unlearned) / (V_target − V_unlearned)`` per measure (null with its reason when
  unlearning did not move the score);
- **controls**: the same fine-tuning of the target (before unlearning): V's scores under it show what
  fine-tuning on T does to facts the model knows; and, when given, of a model that never saw V
  (``retrain``: e.g. a target fine-tuned without V's documents): its gain on V is what fine-tuning on
  T *teaches* about V (learning), which a recovery must exceed to be called relearning.

Every fine-tuning curve is a :class:`~lumebench.step.Step` of its own (``<out>/<model>-<mode>/``:
``points.jsonl`` written as each k is measured, the loop's checkpoint until done), so an interrupted
attack resumes and the controls can be shared by several attacks (``lume run``).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lumebench.attacks.common import (MEASURES, AttackEval, identity, load, recovery, score_rows, step_key,
                                      write_result)
from lumebench.data.records import TASKS, Benchmark, Row
from lumebench.errors import LumeError
from lumebench.io import append_jsonl, iter_jsonl
from lumebench.step import Step
from lumebench.progress import log

MODES = ("full", "lora")
POINTS = "points.jsonl"


@dataclass
class RelearnConfig:
    """Settings of the relearning attack (all part of its key).

    steps: the k's: optimizer steps of fine-tuning on T after which V is measured (Deeb & Roger
        report recovery within a few steps; 1, 5, 20 spans "one step" to "a short fine-tuning").
    modes: ``full`` (every weight) and/or ``lora`` (a peft LoRA adapter; the weights stay frozen).
    lr: AdamW's constant learning rate; None = the unlearning lr of the model family (1e-3 for
        ``tiny``, the literature's 1e-5 for pretrained models; x10 under LoRA): the attacker takes
        steps of the size unlearning took. (The tiny family's fine-tuning lr, 5e-3, measured: 20 steps
        on T took the *target's* V knowledge from 1.00 to 0.00, so the control said nothing.)
    batch_size: examples per step (8, as the target's fine-tuning).
    lora_r: LoRA rank (alpha = 4 r, as lumebench's LoRA unlearning).
    train_fraction: the share of each task's forget documents in T (0.5).
    seed: the T/V split and the batch order.
    control: also fine-tune the target the same way (its V scores before and after).
    retrain_control: ``lume run`` only: also build a target without V's documents (the run's target
        settings; a second target build) and fine-tune it the same way: the learning control.
    on: ``forget`` (Deeb & Roger: T is a share of the forget documents, V the rest) or ``retain``
        (benign relearning, Hu et al. 2024, arXiv 2406.13356: T is a share ``train_fraction`` of
        each task's *retain* documents — related text the unlearning was told to keep, never a
        forget fact — and V is every forget document).
    """

    steps: list[int] = field(default_factory=lambda: [1, 5, 20])
    modes: list[str] = field(default_factory=lambda: ["full", "lora"])
    lr: float | None = None
    batch_size: int = 8
    lora_r: int = 8
    train_fraction: float = 0.5
    seed: int = 0
    control: bool = True
    retrain_control: bool = False
    on: str = "forget"

    def check(self) -> "RelearnConfig":
        from lumebench import checks

        if not self.steps or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.steps):
            raise LumeError("steps: expected a non-empty list of positive integers", field="steps")
        self.steps = sorted(set(self.steps))
        if not self.modes or any(m not in MODES for m in self.modes):
            raise LumeError(f"modes: expected a non-empty list of {' / '.join(MODES)}", field="modes")
        if self.lr is not None:
            checks.positive_float(self.lr, "lr")
        checks.positive_int(self.batch_size, "batch_size")
        checks.positive_int(self.lora_r, "lora_r")
        checks.finite_float(self.train_fraction, "train_fraction", minimum=0.01, maximum=0.99)
        checks.seed(self.seed, "seed")
        checks.choice(self.on, "on", ("forget", "retain"))
        return self


# ----------------------------------------------------------------------------------- the split

def split_documents(benchmark: Benchmark, fraction: float, seed: int) -> dict:
    """``{"T": [doc ids], "V": [doc ids], ...}``: the forget documents of each task split by a seeded
    shuffle; a task with one document puts it in V (measured, not trained on)."""
    T: list[str] = []
    V: list[str] = []
    for task in TASKS:
        docs = sorted({r.doc_id for r in benchmark.forget if r.task == task})
        random.Random(f"lumebench:relearn:{seed}:{task}").shuffle(docs)
        n_t = min(max(round(len(docs) * fraction), 1), len(docs) - 1) if len(docs) >= 2 else 0
        T += docs[:n_t]
        V += docs[n_t:]
    if not T or not V:
        raise LumeError("the forget set needs at least two documents of one task to split into T and V")
    return {"T": T, "V": V, "seed": seed, "train_fraction": fraction}


def benign_split(benchmark: Benchmark, fraction: float, seed: int) -> dict:
    """Benign relearning's split: T = a seeded share of each task's retain documents, V = every forget
    document (T never holds a forget fact)."""
    T: list[str] = []
    for task in TASKS:
        docs = sorted({r.doc_id for r in benchmark.retain if r.task == task})
        random.Random(f"lumebench:benign-relearn:{seed}:{task}").shuffle(docs)
        T += docs[:max(round(len(docs) * fraction), 1)] if docs else []
    V = sorted({r.doc_id for r in benchmark.forget})
    if not T or not V:
        raise LumeError("benign relearning needs retain documents (T) and forget documents (V)")
    return {"T": T, "V": V, "seed": seed, "train_fraction": fraction, "on": "retain"}


def train_examples(tokenizer, rows: list[Row], max_length: int = 1024) -> list[list[int]]:
    """T's documents and QA pairs, tokenised as the target's fine-tuning reads them."""
    from lumebench.train.batches import document_examples, qa_examples

    docs = [r.input + " " + r.output for r in rows if r.kind == "sc" and r.n == 1]
    return (document_examples(tokenizer, docs, max_length)
            + qa_examples(tokenizer, [(r.input, r.output) for r in rows if r.kind == "qa"], max_length))


class _StepBatches:
    """One optimizer step per loop "epoch": step s takes batch ``s mod n`` of pass ``s div n`` over
    the examples (each pass a seeded shuffle), so k steps are the same batches in every run."""

    def __init__(self, examples, batch_size: int, pad_id: int, seed: int):
        from lumebench.train.batches import EpochBatches

        self.inner = EpochBatches(examples, batch_size, pad_id, seed=seed)
        self.n = len(self.inner)

    def __call__(self, step: int) -> list:
        return [self.inner(step // self.n)[step % self.n]]


# ----------------------------------------------------------------------------------- one curve

def curve(model_spec, examples_of, v_rows: list[Row], cfg: RelearnConfig, mode: str, lr: float, folder: Path,
          ev: AttackEval, split_key: Any, steps: list[int] | None = None) -> list[dict]:
    """V's scores after 0 and each k of fine-tuning ``model_spec`` on T (``examples_of(tokenizer)``):
    a step in ``folder``; returns the points ``[{"k", "knowledge", "regurgitation"}]``."""
    steps = cfg.steps if steps is None else steps
    key = step_key("relearn-curve", model=identity(model_spec), split=split_key, mode=mode, lr=lr, steps=steps,
                   batch_size=cfg.batch_size, lora_r=cfg.lora_r if mode == "lora" else None, seed=cfg.seed,
                   eval=ev.to_dict())
    step = Step(folder, key, what=f"relearning curve ({mode})")
    rec = step.run(lambda: _curve(model_spec, examples_of, v_rows, cfg, mode, lr, folder, ev, steps),
                   on_other_key="redo")
    from lumebench.train.checkpoint import retire_checkpoint

    retire_checkpoint(folder / "train")
    return rec["result"]


def _curve(model_spec, examples_of, v_rows, cfg: RelearnConfig, mode: str, lr: float, folder: Path,
           ev: AttackEval, steps: list[int]) -> list[dict]:
    from lumebench.eval.batching import pad_id
    from lumebench.methods.params import ParamSelection, apply_selection
    from lumebench.provenance import seed_everything
    from lumebench.train.batches import causal_lm_loss
    from lumebench.train.config import TrainConfig
    from lumebench.train.loop import train

    known = {p["k"]: p for _, p in iter_jsonl(folder / POINTS)} if (folder / POINTS).is_file() else {}

    def measure(k: int, model) -> dict:
        if k in known:
            return known[k]
        s = score_rows(model, tokenizer, v_rows, ev, folder / "eval" / f"k{k:06d}").get("forget", {})
        point = {"k": k, **{m: s.get(m) for m in MEASURES}}
        append_jsonl(folder / POINTS, point)
        known[k] = point
        log.info("relearning (%s) after %d step(s): V knowledge %s, regurgitation %s", mode, k,
                 *(f"{point[m]:.3f}" if point[m] is not None else "—" for m in MEASURES))
        return point

    seed_everything(cfg.seed)
    model, tokenizer = load(model_spec)
    measure(0, model)
    if steps:
        if mode == "lora":
            model, _ = apply_selection(model, ParamSelection(lora=True, lora_r=cfg.lora_r, lora_alpha=4 * cfg.lora_r))
        else:
            for p in model.parameters():
                p.requires_grad_(True)
        examples = examples_of(tokenizer)
        batches = _StepBatches(examples, cfg.batch_size, pad_id(tokenizer), cfg.seed)
        tc = TrainConfig(lr=lr, epochs=max(steps), batch_size=cfg.batch_size, lr_schedule="constant",
                         warmup_ratio=0.0, seed=cfg.seed, mixed_precision="no", checkpoint_interval_s=60.0,
                         log_every=max(steps))
        wanted = set(steps)

        def on_epoch_end(epoch: int, step: int, model_) -> dict | None:
            return {"knowledge": measure(step, model_)["knowledge"]} if step in wanted else None

        res = train(model, causal_lm_loss, batches, tc, out_dir=folder / "train",
                    params=[p for p in model.parameters() if p.requires_grad], on_epoch_end=on_epoch_end,
                    unit="step")
        if res.diverged:
            log.warning("relearning (%s) %s; the points after it are missing", mode, res.status)
    return [known[k] for k in sorted(known)]


# ----------------------------------------------------------------------------------- the attack

def relearn(unlearned, target, benchmark: Benchmark, out, cfg: RelearnConfig | None = None,
            ev: AttackEval | None = None, *, retrain=None, controls_dir: Path | None = None,
            lr_of: Callable[[Any, str], float] | None = None) -> dict:
    """The relearning attack on ``unlearned`` (model spec or ``(model, tokenizer)``), the target it was
    unlearned from, into ``out`` (``relearn.json``); ``retrain``: a model that never saw V (optional
    control); ``controls_dir``: where the target's (and retrain's) curves go (default ``out``; ``lume
    run`` shares them between methods); ``lr_of(target, mode)``: the lr when ``cfg.lr`` is None (the
    commands pass :func:`lumebench.pipeline.unlearn_config.unlearning_lr`, the step unlearning took).
    Returns the result."""
    cfg = (cfg or RelearnConfig()).check()
    ev = ev or AttackEval()
    out = Path(out)
    benign = cfg.on == "retain"
    split = (benign_split if benign else split_documents)(benchmark, cfg.train_fraction, cfg.seed)
    t_docs, v_docs = set(split["T"]), set(split["V"])
    t_rows = [r for r in (benchmark.retain if benign else benchmark.forget) if r.doc_id in t_docs]
    v_rows = [r for r in benchmark.forget if r.doc_id in v_docs]
    if cfg.lr is None and lr_of is None:
        raise LumeError("relearning needs a learning rate: set lr (or pass lr_of)", field="lr")
    lrs = {m: cfg.lr if cfg.lr is not None else lr_of(target, m) for m in cfg.modes}
    split_key = {"T": sorted(split["T"]), "V": sorted(split["V"]), "data": benchmark.fingerprint()}
    key = step_key("relearn", unlearned=identity(unlearned), target=identity(target),
                   retrain=None if retrain is None else identity(retrain), config=dataclasses.asdict(cfg), lr=lrs,
                   split=split_key, eval=ev.to_dict())
    controls = Path(controls_dir) if controls_dir is not None else out

    def examples_of(tokenizer):
        return train_examples(tokenizer, t_rows)

    def compute() -> dict:
        modes: dict[str, dict] = {}
        v_target: dict = {}
        for mode in cfg.modes:
            lr = lrs[mode]
            tgt = curve(target, examples_of, v_rows, cfg, mode, lr, controls / f"target-{mode}", ev, split_key,
                        steps=cfg.steps if cfg.control else [])
            unl = curve(unlearned, examples_of, v_rows, cfg, mode, lr, out / f"unlearned-{mode}", ev, split_key)
            base, top = unl[0], tgt[0]
            v_target = v_target or {m: top[m] for m in MEASURES}
            entry = {"points": [{**p, "recovery": {m: recovery(p[m], base[m], top[m]) for m in MEASURES}}
                                for p in unl],
                     "control_target": tgt if cfg.control else None}
            if retrain is not None:
                rt = curve(retrain, examples_of, v_rows, cfg, mode, lr, controls / f"retrain-{mode}", ev, split_key)
                entry["control_retrain"] = [{**p, "gain": {m: _gain(p[m], rt[0][m], top[m], base[m]) for m in MEASURES}}
                                            for p in rt]
            modes[mode] = entry
        first = modes[cfg.modes[0]]["points"][0]
        protocol = ("benign relearning, Hu et al. 2024 (arXiv 2406.13356): fine-tune on retain documents (T), "
                    "measure every forget document (V)" if benign else
                    "Deeb & Roger 2024 (arXiv 2410.08827): fine-tune on T, measure V")
        result = {"attack": "relearn", "protocol": protocol,
                  "split": {**split, "n_T_rows": len(t_rows), "n_V_rows": len(v_rows)},
                  "config": dataclasses.asdict(cfg), "lr": lrs, "eval": ev.to_dict(), "v_target": v_target,
                  "v_unlearned": {m: first[m] for m in MEASURES}, "modes": modes}
        write_result(out, "relearn", result)
        return result

    return Step(out, key, what="relearning attack").run(compute)["result"]


def _gain(now, start, target, unlearned) -> dict:
    """A control's gain on V in units of what unlearning removed: ``(now − start) / (target − unlearned)``
    (the recovery ratio's scale, so the two can be compared)."""
    if start is None or target is None or unlearned is None:
        return recovery(None, None, None)
    return recovery(now, start, start + (target - unlearned))


def recovery_at(result: dict, k: int | None = None, mode: str = "full", measure: str = "knowledge") -> float | None:
    """The recovery ratio after ``k`` steps (default: the middle k) of ``mode``, from a result."""
    entry = (result.get("modes") or {}).get(mode)
    if not entry:
        return None
    pts = [p for p in entry["points"] if p["k"] > 0]
    if not pts:
        return None
    p = next((p for p in pts if p["k"] == k), None) if k is not None else pts[len(pts) // 2]
    return None if p is None else p["recovery"][measure]["value"]
