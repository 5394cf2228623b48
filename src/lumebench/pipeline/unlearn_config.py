"""The unlearning job's settings: :class:`UnlearnConfig` (it holds a :class:`TrainConfig`), the
per-family presets, and :func:`resolve_config`, which turns a method name and overrides by flat name
(``lr``, ``beta``, ``lora_r``, ...: a run config's ``overrides``, ``--set``) into the method object
and the config, checking every name, type and range (one-line errors naming the setting).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lumebench import checks
from lumebench.errors import LumeError
from lumebench.methods.base import Method, hparam_fields
from lumebench.methods.params import ParamSelection
from lumebench.registry import METHODS
from lumebench.train.config import HoldsTrain, TrainConfig


@dataclass
class UnlearnConfig(HoldsTrain):
    """Trainer settings (method hyperparameters live in each method's ``Hparams``).

    Literature defaults (TOFU code base, used by the LUME baselines and most SemEval entries):
    lr 1e-5 with AdamW for full fine-tuning, 10 epochs, effective batch 32, 1 epoch of linear warm-up
    out of 10 (warmup_ratio 0.1) then linear decay, weight decay 0.01. Presets below adapt them to a
    model family; anything given explicitly (``overrides``, ``--set``) wins.
    """

    TRAIN_KEYS = ("lr", "epochs", "batch_size", "grad_accum", "warmup_ratio", "lr_schedule", "weight_decay",
                  "max_grad_norm", "mixed_precision", "explode_grad_norm", "max_steps", "seed", "distributed",
                  "log_with", "adam_betas")
    ORDER = ("lr", "epochs", "batch_size", "retain_batch_size", "grad_accum", "warmup_ratio", "lr_schedule",
             "weight_decay", "max_grad_norm", "adam_betas", "mixed_precision", "explode_grad_norm", "max_steps",
             "seed", "max_length", "loss_on", "eval_every", "eval_subset", "mmlu_at", "preset", "layers", "params",
             "lora", "lora_r", "lora_alpha", "lora_dropout", "lora_targets", "prompt_format", "distributed", "log_with")
    #: settings added after results were first recorded: left out of :meth:`to_dict` (what a run's
    #: step is keyed by) while at their default, so that the runs recorded before keep their keys
    LATER = ("adam_betas", "lora_targets", "prompt_format")

    # the training run: lr, epochs, batch_size (forget examples per step), grad_accum, warm-up and
    # schedule, weight decay, clipping, precision, divergence guard (pre-clipping gradient norm),
    # max_steps, seed, several processes ("auto" = DDP, "fsdp" = FSDP2), trackers (see TrainConfig)
    train: TrainConfig = field(default_factory=lambda: UnlearnConfig.default_train())
    retain_batch_size: int | None = None  # None = batch_size
    max_length: int = 1024          # prompt is cut from the left so that the target always fits
    loss_on: str = "target"         # "target": the row's output tokens; "all": prompt too
    eval_every: str | int = "epoch"  # "epoch", "end" (the last step only) or a number of optimizer steps
    eval_subset: int | None = None  # evaluate on this many documents per split (fixed, seeded); None = all
    # "every": MMLU at every evaluation; "ends": only before unlearning and at the last evaluation
    # (the numbers the leaderboard reads), so the curve between the ends has no MMLU or final score
    mmlu_at: str = "every"
    # "auto" (the target's ModelSpec.unlearn_preset), "literature", "smollm2", "tiny", "original", "lumebench"
    preset: str = "auto"
    # which weights are trained (see lumebench.methods.params)
    layers: str | None = None
    params: str | None = None
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 64
    lora_dropout: float = 0.0
    lora_targets: list[str] | None = None  # None: every attention and MLP projection (ParamSelection)
    # training prompts: "plain" (the evaluation's raw prompt) or "chat" (the input as a user turn in
    # the tokenizer's chat template, as SHA256 trained); evaluation always uses the raw prompt
    prompt_format: str = "plain"

    @classmethod
    def train_defaults(cls) -> dict:
        return {"lr": 1e-5, "epochs": 10, "batch_size": 32, "warmup_ratio": 0.1, "lr_schedule": "linear",
                "weight_decay": 0.01}

    def selection(self) -> ParamSelection:
        targets = {"lora_targets": list(self.lora_targets)} if self.lora_targets else {}
        return ParamSelection(layers=self.layers, pattern=self.params, lora=self.lora, lora_r=self.lora_r,
                              lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout, **targets)

    def to_dict(self) -> dict[str, Any]:
        out = self.settings()
        default = UnlearnConfig().settings()
        for k in self.LATER:
            if out[k] == default[k]:
                del out[k]
        if "adam_betas" in out:
            out["adam_betas"] = list(out["adam_betas"])
        return out



#: Per-model-family settings, applied before the user's overrides.
#: tiny (the few-million-parameter target of lumebench.models.tiny, memorised with lr ~3e-3):
#: at lr 1e-5 nothing moves in 10 epochs, so lr 1e-3 (a third of its memorisation lr, the same
#: ratio of forget-lr to fine-tune-lr 1e-5/3e-5 as the 7B setting would give), batch 8 so that a
#: ~50-row forget set still gives several steps per epoch, no weight decay (it would only add noise
#: at this lr), 10 epochs. Measured: GA drives forget regurgitation to ~0 within these settings.
#: smollm2 (SmolLM2-135M): the literature recipes for every method (each method's published trainer
#: settings), plus a method's own ``preset_defaults["smollm2"]`` where the recipe was measured not to
#: move SmolLM2 (RMU; see its class).
#: original: each method as its source published it (``preset_defaults["original"]`` of the method,
#: on top of its published trainer settings): loss, reductions, parameters, optimizer, schedule,
#: batch composition, epochs, each number cited in the method's file.
#: lumebench: the literature recipes with lumebench's own variant of a method where it differs from
#: the source (e.g. SimNPO's weights before issue 24), kept so that earlier results can be rerun.
PRESETS: dict[str, dict[str, Any]] = {
    "literature": {},
    "smollm2": {},
    "tiny": {"lr": 1e-3, "batch_size": 8, "weight_decay": 0.0, "epochs": 10},
    "original": {},
    "lumebench": {},
}
#: the presets built on the published recipes (each method's ``trainer_defaults`` apply)
LITERATURE_BASED = ("literature", "smollm2", "original", "lumebench")
#: LoRA trains a few parameters from zero: the SemEval LoRA entries used lr 1e-4 (10x full FT)
LORA_LR_FACTOR = 10.0

#: every trainer setting a method override may name
TRAIN_KEYS = set(UnlearnConfig.setting_names())


# ----------------------------------------------------------------------------- config resolution

def parse_value(text: str) -> Any:
    """``--set`` values: int, float, bool (true/false), none, else the string (quotes stripped).
    ``yes``/``no`` stay text: ``--set mixed_precision=no`` names a setting, it is not False."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    low = text.lower()
    if low == "true":
        return True
    if low == "false":
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


def _betas(v, k):
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise LumeError(f"expected two numbers [beta1, beta2], got {v!r}", field=k)
    out = [checks.finite_float(x, k, minimum=0.0) for x in v]
    if any(x >= 1.0 for x in out):
        raise LumeError(f"each beta must be >= 0 and < 1, got {v!r}", field=k)
    return out


def _names(v, k):
    if not v or not all(isinstance(x, str) and x for x in v):
        raise LumeError(f"expected a list of module names such as [q_proj, v_proj], got {v!r}", field=k)
    return list(v)


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
    "adam_betas": _betas, "lora_targets": _names,
    "prompt_format": lambda v, k: checks.choice(v, k, ("plain", "chat")),
    # method hyperparameters
    "beta": checks.positive_float, "alpha": lambda v, k: checks.finite_float(v, k, minimum=0.0),
    "layer": lambda v, k: checks.integer(v, k, minimum=0),
    # how a method's terms are reduced where its sources differ (see the method files)
    "npo_reduction": lambda v, k: checks.choice(v, k, ("sequence", "token", "batch")),
    "kl_form": lambda v, k: checks.choice(v, k, ("vocab", "token")),
    "kl_on": lambda v, k: checks.choice(v, k, ("target", "all")),
    "ties_on": lambda v, k: checks.choice(v, k, ("delta", "factors")),
    "alpha_rule": lambda v, k: checks.choice(v, k, ("gap", "epoch_baseline")),
}

