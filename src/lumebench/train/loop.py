"""The one training loop, shared by memorisation fine-tuning and every unlearning method.

    result = train(model, loss_fn, epoch_batches, TrainConfig(lr=5e-3, epochs=40), out_dir=run_dir)

- ``loss_fn(model, batch) -> (loss, logs)``: the method. ``logs`` is a dict of floats recorded per
  step (a ``"tokens"`` entry, if present, is used for tokens/s; otherwise the ``attention_mask``
  tensors found in the batch are counted).
- ``epoch_batches(epoch) -> list[batch]``: the data, deterministic from the seed and the epoch (see
  :mod:`lumebench.train.batches`). A batch is any nest of dicts/lists/tuples of tensors; tensors are
  moved to the training device.
- ``on_epoch_end(epoch, step, model) -> dict | None``: the caller's evaluation; its numbers are
  stored in the epoch log, and ``{"stop": True}`` ends training (e.g. memorisation target met).
- ``unit``: what an "epoch" of the loop is called in the logs and the progress bar ("epoch"; the
  unlearning job's are "chunk"s of ``eval_every`` optimizer steps). Records and checkpoints keep
  their ``epoch`` keys.

Built on Accelerate (device placement, bf16 autocast where the device supports it; launched on
several processes the model is wrapped in DDP and gradients are averaged, and ``epoch_batches``
should then return each process its own shard, e.g. ``batches[rank::world]``, of equal length).
Each epoch ends with a checkpoint in ``out_dir/checkpoint/`` (:mod:`lumebench.train.checkpoint`)
written atomically (temp dir + rename): the model through ``save_model`` (a usable model for the
user) and the trainer state (trainable parameters, optimizer, scheduler, RNG, step, history) in
safetensors + JSON, no pickle. With ``resume=True`` a rerun continues from the checkpoint and ends
with exactly the weights and loss trajectory of an uninterrupted run (the batches, the RNG and the
optimizer are restored). Set-up: :mod:`lumebench.train.prepare`; one optimizer step's tensor work:
:mod:`lumebench.train.step`; FSDP2 sharding, master weights, writing the trained model:
:mod:`lumebench.train.weights`.

Divergence guard: a NaN/inf loss or a gradient norm above ``explode_grad_norm`` stops training
before the bad update is applied, with ``status = "diverged at step N"``; the model is restored to
the state at the start of that epoch (= the last checkpoint, which is never overwritten by a bad
epoch) and the logs so far are kept.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch

from lumebench import distributed
from lumebench.io import append_jsonl, write_jsonl
from lumebench.progress import bar, log
from lumebench.provenance import seed_everything
from lumebench.train.checkpoint import (CHECKPOINT, OPTIMIZER, RNG, STATE_JSON, TRAINABLE, LastGood,
                                        check_resumable, find_checkpoint, read_checkpoint_state,
                                        restore_training_state, write_checkpoint)
from lumebench.train.config import TrainConfig, TrainResult
from lumebench.train.prepare import (TrainingSetup, lr_lambda, prepare_training, resolve_mixed_precision,
                                     start_trackers)
from lumebench.train.step import (Batch, LossFn, StepSums, check_gradients, count_tokens, forward_backward,
                                  reduce_step, step_outcome, to_device)
from lumebench.train.weights import (default_save_model, full_state_dict, fully_shard_model, is_sharded,
                                     save_trained, unsharded, upcast_master_weights)

__all__ = [  # the loop, and what moved to .prepare / .step / .checkpoint / .weights, still importable here
    "train", "TrainConfig", "TrainResult", "LOG", "resolve_mixed_precision", "step_outcome", "lr_lambda",
    "to_device", "count_tokens", "CHECKPOINT", "STATE_JSON", "TRAINABLE", "OPTIMIZER", "RNG",
    "find_checkpoint", "read_checkpoint_state", "default_save_model", "full_state_dict", "fully_shard_model",
    "is_sharded", "save_trained", "unsharded", "upcast_master_weights",
]

LOG = "train_log.jsonl"
# settings a resumed run may change (they do not change the numbers)
NOT_COMPARED = ("log_every", "log_with", "distributed")


# ---------------------------------------------------------------------------------------------
# resuming, checkpointing


@dataclass
class _Run:
    """The loop's counters and logs: what the checkpoint saves and a resume restores."""

    t_start: float
    step: int = 0
    start_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    epoch_logs: list[dict] = field(default_factory=list)
    tokens: int = 0
    train_s: float = 0.0
    prior_wall: float = 0.0  # seconds of the runs this one resumes
    skipped: int = 0
    status: str = "completed"
    last_ckpt_time: float = 0.0

    def wall(self) -> float:
        return self.prior_wall + time.perf_counter() - self.t_start


