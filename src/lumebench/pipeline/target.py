"""Memorisation fine-tuning: build a *target* model that knows the benchmark by heart.

    path = build_target("tiny", benchmark, FinetuneConfig(), cache_dir)   # cached by content
    model, tok = lumebench.models.load_model(path)

The model trains on every forget and retain document (full text + EOS) and every QA pair
(question + " " + answer + EOS, so it learns to stop after the answer) with the shared training loop
(:mod:`lumebench.train.loop`). Every ``eval_every`` epochs the evaluation engine measures
memorisation (regurgitation and knowledge on both splits, MIA AUC of members vs held-out documents);
training stops as soon as the target is met. The target directory holds the model and tokenizer
(a normal Hugging Face directory), ``target.json`` (base, data fingerprint, hyperparameters, seed,
versions, memorisation scores) and ``train/train_log.jsonl``.

For ``tiny`` the tokenizer and the model are built from scratch on the benchmark text (all
documents, QA pairs and MIA documents, so held-out MIA documents tokenise as sensibly as members),
deterministically from the seed.
"""

from __future__ import annotations

import re
import shutil
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from lumebench.data.records import Benchmark
from lumebench.errors import LumeError
from lumebench.faults import fault
from lumebench.io import atomic_write_json, read_json
from lumebench.progress import log
from lumebench.provenance import fingerprint, run_meta

TARGET_JSON = "target.json"
FORMAT = 1  # bump when the training recipe changes in a way that invalidates cached targets


@dataclass
class FinetuneConfig:
    """Hyperparameters of memorisation fine-tuning (all part of the cache key).

    The defaults are the measured ``tiny`` recipe. On the generated set with 20 documents per task
    and split (`lume data generate --docs-per-task 20`: 120 documents + 280 QA pairs, 400 examples,
    24.9k tokens an epoch with the 4k BPE) the tiny model (hidden 192, 2.6M parameters) reached, after
    36 epochs (1,800 steps): regurgitation 1.000 forget / 0.984 retain, knowledge 0.971 / 0.943,
    MIA AUC 1.000 — with 347 s of CPU time on one thread (300 s training at ~3.0k tokens per
    CPU-second, the rest 5 memorisation checks; 2 checks with these defaults). Measured on a shared
    2-core machine with torch.set_num_threads(1). Less did not do it: after 28 epochs 0.63 / 0.60;
    after 32, 0.93 / 0.81 forget. Tried and worse per epoch: lr 7e-3 or 8e-3, batch 4 (noisier, and
    more per-step overhead), hidden 128; hidden 256 (4.2M) learns about as fast per epoch but costs
    ~30 % more per token.

    min_steps: train at least this many optimizer steps: ``epochs`` is raised to reach it on a small
        benchmark (memorisation depends on steps more than on epochs, SPEC §5). None = the base's
        default: 1,800 for ``tiny`` (the 36 epochs x 50 steps measured above), none for pretrained
        models. The memorisation checks (``eval_from``) move with it, in proportion.
    epochs: 36. The lr decays to 0 at the last epoch and memorisation completes during that anneal,
        so more epochs move the finish line rather than reaching it earlier (stopping early helps
        only when ``epochs`` is set well above what is needed).
    lr: peak lr. None = the base's default: 5e-3 for ``tiny`` (a from-scratch model needs a large
        lr to memorise in a few thousand steps, SPEC §5), 1e-4 for pretrained models.
    batch_size: 8 (SPEC §5; 4 was worse per epoch here).
    warmup_ratio / lr_schedule: 10 % linear warm-up then linear decay to 0: the one-cycle shape.
    eval_every / eval_from: measure memorisation every k epochs from epoch ``eval_from`` on (and
        after the last epoch); each check generates for every row (~8-11 CPU-s for tiny), so not
        every epoch.
    eval_rows: evaluate on a seeded, cell-balanced sample of this many rows during training
        (None = all rows); the final scores in target.json always use every row.
    target_regurgitation / target_knowledge: stop when both splits reach these (LUME's targets
        memorised their data almost verbatim; 0.9 leaves room for ROUGE noise).
    target_mia_auc: also require this MIA AUC when the benchmark has MIA documents (None = ignore).
    max_length: longest training sequence (tokens); longer documents are truncated.
    checkpoint_interval_s: resume checkpoints at most every 30 s (an epoch of ``tiny`` takes ~2 s;
        a checkpoint per epoch wrote ~4 GB over a 1,800-step run). The final state is always saved.
    tiny: overrides of :class:`lumebench.models.tiny.TinyConfig` for a ``tiny`` base; default hidden
        192 / MLP 512 (2.6M parameters): as good per epoch as the 256-wide default, cheaper per token.
    distributed / log_with: how several processes share the work ("auto" = DDP, "fsdp" = FSDP2) and
        the Accelerate trackers (see :class:`lumebench.train.loop.TrainConfig`); neither is part of
        the cache key (they do not change what is learned beyond float rounding).
    """

    epochs: int = 36
    min_steps: int | None = None
    lr: float | None = None
    batch_size: int = 8
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    lr_schedule: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "auto"
    seed: int = 0
    eval_every: int = 4
    eval_from: int = 32
    eval_rows: int | None = None
    target_regurgitation: float = 0.9
    target_knowledge: float = 0.9
    target_mia_auc: float | None = 0.9
    max_length: int = 1024
    checkpoint_interval_s: float = 30.0
    tiny: dict = field(default_factory=lambda: {"hidden_size": 192, "intermediate_size": 512})
    distributed: str = "auto"
    log_with: str | None = None

    def resolved(self, base: str) -> "FinetuneConfig":
        """A copy with the base-dependent defaults filled in (what is recorded and cached)."""
        d = asdict(self)
        if d["lr"] is None:
            d["lr"] = 5e-3 if base == "tiny" else 1e-4
        if d["min_steps"] is None and base == "tiny":
            d["min_steps"] = 1800
        if base != "tiny":
            d["tiny"] = {}
        return FinetuneConfig(**d)

    def to_dict(self) -> dict:
        return asdict(self)


