"""The unlearning job's settings: :class:`UnlearnConfig` (the trainer settings; it holds a
:class:`TrainConfig`), the per-family presets, and :func:`resolve_config`, which turns a method name
and overrides (a run config's ``overrides``, ``--set``) into the method object and the config,
checking every name, type and range (one-line errors naming the setting).

Overrides have three namespaces (:func:`split_overrides`): ``method`` (the method's ``Hparams``),
``train`` (:class:`UnlearnConfig`) and ``eval`` (:class:`lumebench.pipeline.eval_settings.EvalSettings`).
A flat name that only one of them has needs no prefix (``beta``, ``lr``, ``mmlu_at``); the same
name in two is an error that asks for ``method.NAME`` or ``train.NAME`` — so a hyperparameter may
be called like a trainer setting without taking its value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lumebench import checks
from lumebench.checks import one_of, setting
from lumebench.errors import LumeError
from lumebench.methods.base import Method, hparam_fields
from lumebench.methods.params import ParamSelection
from lumebench.pipeline.eval_settings import NAMES as EVAL_NAMES, EvalSettings, check as check_eval
from lumebench.registry import METHODS
from lumebench.train.config import HoldsTrain, TrainConfig


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


@dataclass
class UnlearnConfig(HoldsTrain):
    """Trainer settings: the ``train`` namespace of overrides (method hyperparameters live in each
    method's ``Hparams``, the ``method`` namespace; evaluation settings in
    :class:`lumebench.pipeline.eval_settings.EvalSettings`, the ``eval`` namespace).

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
             "seed", "max_length", "loss_on", "preset", "layers", "params",
             "lora", "lora_r", "lora_alpha", "lora_dropout", "lora_targets", "prompt_format", "distributed", "log_with")
    #: settings added after results were first recorded: left out of :meth:`to_dict` (what a run's
    #: step is keyed by) while at their default, so that the runs recorded before keep their keys
    LATER = ("adam_betas", "lora_targets", "prompt_format")

    # the training run: lr, epochs, batch_size (forget examples per step), grad_accum, warm-up and
    # schedule, weight decay, clipping, precision, divergence guard (pre-clipping gradient norm),
    # max_steps, seed, several processes ("auto" = DDP, "fsdp" = FSDP2), trackers (see TrainConfig)
    train: TrainConfig = field(default_factory=lambda: UnlearnConfig.default_train())
    retain_batch_size: int | None = setting(None, checks.positive_int)  # None = batch_size
    max_length: int = setting(1024, checks.max_length)  # prompt is cut from the left so that the target always fits
    loss_on: str = setting("target", one_of("target", "all"))  # "target": the row's output tokens; "all": prompt too
    # "auto" (the target's ModelSpec.unlearn_preset), "literature", "smollm2", "tiny", "original", "lumebench"
    preset: str = setting("auto", one_of("auto", *PRESETS))
    # which weights are trained (see lumebench.methods.params)
    layers: str | None = setting(None, _layers)
    params: str | None = setting(None, checks.regex)
    lora: bool = False
    lora_r: int = setting(16, checks.positive_int)
    lora_alpha: int = setting(64, checks.positive_int)
    lora_dropout: float = setting(0.0, checks.fraction)
    # None: every attention and MLP projection (ParamSelection)
    lora_targets: list[str] | None = setting(None, _names)
    # training prompts: "plain" (the evaluation's raw prompt) or "chat" (the input as a user turn in
    # the tokenizer's chat template, as SHA256 trained); evaluation always uses the raw prompt
    prompt_format: str = setting("plain", one_of("plain", "chat"))

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


#: the namespaces of an override's name: a method's hyperparameters, the trainer settings, the
#: evaluation settings (:class:`lumebench.pipeline.eval_settings.EvalSettings`)
NAMESPACES = ("method", "train", "eval")
_WHAT = {"method": "hyperparameter of {m}", "train": "trainer setting", "eval": "evaluation setting"}


@dataclass
class Overrides:
    """Overrides split by namespace; ``chosen``: each flat name and where it went (``train.lr``)."""

    method: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    eval: dict = field(default_factory=dict)
    chosen: dict = field(default_factory=dict)

    def said(self, method_name: str) -> list[str]:
        """Where each flat name went, in words (``lr: trainer setting``)."""
        return [f"{k}: {_WHAT[to.partition('.')[0]].format(m=method_name)} ({to})" for k, to in self.chosen.items()]


