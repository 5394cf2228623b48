"""One optimizer step of :func:`lumebench.train.loop.train`, the parts that touch tensors: the
micro-batches' forward and backward passes (:func:`forward_backward`), the gradient check against
divergence (:func:`check_gradients`, :func:`step_outcome`) and the processes' mean of the step's
numbers (:func:`reduce_step`)."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from lumebench import distributed
from lumebench.train.prepare import TrainingSetup

Batch = Any
LossFn = Callable[[torch.nn.Module, Batch], "tuple[torch.Tensor, dict[str, float]]"]


def step_outcome(grad_norm: float, *, loss_scaling: bool, explode_grad_norm: float) -> str:
    """What to do with an optimizer step given its gradient norm: "step", "skip" (an fp16 overflow
    under a GradScaler: the scaler skips the update and lowers its scale, training goes on) or
    "diverged" (a non-finite norm without loss scaling, or a norm above the divergence guard)."""
    if not math.isfinite(grad_norm):
        return "skip" if loss_scaling else "diverged"
    return "diverged" if grad_norm > explode_grad_norm else "step"


def to_device(batch: Batch, device: torch.device) -> Batch:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def count_tokens(batch: Batch) -> int:
    """Real (non-padding) tokens in a batch: the sum of every ``attention_mask`` found in it."""
    if isinstance(batch, dict):
        if isinstance(batch.get("attention_mask"), torch.Tensor):
            return int(batch["attention_mask"].sum())
        if isinstance(batch.get("input_ids"), torch.Tensor):
            return batch["input_ids"].numel()
        return sum(count_tokens(v) for v in batch.values())
    if isinstance(batch, (list, tuple)):
        return sum(count_tokens(v) for v in batch)
    return 0


def float_value(x) -> float:
    if hasattr(x, "full_tensor"):  # a DTensor (FSDP2 gradient norm)
        x = x.full_tensor()
    return float(x.detach().float().item()) if isinstance(x, torch.Tensor) else float(x)



@dataclass
class StepSums:
    """One optimizer step's micro-batches, summed (means over the group)."""

    loss: float = 0.0
    tokens: int = 0
    logs: dict[str, float] = field(default_factory=dict)
    diverged_at: str | None = None  # why the step is not taken


def forward_backward(tr: TrainingSetup, loss_fn: LossFn, group: list[Batch]) -> StepSums:
    """The micro-batches of one step: losses, gradients (summed), tokens and the method's logs."""
    sums = StepSums()
    for i, batch in enumerate(group):
        batch = to_device(distributed.shard_batch(batch), tr.device)
        # no gradient all-reduce between processes until the last micro-batch of the step
        sync = tr.accelerator.no_sync(tr.model) if i < len(group) - 1 else contextlib.nullcontext()
        with sync:
            with tr.accelerator.autocast():
                loss, logs = loss_fn(tr.model, batch)
            finite = torch.isfinite(loss.detach()).all()
            if tr.world > 1:  # every process stops together
                finite = distributed.all_reduce(finite.float().to(tr.device), "min") > 0
            if not finite:
                sums.diverged_at = f"loss is {float_value(loss)}"
                return sums
            tr.accelerator.backward(loss / len(group))
        sums.loss += float_value(loss) / len(group)
        logs = dict(logs or {})
        sums.tokens += int(logs.pop("tokens", 0) or count_tokens(batch))
        for k, v in logs.items():
            sums.logs[k] = sums.logs.get(k, 0.0) + float_value(v) / len(group)
    return sums


def check_gradients(tr: TrainingSetup) -> tuple[str | None, float, bool]:
    """Clip; (why the step is not taken or None, the gradient norm, whether the scaler skips it)."""
    cfg = tr.cfg
    clip = cfg.max_grad_norm if cfg.max_grad_norm else float("inf")
    grad_norm = float_value(tr.accelerator.clip_grad_norm_(tr.params, clip))
    outcome = step_outcome(grad_norm, loss_scaling=tr.accelerator.scaler is not None,
                           explode_grad_norm=cfg.explode_grad_norm)
    if outcome == "diverged":
        return f"gradient norm {grad_norm:.3g} (limit {cfg.explode_grad_norm:g})", grad_norm, False
    return None, grad_norm, outcome == "skip"


def reduce_step(tr: TrainingSetup, values: list[float], n_tokens: int) -> tuple[list[float], int]:
    """The processes' mean of each value (= the global-batch value) and their total tokens."""
    if tr.world == 1:
        return values, n_tokens
    t = distributed.all_reduce(torch.tensor(values + [float(n_tokens)], dtype=torch.float64, device=tr.device))
    t[:-1] /= tr.world
    return t[:-1].tolist(), int(t[-1].item())
