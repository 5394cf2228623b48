"""Training settings: :class:`TrainConfig` (one training run), :class:`TrainResult`, and the way a job's
config *holds* a ``TrainConfig`` instead of copying its fields (:class:`HoldsTrain`).

Fine-tuning (:class:`lumebench.pipeline.target_config.FinetuneConfig`) and unlearning
(:class:`lumebench.pipeline.unlearn_config.UnlearnConfig`) each hold a ``train: TrainConfig`` with
their own defaults, plus their own settings. Users still set them by flat name (``lr``, ``epochs``,
``min_steps``, ...: a run config's ``overrides``, ``--set``); :meth:`HoldsTrain.from_settings` and
:meth:`HoldsTrain.settings` translate between the flat names and the composed object, and
:meth:`HoldsTrain.setting_types` gives the type of every flat name for the checks.
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from lumebench.checks import (field_checks, finite_float, fraction, nonnegative, one_of, positive_float, positive_int, setting,
                              seed as seed_value)
from lumebench.errors import LumeError


def betas(v: Any, k: str) -> list[float]:
    """AdamW's two moment coefficients, each in [0, 1)."""
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise LumeError(f"expected two numbers [beta1, beta2], got {v!r}", field=k)
    out = [finite_float(x, k, minimum=0.0) for x in v]
    if any(x >= 1.0 for x in out):
        raise LumeError(f"each beta must be >= 0 and < 1, got {v!r}", field=k)
    return out


