"""Setting up one training run of :func:`lumebench.train.loop.train`: the mixed precision, the
Accelerate accelerator, the model on its device (or sharded by FSDP2), AdamW and its lr schedule
(:func:`prepare_training`), and the experiment trackers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from lumebench.errors import LumeError
from lumebench.progress import log
from lumebench.train.checkpoint import CheckpointFiles
from lumebench.train.config import TrainConfig
from lumebench.train.weights import fully_shard_model, upcast_master_weights


def resolve_mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def lr_lambda(total_steps: int, warmup_ratio: float, schedule: str,
              restarts: list[int] | None = None) -> Callable[[int], float]:
    """Multiplier of the peak lr at optimizer step ``s`` (0-based): linear warm-up, then the schedule.
    With ``restarts`` (steps where a new schedule begins) each segment has its own warm-up and
    schedule over its own length, as a fresh trainer per segment would."""
    if restarts:
        starts = sorted({0, *(r for r in restarts if 0 < r < total_steps)})
        ends = starts[1:] + [total_steps]
        parts = [(a, lr_lambda(b - a, warmup_ratio, schedule)) for a, b in zip(starts, ends)]

        def segmented(s: int) -> float:
            a, g = next((a, g) for a, g in reversed(parts) if s >= a)
            return g(s - a)

        return segmented
    warm = math.ceil(warmup_ratio * total_steps)

    def f(s: int) -> float:
        if s < warm:
            return (s + 1) / (warm + 1)
        if schedule == "constant":
            return 1.0
        progress = (s - warm) / max(1, total_steps - warm)
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def _param_names(model: torch.nn.Module, params: list[torch.nn.Parameter]) -> list[str]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [names.get(id(p), f"extra.{i}") for i, p in enumerate(params)]


def _allow_mixed_precision(precision: str) -> None:
    """Let this process's next ``Accelerator`` use ``precision`` although an earlier one used another.

    Accelerate keeps one process-wide ``AcceleratorState`` (shared by every ``Accelerator``) and
    refuses a second ``Accelerator`` with another mixed precision ("restart your runtime"). lumebench
    trains several times in one process (a target then its unlearning runs, a sweep, the tests),
    possibly with different precisions. Accelerate (1.x) has no public way to start over: only the
    private ``AcceleratorState._reset_state()`` (which its own test utilities call), so it is used
    here, and only, when the precision differs; the process group (``PartialState``) is kept.
    """
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, precision):
        AcceleratorState._reset_state()


def _training_precision(setting: str, model: torch.nn.Module, params: list[torch.nn.Parameter]) -> str:
    """The autocast precision; trainable weights held in bf16/fp16 become fp32 master weights
    (and are then trained under autocast in their own low precision), the rest of the model fp32 too."""
    precision = resolve_mixed_precision(setting)
    low = upcast_master_weights(model, params)
    if low is not None and precision == "no":
        precision = "bf16" if low == torch.bfloat16 else "fp16"
    if low is not None:
        log.info("trainable weights were %s: training fp32 master weights with %s autocast",
                 str(low).replace("torch.", ""), precision)
    return precision


@dataclass
class TrainingSetup:
    """What :func:`prepare_training` builds: the Accelerate objects and the shape of the run."""

    cfg: TrainConfig
    out_dir: Path
    unit: str
    accelerator: Any
    model: torch.nn.Module  # as trained: DDP-wrapped with several processes (not under FSDP2)
    params: list[torch.nn.Parameter]
    names: list[str]
    optimizer: Any
    scheduler: Any
    save_model: Callable[..., None]
    precision: str
    fsdp: bool
    n_batches: int
    steps_per_epoch: int
    total_steps: int
    files: CheckpointFiles
    tracking: bool = False

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def rank(self) -> int:
        return self.accelerator.process_index


def prepare_training(model: torch.nn.Module, epoch_batches: Callable[[int], list[Any]], cfg: TrainConfig,
                     out_dir: Path, params: Iterable[torch.nn.Parameter] | None, save_model: Callable[..., None],
                     unit: str) -> TrainingSetup:
    """The accelerator, the model on its device (or sharded), AdamW and the lr schedule."""
    from accelerate import Accelerator

    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not params:
        raise LumeError("nothing to train: no parameter requires a gradient")
    names = _param_names(model, params)
    precision = _training_precision(cfg.mixed_precision, model, params)
    _allow_mixed_precision(precision)
    log_with = ([t.strip() for t in cfg.log_with.split(",") if t.strip()] if isinstance(cfg.log_with, str)
                else list(cfg.log_with or [])) or None
    accelerator = Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available(),
                              log_with=log_with, project_dir=str(out_dir) if log_with else None)
    device, world, rank = accelerator.device, accelerator.num_processes, accelerator.process_index
    fsdp = world > 1 and cfg.distributed == "fsdp"
    if fsdp:
        fully_shard_model(model, device, precision)
        by_name = dict(model.named_parameters())
        params = [by_name[n] for n in names]
    elif not getattr(model, "hf_device_map", None) and params[0].device != device:
        model.to(device)

    n_batches = len(epoch_batches(0))
    if n_batches == 0:
        raise LumeError("no training batches: the training data is empty")
    steps_per_epoch = math.ceil(n_batches / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)

    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.adam_betas,
                                  eps=cfg.adam_eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total_steps, cfg.warmup_ratio, cfg.lr_schedule, cfg.restarts))
    train_model = (accelerator.prepare_model(model, device_placement=False) if world > 1 and not fsdp
                   else model)
    optimizer = accelerator.prepare_optimizer(optimizer, device_placement=False)
    return TrainingSetup(cfg, out_dir, unit, accelerator, train_model, params, names, optimizer, scheduler,
                    save_model, precision, fsdp, n_batches, steps_per_epoch, total_steps,
                    CheckpointFiles.of_process(rank, fsdp))


def start_trackers(accelerator, cfg: "TrainConfig", out_dir: Path) -> bool:
    if not cfg.log_with:
        return False
    accelerator.init_trackers(out_dir.parent.name or "lumebench", config={
        k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in cfg.to_dict().items()})
    return True
