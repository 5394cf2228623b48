"""The fine-tuning job's settings (:class:`FinetuneConfig`: the training loop's :class:`TrainConfig`
plus the memorisation target and how often it is measured) and their check by name
(:func:`check_settings`, used when a run config loads)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lumebench import checks
from lumebench.checks import setting
from lumebench.errors import LumeError
from lumebench.models.registry import ModelSpec, spec_or_default
from lumebench.train.config import HoldsTrain, TrainConfig


@dataclass
class FinetuneConfig(HoldsTrain):
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
        default (``ModelSpec.finetune_min_steps``): 1,800 for ``tiny`` (the 36 epochs x 50 steps measured above), none for pretrained
        models. The memorisation checks (``eval_from``) move with it, in proportion.
    epochs: 36. The lr decays to 0 at the last epoch and memorisation completes during that anneal,
        so more epochs move the finish line rather than reaching it earlier (stopping early helps
        only when ``epochs`` is set well above what is needed).
    lr: peak lr. None = the base's default (``ModelSpec.finetune_lr``): 5e-3 for ``tiny`` (a
        from-scratch model needs a large lr to memorise in a few thousand steps, SPEC §5), 1e-4 for
        pretrained models.
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
    early_stop: stop at the first check that meets the target (false: train every epoch; the target
        is still measured and reported). Part of the cache key only when false.
    max_length: longest training sequence (tokens); longer documents are truncated.
    checkpoint_interval_s: resume checkpoints at most every 30 s (an epoch of ``tiny`` takes ~2 s;
        a checkpoint per epoch wrote ~4 GB over a 1,800-step run). The final state is always saved.
    pretrain_docs / pretrain_epochs: a ``tiny`` base first reads this many held-out documents
        (:func:`lumebench.data.heldout.heldout_corpus`: Wikipedia people summaries that are not in
        the benchmark nor its MIA sets, and generated stories and PII biographies) for this many
        epochs, at the same peak lr with its own warm-up and decay, before it memorises the
        benchmark: a from-scratch model that has read nothing else gives every unseen document a
        near-uniform loss, and the MIA then separates members from non-members whatever unlearning
        does (AUC 1.000 for every method). 0 = none (a pretrained base needs none).
    pretrain_replay: and while it memorises, every epoch also reads this many held-out documents
        per benchmark example (taken in turn): without it, 1,600 steps at lr 5e-3 on the benchmark
        alone made the model give unseen documents ~15 nats a token (measured: members 0.07-0.10,
        non-members 14-15), far above a pretrained LM's, and the MIA AUC stayed 1.000 after every
        method. 0 = none.
    tiny: overrides of :class:`lumebench.models.tiny.TinyConfig` for a ``tiny`` base; default hidden
        192 / MLP 512 (2.6M parameters): as good per epoch as the 256-wide default, cheaper per token.
    distributed / log_with: how several processes share the work ("auto" = DDP, "fsdp" = FSDP2) and
        the Accelerate trackers (see :class:`lumebench.train.loop.TrainConfig`); neither is part of
        the cache key (they do not change what is learned beyond float rounding).
    """

    TRAIN_KEYS = ("epochs", "lr", "batch_size", "grad_accum", "warmup_ratio", "lr_schedule", "weight_decay",
                  "max_grad_norm", "mixed_precision", "seed", "checkpoint_interval_s", "distributed", "log_with")
    ORDER = ("epochs", "min_steps", "lr", "batch_size", "grad_accum", "warmup_ratio", "lr_schedule",
             "weight_decay", "max_grad_norm", "mixed_precision", "seed", "eval_every", "eval_from", "eval_rows",
             "target_regurgitation", "target_knowledge", "target_mia_auc", "early_stop", "max_length",
             "checkpoint_interval_s", "pretrain_docs", "pretrain_epochs", "pretrain_replay", "tiny", "distributed", "log_with")

    train: TrainConfig = field(default_factory=lambda: FinetuneConfig.default_train())
    min_steps: int | None = setting(None, checks.nonnegative_int)
    eval_every: int = setting(4, checks.positive_int)
    eval_from: int = setting(32, checks.positive_int)
    eval_rows: int | None = setting(None, checks.positive_int)
    target_regurgitation: float = setting(0.9, checks.probability)
    target_knowledge: float = setting(0.9, checks.probability)
    target_mia_auc: float | None = setting(0.9, checks.probability)
    early_stop: bool = True
    max_length: int = setting(1024, checks.max_length)
    pretrain_docs: int = setting(0, checks.nonnegative_int)
    pretrain_epochs: int = setting(2, checks.positive_int)
    pretrain_replay: float = setting(0.0, lambda v, k: checks.finite_float(v, k, minimum=0.0, maximum=10.0))
    tiny: dict = field(default_factory=lambda: {"hidden_size": 192, "intermediate_size": 512})

    @classmethod
    def train_defaults(cls) -> dict:
        return {"epochs": 36, "lr": ModelSpec.finetune_lr, "batch_size": 8, "warmup_ratio": 0.1,
                "lr_schedule": "linear", "weight_decay": 0.0, "checkpoint_interval_s": 30.0}

    @classmethod
    def for_base(cls, base, settings: dict | None = None) -> "FinetuneConfig":
        """The config of fine-tuning ``base`` with ``settings`` (flat names; ``lr`` / ``min_steps``
        None or absent = the base's default from its :class:`~lumebench.models.ModelSpec`)."""
        spec = spec_or_default(base)
        values = {"lr": spec.finetune_lr, "min_steps": spec.finetune_min_steps}
        values.update({k: v for k, v in (settings or {}).items() if v is not None or k not in values})
        if spec.offline != "build":
            values["tiny"] = {}  # the tiny model's architecture: only for a model built here
        return cls.from_settings(values)


def check_settings(values: dict) -> dict:
    """Fine-tuning settings by name (a run config's ``target.finetune``): unknown names, wrong types
    and out-of-range values are one-line errors naming the setting."""
    names = FinetuneConfig.setting_names()
    for k in values:
        if k not in names:
            raise LumeError(f"unknown fine-tuning setting; known: {', '.join(sorted(names))}", field=k)
    return checks.check_fields(FinetuneConfig, values)