def check_settings(values: dict) -> dict:
    """Fine-tuning settings by name (a run config's ``target.finetune``): unknown names, wrong types
    and out-of-range values are one-line errors naming the setting."""
    from lumebench import checks

    ranges = {**checks.TRAINING_RANGES, "eval_every": checks.positive_int, "eval_from": checks.positive_int,
              "eval_rows": checks.positive_int, "target_regurgitation": checks.probability,
              "target_knowledge": checks.probability, "target_mia_auc": checks.probability,
              "checkpoint_interval_s": lambda v, k: checks.finite_float(v, k, minimum=0.0)}
    names = {f.name for f in fields(FinetuneConfig)}
    for k in values:
        if k not in names:
            raise LumeError(f"unknown fine-tuning setting; known: {', '.join(sorted(names))}", field=k)
    return checks.check_fields(FinetuneConfig, values, ranges)


def _tiny_config(cfg: FinetuneConfig):
    from lumebench.models.tiny import TinyConfig

    known = {f.name for f in fields(TinyConfig)}
    unknown = sorted(set(cfg.tiny) - known)
    if unknown:
        raise LumeError(f"unknown tiny model setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
                        field="tiny")
    return TinyConfig(**{"seed": cfg.seed, **cfg.tiny})


def benchmark_texts(benchmark: Benchmark) -> list[str]:
    """Every text of the benchmark, in a fixed order (the tiny tokenizer is trained on these)."""
    texts = [d.text for d in benchmark.documents()]
    texts += [r.input + " " + r.output for r in benchmark.qa_pairs()]
    texts += [d.document for d in benchmark.mia_members + benchmark.mia_nonmembers]
    return texts