#: the hyperparameters of the methods added since LUME (issue 24): SatImp's exponents, CE-U's first tokens
RANGES.update({"beta1": lambda v, k: checks.finite_float(v, k, minimum=0.0),
               "beta2": lambda v, k: checks.finite_float(v, k, minimum=0.0),
               "ignore_first_n_answer_tokens": lambda v, k: checks.integer(v, k, minimum=0)})


def _coerce(defaults: dict, values: dict) -> dict:
    """Cast override values to the type of the setting's default (an int given for a float field, ...)."""
    out = {}
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
    tr_over = checks.check_fields(UnlearnConfig.setting_types(), tr_over, RANGES)
    preset = tr_over.get("preset", "auto")
    if preset == "auto":
        preset = family
    if preset not in PRESETS:
        raise LumeError(f"unknown preset '{preset}'; known: {', '.join(PRESETS)}")
    values = {**PRESETS[preset], "preset": preset}
    if preset in LITERATURE_BASED:
        values.update(cls.trainer_defaults)
    hp_preset, tr_preset = split_overrides(method_name, cls.preset_defaults.get(preset, {}))
    values.update(tr_preset)
    values.update(cls.recipe)  # what defines the method (LoRA, its rank, loss_on, ...), every preset
    lr_given = "lr" in tr_over or "lr" in tr_preset or (preset in LITERATURE_BASED and "lr" in cls.trainer_defaults)
    if tr_over.get("lora", values.get("lora")) and not lr_given:
        values["lr"] = values.get("lr", UnlearnConfig.train_defaults()["lr"]) * LORA_LR_FACTOR
    values.update(tr_over)
    values["preset"] = preset
    cfg = UnlearnConfig.from_settings(_coerce(UnlearnConfig().settings(), values))
    if cfg.loss_on not in ("target", "all"):
        raise LumeError(f"loss_on must be 'target' or 'all', got {cfg.loss_on!r}")
    if not (cfg.eval_every in checks.EVAL_EVERY or (isinstance(cfg.eval_every, int) and cfg.eval_every > 0)):
        raise LumeError(f"eval_every must be 'epoch', 'end' or a positive number of steps, got {cfg.eval_every!r}")
    if cfg.mmlu_at not in ("every", "ends"):
        raise LumeError(f"mmlu_at must be 'every' or 'ends', got {cfg.mmlu_at!r}")
    hp_defaults = {f.name: f.default for f in dataclasses.fields(cls.Hparams)}
    method = cls(cls.Hparams(**_coerce(hp_defaults, {**hp_preset, **hp_over})))
    return method, cfg


def unlearning_lr(spec, mode: str = "full") -> float:
    """The unlearning lr of the model family ``spec`` belongs to (a built target names its base; an
    unlearned model's run names its target): the size of step that unlearning took (tiny preset 1e-3,
    the literature's 1e-5 for pretrained models), x10 for LoRA as lumebench's LoRA unlearning."""
    from lumebench.io import read_json
    from lumebench.models.registry import spec_or_default

    base = str(spec) if isinstance(spec, (str, Path)) else ""
    meta = Path(base) / "target.json" if base else None
    if meta is not None and meta.is_file():
        base = str(read_json(meta, expect=dict).get("base", ""))
    preset = spec_or_default(base).unlearn_preset
    lr = PRESETS.get(preset, {}).get("lr", UnlearnConfig.train_defaults()["lr"])
    return lr * (LORA_LR_FACTOR if mode == "lora" else 1.0)