@dataclass
class TrainConfig:
    """Hyperparameters of one training run (all recorded with the results).

    lr: peak learning rate of AdamW (reached after warm-up).
    epochs: passes over ``epoch_batches(epoch)``.
    batch_size: examples per micro-batch; the loop does not batch itself (the caller's
        ``epoch_batches`` does) but the value is recorded and used by the batch helpers.
    grad_accum: micro-batches summed into one optimizer step (effective batch = batch_size x this).
    warmup_ratio: fraction of all optimizer steps spent ramping the lr linearly up from ~0.
    lr_schedule: after warm-up, "constant", "linear" (to 0 at the last step) or "cosine" (to 0);
        "linear"/"cosine" after a warm-up is the one-cycle shape that memorises fastest (SPEC §5).
    weight_decay: AdamW decoupled decay, applied to matrices only (not norms, biases).
    max_grad_norm: gradient clipping threshold (L2 over all trainable parameters); None = no clip.
    mixed_precision: "auto" = bf16 autocast on a GPU that supports it, "no" on CPU (bf16 autocast
        on CPU is slower than fp32 there); or force "no" / "bf16" / "fp16".
    seed: seeds Python, NumPy and torch at the start (batch order is seeded by the caller).
    log_every: a plain-words log line every this many optimizer steps.
    explode_grad_norm: divergence guard; a pre-clipping gradient norm above this stops training
        (1e4: healthy runs of the tiny model stay below ~50; a run whose norm passes 1e4 has diverged).
    max_steps: stop after this many optimizer steps in total (None = run all epochs).
    save_checkpoints: write the per-epoch checkpoint (False: no resume; a divergence then rolls back
        to an in-memory copy of the trainable parameters taken at the start of the epoch).
    checkpoint_interval_s: write the end-of-epoch checkpoint only when at least this many seconds
        passed since the last one (the last epoch always writes one); 0 = every epoch. Tiny models
        run epochs of ~2 s, where a 30 MB checkpoint per epoch would be most of the I/O; between
        checkpoints the divergence guard rolls back to an in-memory copy taken at the epoch start.
    adam_betas / adam_eps: AdamW moments; (0.9, 0.95) is the usual LM-training choice.
    distributed: how several processes (``torchrun`` / ``accelerate launch``) share the work: "auto"
        = "ddp" (every process holds the whole model, gradients are averaged) or "fsdp" (torch FSDP2
        ``fully_shard``: each process holds 1/N of the parameters, gradients and AdamW state, in fp32;
        the checkpoint is one shard file per process and resumes on the same number of processes).
        Either way each process takes its share of every global batch, so the batch size is the
        global one and 1 and N processes see the same batches. One process: ignored.
    log_with: Accelerate trackers ("tensorboard", "wandb", "mlflow", ..., comma-separated, or a list
        of names and ``accelerate.tracking.GeneralTracker`` objects) that receive the training
        losses, learning rate and the caller's evaluation numbers; None = off. Not recorded in the
        checkpoint's comparison (a resumed run may log elsewhere).
    restarts: optimizer steps (0-based) at which the run starts afresh as if a new trainer were
        built: AdamW's moments are dropped and the warm-up + schedule begin again over the steps up
        to the next restart (AILS-NTUA builds a new HF Trainer for every chunk of the forget set).
        None = one schedule over the whole run. Set by the caller, not a user setting.
    """

    lr: float = setting(5e-5, positive_float)
    epochs: int = setting(1, positive_int)
    batch_size: int = setting(8, positive_int)
    grad_accum: int = setting(1, positive_int)
    warmup_ratio: float = setting(0.0, fraction)
    lr_schedule: str = setting("constant", one_of("constant", "linear", "cosine"))
    weight_decay: float = setting(0.0, nonnegative)
    max_grad_norm: float | None = setting(1.0, positive_float)
    mixed_precision: str = setting("auto", one_of("auto", "no", "bf16", "fp16"))
    seed: int = setting(0, seed_value)
    log_every: int = setting(10, positive_int)
    explode_grad_norm: float = setting(1e4, positive_float)
    max_steps: int | None = setting(None, positive_int)
    save_checkpoints: bool = True
    checkpoint_interval_s: float = setting(0.0, nonnegative)
    adam_betas: tuple[float, float] = setting((0.9, 0.95), betas)
    adam_eps: float = setting(1e-8, positive_float)
    distributed: str = setting("auto", one_of("auto", "ddp", "fsdp"))
    log_with: str | list | None = None
    restarts: list[int] | None = None

    def __post_init__(self):
        if self.lr_schedule not in ("constant", "linear", "cosine"):
            raise LumeError(f"lr_schedule must be constant, linear or cosine, got {self.lr_schedule!r}")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise LumeError(f"mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise LumeError("epochs, batch_size and grad_accum must be at least 1")
        if self.distributed not in ("auto", "ddp", "fsdp"):
            raise LumeError(f"distributed must be auto, ddp or fsdp, got {self.distributed!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise LumeError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        self.adam_betas = tuple(self.adam_betas)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}  # (asdict would deep-copy trackers)
        d["adam_betas"] = list(self.adam_betas)
        d["log_with"] = ",".join(_tracker_names(self.log_with)) or None
        if self.restarts is None:  # (added later: a checkpoint written before has no such key)
            del d["restarts"]
        return d


def _tracker_names(log_with) -> list[str]:
    items = log_with.split(",") if isinstance(log_with, str) else list(log_with or [])
    return [i.strip() if isinstance(i, str) else str(getattr(i, "name", type(i).__name__)) for i in items
            if not isinstance(i, str) or i.strip()]


@dataclass
class TrainResult:
    status: str                      # "completed", "stopped early at epoch N", "diverged at step N", ...
    steps: int                       # optimizer steps done (including those of a resumed run)
    epochs_done: int
    history: list[dict] = field(default_factory=list)     # one record per optimizer step
    epoch_logs: list[dict] = field(default_factory=list)  # one record per epoch (+ on_epoch_end numbers)
    tokens_per_s: float = 0.0        # training tokens / training seconds (this process, excludes eval)
    wall_s: float = 0.0              # total seconds, evaluation and checkpointing included (resumed runs add up)
    tokens: int = 0
    checkpoint: str | None = None    # the last good checkpoint directory
    skipped_steps: int = 0           # fp16: steps whose gradients overflowed (the GradScaler skipped them)

    @property
    def diverged(self) -> bool:
        return self.status.startswith("diverged")

    def to_dict(self) -> dict:
        return asdict(self)


class HoldsTrain:
    """Mixin of a dataclass with a ``train: TrainConfig`` field.

    ``TRAIN_KEYS``: the ``TrainConfig`` fields a user may set by name (in the order they are
    recorded); ``train_defaults()``: this job's values of them. Every other dataclass field is the
    job's own. ``ORDER`` (optional): the order of the flat names in :meth:`settings`.
    """

    TRAIN_KEYS: ClassVar[tuple[str, ...]] = ()
    ORDER: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def own_fields(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "train"]

    @classmethod
    def setting_names(cls) -> list[str]:
        names = list(cls.TRAIN_KEYS) + cls.own_fields()
        return [n for n in cls.ORDER if n in names] + [n for n in names if n not in cls.ORDER]

    @classmethod
    def setting_types(cls) -> dict[str, Any]:
        """Flat name -> type annotation (for :func:`lumebench.checks.check_fields`)."""
        train = typing.get_type_hints(TrainConfig)
        own = typing.get_type_hints(cls)
        return {n: (train[n] if n in cls.TRAIN_KEYS else own[n]) for n in cls.setting_names()}

    @classmethod
    def setting_checks(cls) -> dict[str, Any]:
        """Flat name -> the range checker its field declares (:func:`lumebench.checks.setting`)."""
        train, own = field_checks(TrainConfig), field_checks(cls)
        return {n: c for n in cls.setting_names()
                if (c := (train.get(n) if n in cls.TRAIN_KEYS else own.get(n))) is not None}

    @classmethod
    def train_defaults(cls) -> dict[str, Any]:
        return {}

    @classmethod
    def default_train(cls) -> TrainConfig:
        return TrainConfig(**cls.train_defaults())

    @classmethod
    def from_settings(cls, values: dict[str, Any]):
        """The config from flat names (unknown names are a ``TypeError``: check them first)."""
        train = {k: v for k, v in values.items() if k in cls.TRAIN_KEYS}
        own = {k: v for k, v in values.items() if k not in cls.TRAIN_KEYS}
        return cls(train=TrainConfig(**{**cls.train_defaults(), **train}), **own)

    def settings(self) -> dict[str, Any]:
        """The flat names and their values (what results record and fingerprint)."""
        import copy

        return {n: copy.deepcopy(getattr(self.train if n in self.TRAIN_KEYS else self, n))
                for n in self.setting_names()}

    def to_dict(self) -> dict[str, Any]:
        return self.settings()

