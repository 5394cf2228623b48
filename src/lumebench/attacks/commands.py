"""``lume attack relearn | quantize | paraphrase | logit-lens``: one robustness attack on an unlearned
model, into a folder of its own (see docs/attacks.md)."""

from __future__ import annotations

import argparse
import json
import sys

from lumebench.checks import arg, positive_float, positive_int, seed

ATTACKS = {
    "relearn": "fine-tune on part T of the forget documents for k steps; how much of the rest V comes back "
               "(Deeb & Roger 2024, arXiv 2410.08827)",
    "quantize": "weight-only 8-bit / 4-bit quantisation, then the LUME metrics again (Zhang et al. 2025, "
                "arXiv 2410.16454)",
    "paraphrase": "the forget facts asked with held-out question templates and as fill-in-the-blank",
    "logit-lens": "decode every layer's residual stream: is the forgotten answer still inside? "
                  "(nostalgebraist 2020; Łucki et al. 2024, arXiv 2409.18025)",
}


def _common(p) -> None:
    p.add_argument("--model", required=True, help="the unlearned model: a directory (e.g. a run's model/), registry "
                                                  "name or hub id")
    p.add_argument("--data", required=True, help="the benchmark it was unlearned on (directory/file or online id)")
    p.add_argument("--out", required=True, help="the attack's own output folder (never inside a model's folder); "
                                                "run again to resume")
    p.add_argument("--max-new-tokens", type=arg(positive_int), default=256, help="official: 256")
    p.add_argument("--engine", choices=("fast", "reference"), default="fast", help="the evaluation engine")


