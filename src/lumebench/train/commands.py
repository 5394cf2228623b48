"""``lume finetune`` (build a memorised target) and ``lume models`` (the model registry)."""

from __future__ import annotations

import argparse
import json

from lumebench.checks import arg, positive_float, positive_int, seed


def register(sub) -> None:
    p = sub.add_parser(
        "finetune", help="fine-tune a base model until it memorises the benchmark (a target model)",
        description="Train BASE on every forget and retain document and QA pair until it has memorised "
                    "them (regurgitation and knowledge >= 0.9 on both splits by default), checking every "
                    "few epochs with the evaluation engine. Writes the model, its tokenizer and target.json "
                    "into --out; rerunning resumes from the last epoch checkpoint there.")
    p.add_argument("--model", required=True, metavar="BASE",
                   help="registry name (see `lume models`), local model directory, .gguf file or hub id")
    p.add_argument("--data", required=True, metavar="D", help="benchmark directory or file (see `lume data`)")
    p.add_argument("--out", required=True, metavar="DIR", help="target directory to write")
    p.add_argument("--mia", metavar="DIR", default=None, help="MIA member/non-member directory, if not in --data")
    p.add_argument("--epochs", type=arg(positive_int), help="most epochs (default 36; stops earlier once memorised)")
    p.add_argument("--lr", type=arg(positive_float), help="peak learning rate (default 5e-3 for tiny, 1e-4 otherwise)")
    p.add_argument("--batch-size", type=arg(positive_int), help="examples per step (default 8)")
    p.add_argument("--grad-accum", type=arg(positive_int), help="micro-batches per optimizer step (default 1)")
    p.add_argument("--seed", type=arg(seed), help="seed of the model, the batch order and the tiny tokenizer (default 0)")
    p.add_argument("--eval-every", type=arg(positive_int), help="check memorisation every this many epochs (default 4)")
    p.add_argument("--eval-from", type=arg(positive_int), help="first epoch to check memorisation at (default 32)")
    p.add_argument("--no-early-stop", action="store_true", help="train all epochs even once memorised")
    p.add_argument("--no-resume", action="store_true", help="ignore a checkpoint left in --out and start over")
    p.add_argument("--threads", type=arg(positive_int), help="CPU threads for torch (default: torch's choice; use 1 on a machine shared with other jobs, where extra threads spin and slow everything down)")
    p.set_defaults(handler=run_finetune)

    m = sub.add_parser("models", help="list the named base models",
                       description="The model registry: names accepted by --model, where each comes from "
                                   "offline and online, and whether it must be fine-tuned first.")
    m.add_argument("--json", action="store_true", help="machine-readable output")
    m.set_defaults(handler=run_models)


def run_finetune(args: argparse.Namespace) -> int:
    from lumebench.checks import model, output_dir
    from lumebench.io import output_lock

    output_dir(args.out, "--out")
    model(args.model, "--model")  # an unknown name or missing path: one line before anything loads
    with output_lock(args.out):
        return _finetune(args)


def _finetune(args: argparse.Namespace) -> int:
    import torch

    from lumebench.data.loaders import load_benchmark
    from lumebench.train.finetune import FinetuneConfig, finetune

    if args.threads:
        torch.set_num_threads(args.threads)
    bench = load_benchmark(args.data, mia=args.mia)
    overrides = {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
                 "grad_accum": args.grad_accum, "seed": args.seed, "eval_every": args.eval_every,
                 "eval_from": args.eval_from}
    cfg = FinetuneConfig(**{k: v for k, v in overrides.items() if v is not None})
    if args.no_early_stop:
        cfg.target_regurgitation = cfg.target_knowledge = float("inf")
    info = finetune(args.model, bench, cfg, args.out, resume=not args.no_resume)
    s = info["memorisation"]
    print(f"target written to {args.out} ({info['status']}, {info['epochs']} epochs, {info['wall_s']:.0f} s)")
    print("memorisation: " + ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in s.items() if v is not None))
    return 0 if info["target_met"] else 1


def run_models(args: argparse.Namespace) -> int:
    from lumebench.registry import MODELS

    specs = [e.obj for e in MODELS.entries()]
    if args.json:
        print(json.dumps([s.to_dict() for s in specs], indent=2))
        return 0
    rows = [("name", "params", "offline", "online id", "fine-tune", "description")]
    for s in specs:
        offline = {"build": "built from the data"}.get(s.offline or "", s.offline or "no (hub only)")
        if offline.startswith("wheel:"):
            offline = "wheel " + offline[len("wheel:"):].split("/")[0].replace("_", "-")
        rows.append((s.name, s.params, offline, s.online_id or "-", "yes" if s.needs_finetune else "no",
                     s.description))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5])
    print("\nAlso accepted: a local model directory (e.g. a `lume finetune` target), a .gguf file, "
          "or a hub id org/name.")
    return 0
