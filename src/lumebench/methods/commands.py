"""``lume methods``: the unlearning methods with their sources, hyperparameters and presets, and the
trainer settings."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("methods", help="list the unlearning methods with their sources and default hyperparameters",
                       description="Every registered unlearning method: where it comes from, its hyperparameters "
                                   "with their defaults, the settings each preset gives it (the preset 'original' "
                                   "is the source as published; every number is cited in the method's file), "
                                   "and the trainer settings every method accepts via --set.")
    m.set_defaults(handler=_methods)


def _fmt(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def describe_method(entry) -> list[str]:
    """The lines of one method: help, source, hyperparameters, recipe and presets."""
    import dataclasses

    cls = entry.obj
    fields = dataclasses.fields(cls.Hparams)
    hp = ", ".join(f"{f.name}={f.default}" for f in fields) or "no hyperparameters"
    pad = " " * 11
    lines = [f"{entry.name:8s} {entry.help}", f"{pad}source: {cls.source or '(none given)'}", f"{pad}{hp}"]
    module = cls.__module__.removeprefix("lumebench.")
    presets = [("recipe (every preset)", cls.recipe), ("literature preset", cls.trainer_defaults)]
    presets += [(f"{k} preset", v) for k, v in cls.preset_defaults.items() if k != "original"]
    for what, values in presets:
        if values:
            lines.append(f"{pad}{what}: {_fmt(values)}")
    original = cls.preset_defaults.get("original")
    if original is not None:
        lines.append(f"{pad}original preset (as its source published it; numbers cited in {module}): "
                     + (_fmt(original) or "the literature settings"))
    return lines


def trainer_lines() -> list[str]:
    """The trainer settings with their defaults, the literature defaults and the presets."""
    import dataclasses

    from lumebench.pipeline.eval_settings import EvalSettings
    from lumebench.pipeline.unlearn_config import PRESETS, UnlearnConfig

    lines = [f"trainer settings (namespace train, every method; --set KEY=VALUE or train.KEY=VALUE): "
             f"{_fmt(UnlearnConfig().settings())}",
             f"evaluation settings (namespace eval: a run config's eval section, --set eval.KEY=VALUE): "
             f"{_fmt(dataclasses.asdict(EvalSettings()))}",
             "namespaces: a method's hyperparameters are method.KEY, the trainer settings train.KEY, the "
             "evaluation settings eval.KEY; a flat KEY that two of them have must name its namespace",
             f"literature trainer defaults (TOFU code base): {_fmt(UnlearnConfig.train_defaults())}"]
    for name, preset in PRESETS.items():
        lines.append(f"preset {name}: " + (_fmt(preset) or "the literature trainer defaults, then each method's "
                                                             "own settings for it"))
    return lines


def _methods(args) -> int:
    import lumebench.methods.catalog  # noqa: F401  (registration)
    from lumebench.registry import METHODS

    for e in METHODS.entries():
        print("\n".join(describe_method(e)))
    print()
    print("\n".join(trainer_lines()))
    return 0
