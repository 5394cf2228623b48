"""Memorisation fine-tuning: build a *target* model that knows the benchmark by heart.

    path = build_target("tiny", benchmark, {"epochs": 40}, cache_dir)   # cached by content
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
import math
import time
import dataclasses
from dataclasses import fields
from pathlib import Path

from lumebench import distributed
from lumebench.data.records import Benchmark
from lumebench.errors import LumeError
from lumebench.eval.batching import eval_mode, pad_id
from lumebench.faults import fault
from lumebench.io import atomic_write_json, read_json
from lumebench.progress import log
from lumebench.step import Step
from lumebench.provenance import run_meta
from lumebench.pipeline.target_config import FinetuneConfig, check_settings  # noqa: F401 (the job's API)
from lumebench.train.checkpoint import retire_checkpoint

TARGET_JSON = "target.json"
FORMAT = 1  # bump when the training recipe changes in a way that invalidates cached targets


def _tiny_config(cfg: FinetuneConfig):
    from lumebench.models.tiny import TinyConfig

    known = {f.name for f in fields(TinyConfig)}
    unknown = sorted(set(cfg.tiny) - known)
    if unknown:
        raise LumeError(f"unknown tiny model setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
                        field="tiny")
    return TinyConfig(**{"seed": cfg.train.seed, **cfg.tiny})


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


def target_step(base: str, benchmark: Benchmark, cfg: FinetuneConfig, out_dir: Path) -> Step:
    """Fine-tuning as a cached step: keyed by (base, data fingerprint, hyperparameters)."""
    # early_stop=True (the default) is left out so that targets built before the setting keep their keys
    config = {k: v for k, v in cfg.to_dict().items()
              if k not in ("distributed", "log_with") and not (k == "early_stop" and v)}
    return Step(Path(out_dir), {"format": FORMAT, "base": _base_identity(base), "data": benchmark.fingerprint(),
                                "config": config}, what="target")


def target_key(base: str, benchmark: Benchmark, cfg: FinetuneConfig | dict | None = None) -> str:
    """The cache key: (base, data fingerprint, hyperparameters)."""
    return target_step(base, benchmark, _config(base, cfg), Path(".")).fingerprint


def _config(base: str, cfg: FinetuneConfig | dict | None) -> FinetuneConfig:
    """A config as given, or built for ``base`` from settings by name."""
    return cfg if isinstance(cfg, FinetuneConfig) else FinetuneConfig.for_base(base, cfg)


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

    with eval_mode(model):
        res = evaluate(model, tokenizer, benchmark, EvalConfig(mmlu=None, mia=benchmark.has_mia(), rows=rows))
    return memorisation(res)


def _fmt(scores: dict) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in scores.items() if isinstance(v, float))


def finetune(base: str, benchmark: Benchmark, cfg: FinetuneConfig | dict | None = None,
             out_dir: str | Path = "target", *, resume: bool = True) -> dict:
    """Fine-tune ``base`` on ``benchmark`` into ``out_dir`` (a :class:`Step`: reused when done with the
    same key, resumed from the loop's checkpoint when interrupted); returns ``target.json``'s content.
    The model and tokenizer are saved in ``out_dir`` itself. ``cfg``: a config, or settings by name."""
    from lumebench import distributed
    from lumebench.eval.evaluate import check_cells

    distributed.init()
    check_cells(benchmark.rows, benchmark.source or "the benchmark")  # fail now, not at the first evaluation
    cfg = _config(str(base), cfg)
    step = target_step(str(base), benchmark, cfg, Path(out_dir))
    if not resume and distributed.is_main():
        step.marker.unlink(missing_ok=True)
    if step.done() is None:
        step.run(lambda: _finetune(str(base), benchmark, cfg, step, resume), on_other_key="redo")
        with distributed.main_only() as writer:
            if writer:  # only now that the step is marked done is the checkpoint redundant
                retire_checkpoint(step.folder / "train")
                if (step.folder / "pretrain").is_dir():
                    retire_checkpoint(step.folder / "pretrain")
    else:
        log.info("%s already holds this target (same base, data and hyperparameters): nothing to do", out_dir)
    return read_json(step.folder / TARGET_JSON, expect=dict)


def _base_model(base: str, cfg: FinetuneConfig, benchmark: Benchmark, corpus: list[str]):
    """(model, tokenizer, longest sequence) to fine-tune: the tiny model built from the benchmark's
    text and the held-out ``corpus`` it pretrains on, or a base loaded in float32 (master weights;
    bf16 AdamW updates round away the small steps memorisation ends with)."""
    from lumebench.models import load_model, model_spec_of

    spec = model_spec_of(base)
    if spec is not None and not spec.needs_finetune:
        log.warning("%s is already a memorised LUME target; fine-tuning it again is rarely what you want", base)
    if spec is not None and spec.offline == "build":
        from lumebench.models.tiny import build_model, build_tokenizer

        tiny_cfg = _tiny_config(cfg)
        tokenizer = build_tokenizer(benchmark_texts(benchmark) + corpus, tiny_cfg.vocab_size)
        return build_model(tokenizer, tiny_cfg), tokenizer, min(cfg.max_length, tiny_cfg.max_position)
    model, tokenizer = load_model(base, dtype="float32")
    return model, tokenizer, min(cfg.max_length, spec.max_length if spec else cfg.max_length)


def _epochs(cfg: FinetuneConfig, n_batches: int) -> tuple[int, int]:
    """(epochs, first memorisation check): ``epochs`` raised to reach ``min_steps``, the checks moved
    in proportion."""
    epochs, eval_from = cfg.train.epochs, cfg.eval_from
    steps_per_epoch = math.ceil(n_batches / cfg.train.grad_accum)
    if cfg.min_steps and epochs * steps_per_epoch < cfg.min_steps:
        epochs = math.ceil(cfg.min_steps / steps_per_epoch)
        eval_from = max(1, round(cfg.eval_from * epochs / cfg.train.epochs))
        log.info("small benchmark: %d epochs (%d steps of %d) to reach min_steps=%d; memorisation checks "
                 "from epoch %d", epochs, epochs * steps_per_epoch, steps_per_epoch, cfg.min_steps, eval_from)
    return epochs, eval_from


def _pretrain_corpus(base: str, cfg: FinetuneConfig, benchmark: Benchmark) -> list[str]:
    """The held-out documents a base built here reads first (``pretrain_docs``; none otherwise)."""
    from lumebench.data.heldout import heldout_corpus
    from lumebench.models import model_spec_of

    spec = model_spec_of(base)
    if not cfg.pretrain_docs or spec is None or spec.offline != "build":
        return []
    return heldout_corpus(benchmark, cfg.pretrain_docs, seed=cfg.train.seed)


def _pretrain(model, tokenizer, examples: list[list[int]], cfg: FinetuneConfig, out_dir: Path, resume: bool) -> None:
    """``pretrain_epochs`` epochs of next-token prediction on the held-out documents' ``examples``
    (the training loop's checkpoints in ``out_dir``: an interrupted pretraining resumes), then the
    memorisation."""
    from lumebench.train.batches import EpochBatches, causal_lm_loss
    from lumebench.train.loop import train

    batches = EpochBatches(examples, cfg.train.batch_size, pad_id(tokenizer), seed=cfg.train.seed)
    log.info("pretraining on %d held-out documents (%d tokens an epoch) for %d epochs before memorising",
             len(examples), sum(len(e) for e in examples), cfg.pretrain_epochs)
    tc = dataclasses.replace(cfg.train, epochs=cfg.pretrain_epochs, log_every=max(1, len(batches)))
    res = train(model, causal_lm_loss, batches, tc, out_dir=out_dir, resume=resume)
    if res.diverged:
        raise LumeError(f"pretraining {res.status}; lower the learning rate (--lr) and start over with "
                        f"--no-resume", path=str(out_dir))
    model.train()


def _finetune(base: str, benchmark: Benchmark, cfg: FinetuneConfig, step: Step, resume: bool) -> dict:
    """Train the target into ``step.folder`` and write ``target.json``; the step's result."""
    from lumebench.models.checkpoint import save_checkpoint
    from lumebench.train.batches import EpochBatches, causal_lm_loss
    from lumebench.train.loop import train
    from lumebench.train.weights import save_trained, unsharded

    t0 = time.perf_counter()
    out_dir = step.folder
    corpus = _pretrain_corpus(base, cfg, benchmark)
    model, tokenizer, max_length = _base_model(base, cfg, benchmark, corpus)
    model.train()
    heldout = []
    if corpus:
        from lumebench.train.batches import document_examples

        heldout = document_examples(tokenizer, corpus, max_length)  # tokenised once: pretraining and replay
        _pretrain(model, tokenizer, heldout, cfg, out_dir / "pretrain", resume)
    examples = training_examples(tokenizer, benchmark, max_length)
    log.info("fine-tuning %s (%.1fM parameters) on %d examples, %d tokens an epoch", base,
             sum(p.numel() for p in model.parameters()) / 1e6, len(examples), sum(len(e) for e in examples))
    batches = EpochBatches(examples, cfg.train.batch_size, pad_id(tokenizer), seed=cfg.train.seed)
    if heldout and cfg.pretrain_replay:
        from lumebench.train.batches import ReplayBatches

        per_epoch = round(cfg.pretrain_replay * len(examples))
        batches = ReplayBatches(examples, cfg.train.batch_size, pad_id(tokenizer), seed=cfg.train.seed,
                                replay=heldout, per_epoch=per_epoch)
        log.info("each epoch also reads %d of the %d held-out documents, in turn", per_epoch, len(corpus))
    epochs, eval_from = _epochs(cfg, len(batches))
    eval_rows = None
    if cfg.eval_rows is not None:
        from lumebench.eval.evaluate import sample_rows

        eval_rows = [r.id for r in sample_rows(benchmark.rows, cfg.eval_rows, seed=cfg.train.seed)]

    def on_epoch_end(epoch: int, step_: int, model_) -> dict | None:
        n = epoch + 1
        if n != epochs and (n < eval_from or (n - eval_from) % cfg.eval_every):
            return None
        scores = _measure(model_, tokenizer, benchmark, eval_rows)
        met = target_met(scores, cfg)
        log.info("memorisation after epoch %d: %s%s", n, _fmt(scores), " — target met" if met else "")
        stop = met and cfg.early_stop
        return {**scores, "stop": stop, "reason": "memorisation target met" if stop else None}

    def save(model_, directory: Path, state_dict=None) -> None:
        save_checkpoint(model_, tokenizer, directory, state_dict=state_dict)

    tc = dataclasses.replace(cfg.train, epochs=epochs, log_every=max(1, len(batches) * 5))
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
    save_trained(model, out_dir, save)  # gathered under FSDP2, written by the main process
    fault("finetune:after-model-save")  # the fault tests crash here: model saved, no target.json yet
    info = _target_info(base, benchmark, cfg, step, res, scores, model, examples, time.perf_counter() - t0)
    with distributed.main_only() as writer:
        if writer:
            atomic_write_json(out_dir / TARGET_JSON, info)
    (log.info if info["target_met"] else log.warning)(
        "target %s: %s after %d epochs (%s)%s", out_dir, _fmt(scores), res.epochs_done, res.status,
        "" if info["target_met"] else " — memorisation target NOT met; raise --epochs or --lr")
    return {k: info[k] for k in ("status", "target_met", "memorisation", "steps", "epochs")}


def _target_info(base: str, benchmark: Benchmark, cfg: FinetuneConfig, step: Step, res, scores: dict, model,
                 examples: list, wall_s: float) -> dict:
    """The content of ``target.json``."""
    import torch

    from lumebench.models import model_spec_of

    spec = model_spec_of(base)
    built = spec is not None and spec.offline == "build"
    return {
        "base": str(base),
        "base_spec": spec.to_dict() if spec else None,
        "data_fingerprint": benchmark.fingerprint(),
        "data_source": benchmark.source,
        "hyperparameters": cfg.to_dict(),
        "seed": cfg.train.seed,
        "memorisation": scores,
        "target_met": target_met(scores, cfg),
        "status": res.status,
        "steps": res.steps,
        "epochs": res.epochs_done,
        "train_examples": len(examples),
        "train_tokens_per_epoch": sum(len(e) for e in examples),
        "tokens_per_s": round(res.tokens_per_s, 1),
        "train_wall_s": round(res.wall_s, 1),
        "wall_s": round(wall_s, 1),
        "curve": [{k: v for k, v in e.items() if v is not None} for e in res.epoch_logs],
        "parameters": sum(p.numel() for p in model.parameters()),
        "tiny_config": _tiny_config(cfg).to_dict() if built else None,
        "key": step.fingerprint,
        "meta": run_meta(seed=cfg.train.seed, config=cfg.to_dict(), data_fingerprint=benchmark.fingerprint()),
        "torch_threads": torch.get_num_threads(),
    }


def _slug(base: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(base)).name or str(base)).strip("-")[:40] or "model"


def build_target(base: str, benchmark: Benchmark, cfg: FinetuneConfig | dict | None = None,
                 cache_dir: str | Path | None = None) -> Path:
    """The directory of a memorised target of ``base`` on ``benchmark``: cached under ``cache_dir``
    (default ``$LUME_CACHE/targets``) by (base, data fingerprint, hyperparameters); a complete
    cached target is returned at once, an interrupted one is resumed."""
    from lumebench.io import output_lock
    from lumebench.models import cache_root

    cfg = _config(str(base), cfg)
    cache_dir = Path(cache_dir) if cache_dir is not None else cache_root() / "targets"
    out = cache_dir / f"{_slug(str(base))}-{target_key(str(base), benchmark, cfg)}"
    if target_step(str(base), benchmark, cfg, out).done() is not None:
        log.info("using the cached target %s", out)
        return out
    with output_lock(out):  # two runs building the same target: the second is refused, not interleaved
        finetune(str(base), benchmark, cfg, out)
    return out


def prepare_target(t, bench: Benchmark, cache: Path) -> str:
    """The target job of a run: a path (or model spec) of the memorised target of target settings
    ``t`` (:class:`lumebench.pipeline.config.TargetConfig`), built into ``<cache>/targets``."""
    if not t.memorise:
        log.info("target: using %s as it is (memorise: false)", t.model)
        return t.model
    log.info("target: building (or reusing) the memorised %s target", t.model)
    path = build_target(t.model, bench, FinetuneConfig.for_base(t.model, check_settings(t.finetune)),
                        cache / "targets")
    log.info("target: %s", path)
    return str(path)