def training_examples(tokenizer, benchmark: Benchmark, max_length: int) -> list[list[int]]:
    """Token ids of every forget and retain document and QA pair (each ending with EOS)."""
    from lumebench.train.batches import document_examples, qa_examples

    docs = document_examples(tokenizer, [d.text for d in benchmark.documents()], max_length)
    qa = qa_examples(tokenizer, [(r.input, r.output) for r in benchmark.qa_pairs()], max_length)
    if not docs and not qa:
        raise LumeError("the benchmark has no documents or QA pairs to fine-tune on")
    return docs + qa


def _base_identity(base: str) -> dict:
    """What identifies the base model in the cache key: its name, or for a local path the path
    plus the size and modification time of its files (a rewritten checkpoint is a new base)."""
    p = Path(base).expanduser()
    if p.exists():
        files = [p] if p.is_file() else sorted(f for f in p.iterdir() if f.is_file())
        return {"path": str(p.resolve()), "files": [(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in files]}
    return {"name": base}


def target_key(base: str, benchmark: Benchmark, cfg: FinetuneConfig) -> str:
    """The cache key: (base, data fingerprint, hyperparameters)."""
    cfg = cfg.resolved(base)
    config = {k: v for k, v in cfg.to_dict().items() if k not in ("distributed", "log_with")}
    return fingerprint({"format": FORMAT, "base": _base_identity(base), "data": benchmark.fingerprint(),
                        "config": config})


def memorisation(results: dict) -> dict:
    """The numbers a target is judged by, from an evaluation's results."""
    out = {}
    for split in ("forget", "retain"):
        block = results.get(f"{split}-set") or {}
        out[f"{split}_regurgitation"] = block.get("overall-regurgitation-score")
        out[f"{split}_knowledge"] = block.get("overall-knowledge-score")
    out["mia_auc"] = results.get("mia_loss_acc")
    return out


def target_met(scores: dict, cfg: FinetuneConfig) -> bool:
    for split in ("forget", "retain"):
        if (scores.get(f"{split}_regurgitation") or 0.0) < cfg.target_regurgitation:
            return False
        if (scores.get(f"{split}_knowledge") or 0.0) < cfg.target_knowledge:
            return False
    if cfg.target_mia_auc is not None and scores.get("mia_auc") is not None:
        return scores["mia_auc"] >= cfg.target_mia_auc
    return True


def _measure(model, tokenizer, benchmark: Benchmark, rows: list[str] | None) -> dict:
    from lumebench.eval.evaluate import EvalConfig, evaluate

    was = model.training
    model.eval()
    try:
        res = evaluate(model, tokenizer, benchmark, EvalConfig(mmlu=None, mia=benchmark.has_mia(), rows=rows))
    finally:
        model.train(was)
    return memorisation(res)


def _fmt(scores: dict) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in scores.items() if isinstance(v, float))