def _csv(kind, flag: str, choices=None):
    """An argparse type for a comma-separated list (of positive integers, or of ``choices``)."""
    def convert(text: str):
        items = [x.strip() for x in text.split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        if kind is int:
            return [positive_int(x, flag) for x in items] if all(x.isdigit() for x in items) else _bad(text)
        bad = [x for x in items if x not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad[0]!r}; expected one or more of {', '.join(choices)}")
        return items

    def _bad(text):
        raise argparse.ArgumentTypeError(f"expected positive whole numbers separated by commas, got {text!r}")

    convert.__name__ = "list"
    return convert


# the choices of attacks.relearn / attacks.quantize, here so that `--help` loads no torch (a test
# checks they agree)
MODES = ("full", "lora")
SCHEMES = ("int8", "nf4")
BACKENDS = ("lumebench", "torchao", "bitsandbytes")


def register(sub) -> None:
    top = sub.add_parser("attack", help="robustness attacks: does the forgotten content stay forgotten?",
                         description="Attacks on an unlearned model: " + "; ".join(f"{k}: {v}" for k, v in ATTACKS.items())
                         + ". Each writes into its own --out (a resumable step) and prints its result as JSON.")
    asub = top.add_subparsers(dest="attack", metavar="ATTACK")
    top.set_defaults(handler=lambda args: top.print_help() or 0)

    p = asub.add_parser("relearn", help=ATTACKS["relearn"], description=ATTACKS["relearn"] + ".")
    _common(p)
    p.add_argument("--target", required=True, help="the model before unlearning (the control and V_target)")
    p.add_argument("--steps", type=_csv(int, "--steps"), default=[1, 5, 20], help="the k's (default: 1,5,20)")
    p.add_argument("--modes", type=_csv(str, "--modes", MODES), default=["full", "lora"],
                   help="full and/or lora fine-tuning (default: full,lora)")
    p.add_argument("--lr", type=arg(positive_float), default=None,
                   help="constant lr (default: the unlearning lr of the model family; x10 for LoRA)")
    p.add_argument("--batch-size", type=arg(positive_int), default=8)
    p.add_argument("--lora-r", type=arg(positive_int), default=8)
    p.add_argument("--train-fraction", type=float, default=0.5, help="share of each task's forget documents in T")
    p.add_argument("--seed", type=arg(seed), default=0, help="the T/V split and batch order")
    p.add_argument("--on", choices=("forget", "retain"), default="forget",
                   help="forget: T is a share of the forget documents (Deeb & Roger 2024); retain: benign "
                        "relearning, T is a share of the retain documents and V every forget document "
                        "(Hu et al. 2024)")
    p.add_argument("--no-control", action="store_true", help="do not fine-tune the target the same way")
    p.add_argument("--retrain", default=None, metavar="MODEL",
                   help="a model that never saw V (e.g. fine-tuned without it): the learning control")
    p.set_defaults(handler=cmd_attack)

    p = asub.add_parser("quantize", help=ATTACKS["quantize"], description=ATTACKS["quantize"] + ".")
    _common(p)
    p.add_argument("--schemes", type=_csv(str, "--schemes", SCHEMES), default=list(SCHEMES),
                   help="int8 and/or nf4 (default: int8,nf4)")
    p.add_argument("--backend", choices=BACKENDS, default="lumebench",
                   help="lumebench (built in), torchao (pip install torchao) or bitsandbytes (pip install bitsandbytes; on a GPU its kernels)")
    p.add_argument("--no-mia", action="store_true", help="skip the MIA before and after")
    p.set_defaults(handler=cmd_attack)

    p = asub.add_parser("paraphrase", help=ATTACKS["paraphrase"], description=ATTACKS["paraphrase"] + ".")
    _common(p)
    p.add_argument("--paraphrase", default=None, metavar="FILE",
                   help="probe rows (the data files' format; split and probe optional); default: the generated "
                        "probes of the benchmark's facts (paraphrase.jsonl beside generated data)")
    p.set_defaults(handler=cmd_attack)

    p = asub.add_parser("logit-lens", help=ATTACKS["logit-lens"], description=ATTACKS["logit-lens"] + ".")
    _common(p)
    p.add_argument("--split", choices=("forget", "retain"), default="forget", help="whose QA rows (default forget)")
    p.set_defaults(handler=cmd_attack)


def cmd_attack(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lumebench.attacks.common import AttackEval, attack_folder
    from lumebench.pipeline.model_checks import model
    from lumebench.data.loaders import load_benchmark
    from lumebench.errors import LumeError
    from lumebench.io import output_lock

    specs = [("--model", args.model)] + [(f, getattr(args, a, None)) for f, a in (("--target", "target"),
                                                                                   ("--retrain", "retrain"))]
    for flag, spec in specs:
        if spec is not None:
            model(spec, flag)
    out = attack_folder(args.out, models=[s for _, s in specs if s is not None])
    if args.attack == "relearn" and not 0.0 < args.train_fraction < 1.0:
        raise LumeError(f"expected a share between 0 and 1, got {args.train_fraction}", field="--train-fraction")
    bench = load_benchmark(args.data)
    ev = AttackEval(max_new_tokens=args.max_new_tokens, engine=args.engine)
    with output_lock(out):
        result = _run(args, bench, Path(out), ev)
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


def _run(args, bench, out, ev) -> dict:
    if args.attack == "relearn":
        from lumebench.attacks.relearn import RelearnConfig, relearn

        cfg = RelearnConfig(steps=args.steps, modes=args.modes, lr=args.lr, batch_size=args.batch_size,
                            lora_r=args.lora_r, train_fraction=args.train_fraction, seed=args.seed,
                            control=not args.no_control, on=args.on)
        from lumebench.pipeline.unlearn_config import unlearning_lr

        return relearn(args.model, args.target, bench, out, cfg, ev, retrain=args.retrain, lr_of=unlearning_lr)
    if args.attack == "quantize":
        from lumebench.attacks.quantize import QuantizeConfig, quantize

        return quantize(args.model, bench, out, QuantizeConfig(args.schemes, args.backend, not args.no_mia), ev)
    if args.attack == "paraphrase":
        from pathlib import Path

        from lumebench.attacks.paraphrase import paraphrase
        from lumebench.data.paraphrase import FILE, load_paraphrase

        probes = None
        beside = Path(args.data) / FILE
        if args.paraphrase is not None:
            probes = load_paraphrase(args.paraphrase, bench)
        elif beside.is_file():
            probes = load_paraphrase(beside, bench)
        return paraphrase(args.model, bench, out, probes, ev)
    from lumebench.attacks.logit_lens import logit_lens

    return logit_lens(args.model, bench, out, split=args.split)