def _resume(tr: TrainingSetup, run: _Run, ckpt: Path) -> TrainResult | None:
    """Continue from ``ckpt``: the model, optimizer, scheduler, RNG and the loop's counters; the
    result itself when the checkpoint is of a finished run."""
    st = read_checkpoint_state(ckpt)
    comparable = {k: v for k, v in tr.cfg.to_dict().items() if k not in NOT_COMPARED}
    check_resumable(st, ckpt, comparable, NOT_COMPARED, tr.world if tr.fsdp else None)
    restore_training_state(ckpt, st, params=tr.params, names=tr.names, optimizer=tr.optimizer,
                           scheduler=tr.scheduler, files=tr.files, rank=tr.rank if tr.fsdp else None)
    run.step, run.start_epoch = st["step"], st["epochs_done"]
    run.history, run.epoch_logs = st["history"], st["epoch_logs"]
    run.prior_wall, run.tokens, run.train_s = st["wall_s"], st["tokens"], st["train_s"]
    run.skipped = st.get("skipped_steps", 0)
    if st.get("status", "running") != "running":
        log.info("training already finished in %s (%s); nothing to do", ckpt, st["status"])
        return TrainResult(st["status"], run.step, run.start_epoch, run.history, run.epoch_logs,
                           run.tokens / max(run.train_s, 1e-9), run.prior_wall, run.tokens, str(ckpt),
                           run.skipped)
    log.info("resuming from %s: %s %d, step %d", ckpt, tr.unit, run.start_epoch, run.step)
    return None


def _save(tr: TrainingSetup, run: _Run, epochs_done: int, status: str) -> Path:
    def loop_state() -> dict:
        return {"status": status, "step": run.step, "epochs_done": epochs_done, "total_steps": tr.total_steps,
                "config": tr.cfg.to_dict(), "history": run.history, "epoch_logs": run.epoch_logs,
                "tokens": run.tokens, "skipped_steps": run.skipped, "train_s": run.train_s,
                "wall_s": run.wall()}

    return write_checkpoint(tr.out_dir, model=tr.model, unwrapped=tr.accelerator.unwrap_model(tr.model),
                            params=tr.params, names=tr.names, optimizer=tr.optimizer, scheduler=tr.scheduler,
                            save_model=tr.save_model, files=tr.files,
                            sharded_world=tr.world if tr.fsdp else None, loop_state=loop_state)


# ---------------------------------------------------------------------------------------------
# one optimizer step


def _diverged(tr: TrainingSetup, run: _Run, last_good: LastGood, epoch: int, why: str) -> None:
    """Stop before the bad update: the model goes back to its state at the start of the epoch."""
    run.status = f"diverged at step {run.step + 1}"
    log.warning("%s: %s; the model is back to its state at the start of %s %d%s",
                run.status, why, tr.unit, epoch + 1,
                f" (checkpoint {last_good.checkpoint})" if last_good.checkpoint else "")
    tr.optimizer.zero_grad(set_to_none=True)
    last_good.restore()


def _record_step(tr: TrainingSetup, run: _Run, epoch: int, sums: StepSums, lr: float, grad_norm: float,
                 skip: bool, dt: float, progress) -> float:
    """The step's record (history, log file, trackers, progress bar, log line); returns its loss."""
    keys = sorted(sums.logs)
    vals, step_tokens = reduce_step(tr, [sums.loss] + [sums.logs[k] for k in keys], sums.tokens)
    step_loss, step_logs = vals[0], dict(zip(keys, vals[1:]))
    run.train_s += dt
    run.tokens += step_tokens
    rec = {"step": run.step, "epoch": epoch + 1, "loss": step_loss, "lr": lr,
           "grad_norm": grad_norm if math.isfinite(grad_norm) else None,
           "tokens": step_tokens, "tokens_per_s": step_tokens / max(dt, 1e-9), **step_logs}
    if skip:
        rec["skipped"] = True
    run.history.append(rec)
    if tr.accelerator.is_main_process:
        append_jsonl(tr.out_dir / LOG, rec)
    if tr.tracking:
        tr.accelerator.log({f"train/{k}": v for k, v in rec.items()
                            if isinstance(v, (int, float)) and k != "step"}, step=run.step)
    tok_s = f"{run.tokens / max(run.train_s, 1e-9):,.0f}"
    progress.update(1)
    progress.set_postfix(loss=f"{step_loss:.3f}", tok_s=tok_s, **{tr.unit: epoch + 1})
    if run.step % tr.cfg.log_every == 0 or run.step == tr.total_steps:
        log.info("step %d/%d (%s %d): loss %.4f, gradient norm %.2f, lr %.2e, %s tokens/s",
                 run.step, tr.total_steps, tr.unit, epoch + 1, step_loss, grad_norm, lr, tok_s)
    return step_loss