def split_overrides(method_name: str, overrides: dict[str, Any] | None) -> Overrides:
    """Overrides by namespace. A key is ``NAMESPACE.NAME`` (``method.beta``, ``train.lr``,
    ``eval.every``), or a mapping under a namespace's name (``{train: {lr: 1e-4}}``), or a flat name
    that exactly one namespace has (``beta``, ``lr``, ``mmlu_at``); a flat name two namespaces have
    (a hyperparameter called ``seed``) must say which. Unknown name -> one-line error."""
    cls = METHODS.get(method_name)
    hp_keys = hparam_fields(cls)
    names = {"method": set(hp_keys), "train": TRAIN_KEYS, "eval": set(EVAL_NAMES)}
    out = Overrides()
    items = []
    for k, v in (overrides or {}).items():
        if k in NAMESPACES and isinstance(v, dict):
            items += [(f"{k}.{n}", x) for n, x in v.items()]
        else:
            items.append((k, v))
    for k, v in items:
        ns, dot, name = k.partition(".")
        if dot and ns in NAMESPACES:
            if name not in names[ns]:
                raise LumeError(f"not a {_WHAT[ns].format(m=repr(method_name))}; "
                                f"{_known(method_name, hp_keys, ns)}", field=k)
        else:
            name = k
            found = [n for n in NAMESPACES if k in names[n]]
            if len(found) > 1:
                raise LumeError(f"both a {' and a '.join(_WHAT[n].format(m=repr(method_name)) for n in found)}: "
                                f"write {' or '.join(f'{n}.{k}' for n in found)}", field=k)
            if not found:
                raise LumeError(f"unknown setting for method '{method_name}'; "
                                f"{_known(method_name, hp_keys, None)}", field=k)
            ns = found[0]
        if ns == "eval":
            name = EvalSettings.ALIASES.get(name, name)  # (the older flat names of two settings)
        if not dot:
            out.chosen[k] = f"{ns}.{name}"
        getattr(out, ns)[name] = v
    return out


def _known(method_name: str, hp_keys: dict, ns: str | None) -> str:
    parts = {"method": "its hyperparameters: " + (", ".join(f"{n}={d}" for n, d in hp_keys.items()) or "(none)"),
             "train": "trainer settings: " + ", ".join(sorted(TRAIN_KEYS)),
             "eval": "evaluation settings: " + ", ".join(EVAL_NAMES)}
    return "; ".join(v for k, v in parts.items() if ns in (None, k))


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


def resolve_config(method_name: str, overrides: dict | Overrides | None, *, family: str = "literature"
                   ) -> tuple[Method, UnlearnConfig]:
    """The method object and its trainer settings from ``overrides`` (see :func:`split_overrides`;
    the evaluation settings among them are checked here and otherwise left to the caller): the
    preset's settings, the method's recipe, then the overrides, each checked by the range its field
    declares (:func:`lumebench.checks.check_fields`)."""
    split = overrides if isinstance(overrides, Overrides) else split_overrides(method_name, overrides)
    cls = METHODS.get(method_name)
    hp_over = checks.check_fields(cls.Hparams, split.method)
    tr_over = checks.check_fields(UnlearnConfig, split.train)
    check_eval(split.eval)
    preset = tr_over.get("preset", "auto")
    if preset == "auto":
        preset = family
    if preset not in PRESETS:
        raise LumeError(f"unknown preset '{preset}'; known: {', '.join(PRESETS)}")
    values = {**PRESETS[preset], "preset": preset}
    if preset in LITERATURE_BASED:
        values.update(cls.trainer_defaults)
    in_preset = split_overrides(method_name, cls.preset_defaults.get(preset, {}))
    tr_preset = in_preset.train
    values.update(tr_preset)
    values.update(cls.recipe)  # what defines the method (LoRA, its rank, loss_on, ...), every preset
    lr_given = "lr" in tr_over or "lr" in tr_preset or (preset in LITERATURE_BASED and "lr" in cls.trainer_defaults)
    if tr_over.get("lora", values.get("lora")) and not lr_given:
        values["lr"] = values.get("lr", UnlearnConfig.train_defaults()["lr"]) * LORA_LR_FACTOR
    values.update(tr_over)
    values["preset"] = preset
    cfg = UnlearnConfig.from_settings(_coerce(UnlearnConfig().settings(), values))
    hp_defaults = {f.name: f.default for f in dataclasses.fields(cls.Hparams)}
    method = cls(cls.Hparams(**_coerce(hp_defaults, {**in_preset.method, **hp_over})))
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
