"""``lume methods``: the unlearning methods with their hyperparameters and the trainer settings."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("methods", help="list the unlearning methods with their default hyperparameters",
                       description="Every registered unlearning method, its hyperparameters with their "
                                   "defaults, and the trainer settings every method accepts via --set.")
    m.set_defaults(handler=_methods)


def _methods(args) -> int:
    import dataclasses

    from lumebench.pipeline.unlearn_config import PRESETS, UnlearnConfig
    from lumebench.registry import METHODS

    for e in METHODS.entries():
        fields = dataclasses.fields(e.obj.Hparams)
        hp = ", ".join(f"{f.name}={f.default}" for f in fields) or "no hyperparameters"
        print(f"{e.name:8s} {e.help}\n{'':8s}   {hp}")
        for what, values in (("recipe (every preset)", e.obj.recipe),
                             ("literature preset", e.obj.trainer_defaults),
                             *((f"{k} preset", v) for k, v in e.obj.preset_defaults.items())):
            if values:
                print(f"{'':8s}   {what}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    trainer = ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(UnlearnConfig))
    print(f"\ntrainer settings (every method; --set KEY=VALUE): {trainer}")
    for name, preset in PRESETS.items():
        if preset:
            print(f"preset {name}: " + ", ".join(f"{k}={v}" for k, v in preset.items()))
    return 0