def _train_step(tr: TrainingSetup, run: _Run, last_good: LastGood, epoch: int, loss_fn: LossFn,
                group: list[Batch], progress) -> float | None:
    """One optimizer step over ``group``; its loss, or None when training diverged (rolled back)."""
    t0 = time.perf_counter()
    if tr.cfg.restarts and run.step in tr.cfg.restarts and run.step > 0:
        # a new trainer from here on (TrainConfig.restarts): AdamW starts without moments
        getattr(tr.optimizer, "optimizer", tr.optimizer).state.clear()
    tr.optimizer.zero_grad(set_to_none=True)
    sums = forward_backward(tr, loss_fn, group)
    skip = False
    if sums.diverged_at is None:
        sums.diverged_at, grad_norm, skip = check_gradients(tr)
    if sums.diverged_at is not None:
        _diverged(tr, run, last_good, epoch, sums.diverged_at)
        return None
    lr = tr.scheduler.get_last_lr()[0]
    tr.optimizer.step()
    if skip or tr.accelerator.optimizer_step_was_skipped:
        run.skipped += 1
        log.warning("step %d: fp16 gradient overflow (norm %s); the loss scaler skipped this "
                    "update and lowered its scale (%d skipped so far)", run.step + 1, grad_norm, run.skipped)
    else:
        tr.scheduler.step()
    run.step += 1
    return _record_step(tr, run, epoch, sums, lr, grad_norm, skip, time.perf_counter() - t0, progress)


# ---------------------------------------------------------------------------------------------
# one epoch


def _unit_done(unit: str, k: int, n: int, steps: int) -> str:
    """``epoch 3/40``, or for another unit its size too: ``chunk 3/5 (4 steps)``."""
    if unit == "epoch":
        return f"epoch {k}/{n}"
    return f"{unit} {k}/{n} ({steps} step{'' if steps == 1 else 's'})"