def finetune(base: str, benchmark: Benchmark, cfg: FinetuneConfig | None = None, out_dir: str | Path = "target",
             *, resume: bool = True) -> dict:
    """Fine-tune ``base`` on ``benchmark`` into ``out_dir`` (resuming a run left there); returns and
    writes ``target.json``. The model and tokenizer are saved in ``out_dir`` itself."""
    import torch

    from lumebench.models import load_model, model_spec_of
    from lumebench.train.batches import EpochBatches, causal_lm_loss
    from lumebench.train.loop import TrainConfig, save_trained, train, unsharded

    from lumebench.eval.evaluate import check_cells

    from lumebench import distributed

    t0 = time.perf_counter()
    distributed.init()
    check_cells(benchmark.rows, benchmark.source or "the benchmark")  # fail now, not at the first evaluation
    out_dir = Path(out_dir)
    done = read_target(out_dir) if resume else None
    if done is not None and done.get("key") == target_key(str(base), benchmark, cfg or FinetuneConfig()):
        log.info("%s already holds this target (same base, data and hyperparameters): nothing to do", out_dir)
        return done
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = (cfg or FinetuneConfig()).resolved(str(base))
    spec = model_spec_of(base)
    if spec is not None and not spec.needs_finetune:
        log.warning("%s is already a memorised LUME target; fine-tuning it again is rarely what you want", base)
    if str(base) == "tiny":
        from lumebench.models.tiny import build_model, build_tokenizer

        tcfg = _tiny_config(cfg)
        tokenizer = build_tokenizer(benchmark_texts(benchmark), tcfg.vocab_size)
        model = build_model(tokenizer, tcfg)
        max_length = min(cfg.max_length, tcfg.max_position)
    else:
        # float32 master weights on every device (bf16 autocast on GPUs): pure-bf16 AdamW updates
        # round away the small steps that memorisation ends with
        model, tokenizer = load_model(base, dtype="float32")
        max_length = min(cfg.max_length, spec.max_length if spec else cfg.max_length)
    model.train()
    examples = training_examples(tokenizer, benchmark, max_length)
    n_tokens = sum(len(e) for e in examples)
    log.info("fine-tuning %s (%.1fM parameters) on %d examples, %d tokens an epoch", base,
             sum(p.numel() for p in model.parameters()) / 1e6, len(examples), n_tokens)
    batches = EpochBatches(examples, cfg.batch_size, tokenizer.pad_token_id, seed=cfg.seed)

    epochs, eval_from = cfg.epochs, cfg.eval_from
    steps_per_epoch = math.ceil(len(batches) / cfg.grad_accum)
    if cfg.min_steps and epochs * steps_per_epoch < cfg.min_steps:
        epochs = math.ceil(cfg.min_steps / steps_per_epoch)
        eval_from = max(1, round(cfg.eval_from * epochs / cfg.epochs))
        log.info("small benchmark: %d epochs (%d steps of %d) to reach min_steps=%d; memorisation checks "
                 "from epoch %d", epochs, epochs * steps_per_epoch, steps_per_epoch, cfg.min_steps, eval_from)

    eval_rows = None
    if cfg.eval_rows is not None:
        from lumebench.eval.evaluate import sample_rows

        eval_rows = [r.id for r in sample_rows(benchmark.rows, cfg.eval_rows, seed=cfg.seed)]

    def on_epoch_end(epoch: int, step: int, model_) -> dict | None:
        n = epoch + 1
        if n != epochs and (n < eval_from or (n - eval_from) % cfg.eval_every):
            return None
        scores = _measure(model_, tokenizer, benchmark, eval_rows)
        met = target_met(scores, cfg)
        log.info("memorisation after epoch %d: %s%s", n, _fmt(scores), " — target met" if met else "")
        return {**scores, "stop": met, "reason": "memorisation target met" if met else None}

    def save(model_, directory: Path, state_dict=None) -> None:
        from lumebench.models.checkpoint import save_checkpoint

        save_checkpoint(model_, tokenizer, directory, state_dict=state_dict)

    tc = TrainConfig(lr=cfg.lr, epochs=epochs, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                     warmup_ratio=cfg.warmup_ratio, lr_schedule=cfg.lr_schedule, weight_decay=cfg.weight_decay,
                     max_grad_norm=cfg.max_grad_norm, mixed_precision=cfg.mixed_precision, seed=cfg.seed,
                     log_every=max(1, len(batches) * 5), checkpoint_interval_s=cfg.checkpoint_interval_s,
                     distributed=cfg.distributed, log_with=cfg.log_with)
    res = train(model, causal_lm_loss, batches, tc, out_dir=out_dir / "train", save_model=save,
                on_epoch_end=on_epoch_end, resume=resume)
    if res.diverged:
        raise LumeError(f"fine-tuning {res.status}; the last good checkpoint is in {res.checkpoint}; "
                        f"lower the learning rate (--lr) and start over with --no-resume", path=str(out_dir))

    # final scores on every row (reuse the last in-training measurement when it covered every row)
    last = res.epoch_logs[-1] if res.epoch_logs else {}
    if eval_rows is None and last.get("forget_regurgitation") is not None:
        scores = {k: last.get(k) for k in ("forget_regurgitation", "forget_knowledge", "retain_regurgitation",
                                           "retain_knowledge", "mia_auc")}
    else:
        with unsharded(model):  # FSDP2: every process holds the whole model for its share of the rows
            scores = _measure(model, tokenizer, benchmark, None)
    met = target_met(scores, cfg)
    save_trained(model, out_dir, save)  # gathered under FSDP2, written by the main process
    fault("finetune:after-model-save")  # the fault tests crash here: model saved, no target.json yet
    info = {
        "base": str(base),
        "base_spec": spec.to_dict() if spec else None,
        "data_fingerprint": benchmark.fingerprint(),
        "data_source": benchmark.source,
        "hyperparameters": cfg.to_dict(),
        "seed": cfg.seed,
        "memorisation": scores,
        "target_met": met,
        "status": res.status,
        "steps": res.steps,
        "epochs": res.epochs_done,
        "train_examples": len(examples),
        "train_tokens_per_epoch": n_tokens,
        "tokens_per_s": round(res.tokens_per_s, 1),
        "train_wall_s": round(res.wall_s, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
        "curve": [{k: v for k, v in e.items() if v is not None} for e in res.epoch_logs],
        "parameters": sum(p.numel() for p in model.parameters()),
        "tiny_config": _tiny_config(cfg).to_dict() if str(base) == "tiny" else None,
        "key": target_key(str(base), benchmark, cfg),
        "meta": run_meta(seed=cfg.seed, config=cfg.to_dict(), data_fingerprint=benchmark.fingerprint()),
        "torch_threads": torch.get_num_threads(),
        "complete": True,
    }
    with distributed.main_only() as writer:
        if writer:
            atomic_write_json(out_dir / TARGET_JSON, info)
            # only now that target.json exists is the checkpoint redundant (a crash before this line
            # resumes from it: the loop finds the finished state and training is not redone)
            shutil.rmtree(out_dir / "train" / "checkpoint", ignore_errors=True)
    (log.info if met else log.warning)(
        "target %s: %s after %d epochs (%s)%s", out_dir, _fmt(scores), res.epochs_done, res.status,
        "" if met else " — memorisation target NOT met; raise --epochs or --lr")
    return info


def read_target(path: str | Path) -> dict | None:
    """``target.json`` of a finished target directory, or None if there is none (or it is incomplete)."""
    p = Path(path) / TARGET_JSON
    if not p.is_file():
        return None
    try:
        info = read_json(p)
    except LumeError:
        return None
    return info if isinstance(info, dict) and info.get("complete") else None


def _slug(base: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(base)).name or str(base)).strip("-")[:40] or "model"


def build_target(base: str, benchmark: Benchmark, cfg: FinetuneConfig | None = None,
                 cache_dir: str | Path | None = None) -> Path:
    """The directory of a memorised target of ``base`` on ``benchmark``: cached under ``cache_dir``
    (default ``$LUME_CACHE/targets``) by (base, data fingerprint, hyperparameters); a complete
    cached target is returned at once, an interrupted one is resumed."""
    from lumebench.models import cache_root

    cfg = cfg or FinetuneConfig()
    cache_dir = Path(cache_dir) if cache_dir is not None else cache_root() / "targets"
    key = target_key(str(base), benchmark, cfg)
    out = cache_dir / f"{_slug(str(base))}-{key}"
    if read_target(out) is not None:
        log.info("using the cached target %s", out)
        return out
    from lumebench.io import output_lock

    with output_lock(out):  # two runs building the same target: the second is refused, not interleaved
        finetune(str(base), benchmark, cfg, out)
    return out