def _end_epoch(tr: TrainingSetup, run: _Run, last_good: LastGood, epoch: int, losses: list[float],
               on_epoch_end) -> bool:
    """The caller's evaluation, the epoch record, the checkpoint when due; True when training ends."""
    cfg = tr.cfg
    ep = {"epoch": epoch + 1, "step": run.step, "loss": sum(losses) / max(1, len(losses))}
    extra = None
    if on_epoch_end:
        with unsharded(tr.model):
            extra = on_epoch_end(epoch, run.step, tr.accelerator.unwrap_model(tr.model))
    tr.model.train()
    stop = bool(extra and extra.get("stop"))
    if extra:
        ep.update({k: v for k, v in extra.items() if k != "stop"})
    if tr.tracking:
        tr.accelerator.log({f"eval/{k}": v for k, v in ep.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"},
                           step=run.step)
    run.epoch_logs.append(ep)
    if stop:
        run.status = f"stopped early at epoch {epoch + 1}" + (f": {extra['reason']}" if extra.get("reason") else "")
    elif run.step >= tr.total_steps and epoch + 1 < cfg.epochs:
        run.status = f"completed (max_steps={cfg.max_steps} reached)"
    done = stop or run.step >= tr.total_steps or epoch + 1 == cfg.epochs
    due = time.perf_counter() - run.last_ckpt_time >= cfg.checkpoint_interval_s
    if tr.world > 1:  # every process takes the same decision (clocks differ)
        due = distributed.broadcast(due)
    last_good.epoch_ends()
    if cfg.save_checkpoints and (done or due):
        last_good.checkpointed(_save(tr, run, epoch + 1, run.status if done else "running"))
        run.last_ckpt_time = time.perf_counter()
    log.info("%s done: mean loss %.4f%s", _unit_done(tr.unit, epoch + 1, cfg.epochs, len(losses)), ep["loss"],
             "".join(f", {k} {v:.3f}" for k, v in ep.items()
                     if k not in ("epoch", "step", "loss") and isinstance(v, (int, float))))
    return done


def _run_epoch(tr: TrainingSetup, run: _Run, last_good: LastGood, epoch: int, loss_fn: LossFn,
               epoch_batches: Callable[[int], list[Batch]], on_epoch_end, progress) -> bool:
    """One epoch: its optimizer steps, then :func:`_end_epoch`; True when training ends (done or
    diverged)."""
    last_good.epoch_starts()
    batches = epoch_batches(epoch)
    tr.model.train()
    losses: list[float] = []
    accum = tr.cfg.grad_accum
    for group in [batches[i:i + accum] for i in range(0, len(batches), accum)]:
        if run.step >= tr.total_steps:
            break
        loss = _train_step(tr, run, last_good, epoch, loss_fn, group, progress)
        if loss is None:
            return True
        losses.append(loss)
    return _end_epoch(tr, run, last_good, epoch, losses, on_epoch_end)


# ---------------------------------------------------------------------------------------------
# the loop


def train(model: torch.nn.Module, loss_fn: LossFn, epoch_batches: Callable[[int], list[Batch]],
          cfg: TrainConfig, *, out_dir: str | os.PathLike, params: Iterable[torch.nn.Parameter] | None = None,
          save_model: Callable[..., None] | None = None,
          on_epoch_end: Callable[[int, int, torch.nn.Module], dict | None] | None = None,
          resume: bool = True, unit: str = "epoch") -> TrainResult:
    """Train ``model`` in place; see the module docstring. Returns a :class:`TrainResult`.

    ``params``: the parameters to train (default: those with ``requires_grad``). ``save_model(model,
    dir)`` writes the usable model into each checkpoint (default ``save_pretrained``; it also gets
    ``state_dict=`` the gathered weights of an FSDP2 model). ``resume=False`` ignores (and replaces)
    an existing checkpoint. ``epoch_batches`` returns the *global* batches: with several processes
    each takes its share of every batch (:func:`lumebench.distributed.shard_batch`). ``unit``: the
    name of an epoch in the logs (e.g. "chunk" when the epochs are evaluation rounds).
    """
    run = _Run(t_start=time.perf_counter())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tr = prepare_training(model, epoch_batches, cfg, out_dir, params, save_model or default_save_model, unit)
    ckpt = find_checkpoint(out_dir) if resume and cfg.save_checkpoints else None
    seed_everything(cfg.seed)
    if ckpt is not None and (finished := _resume(tr, run, ckpt)) is not None:
        return finished
    if tr.accelerator.is_main_process:
        write_jsonl(out_dir / LOG, run.history)
    tr.tracking = start_trackers(tr.accelerator, cfg, out_dir)
    last_good = LastGood(tr.params, tr.names, tr.files.trainable, ckpt)
    run.last_ckpt_time = time.perf_counter()
    log.info("training %d steps (%d %ss x %d steps, %d micro-batches per %s), lr %g, %s precision, on %s",
             tr.total_steps, cfg.epochs, unit, tr.steps_per_epoch, tr.n_batches, unit, cfg.lr, tr.precision,
             tr.device)
    if tr.world > 1:
        log.info("%d processes (%s): each takes 1/%d of every global batch of %d; effective batch %d x %d "
                 "accumulation = %d examples per optimizer step", tr.world, "FSDP2" if tr.fsdp else "DDP",
                 tr.world, cfg.batch_size, cfg.batch_size, cfg.grad_accum, cfg.batch_size * cfg.grad_accum)
    progress = bar(total=tr.total_steps, initial=run.step, desc="training", unit="step")
    try:
        for epoch in range(run.start_epoch, cfg.epochs):
            if run.step >= tr.total_steps or _run_epoch(tr, run, last_good, epoch, loss_fn, epoch_batches,
                                                        on_epoch_end, progress):
                break
    finally:
        progress.close()
        if tr.tracking:
            tr.accelerator.end_training()
    return _result(run, last_good.checkpoint, unit)


def _result(run: _Run, checkpoint: Path | None, unit: str) -> TrainResult:
    wall = run.wall()
    epochs_done = run.epoch_logs[-1]["epoch"] if run.epoch_logs else 0
    result = TrainResult(run.status, run.step, epochs_done, run.history, run.epoch_logs,
                         run.tokens / max(run.train_s, 1e-9), wall, run.tokens,
                         str(checkpoint) if checkpoint else None, run.skipped)
    log.info("training %s: %d steps, %d %ss, %s tokens/s, %.1f s%s", run.status, run.step, epochs_done, unit,
             f"{result.tokens_per_s:,.0f}", wall, f", {run.skipped} fp16 steps skipped" if run.skipped else "")
    return result
