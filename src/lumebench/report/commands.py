"""``lume report RUN_DIR``: rebuild the leaderboard, plots and report of a run from its results."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("report", help="rebuild leaderboard, plots and report.html of a run from its results",
                       description="Rebuild leaderboard.md/json, plots/*.png and report.html of RUN_DIR "
                                   "from the results files alone (no model is loaded). Or compare "
                                   "method folders written by `lume unlearn`: "
                                   "lume report DIR1 DIR2 ... --out OUT_DIR.")
    r.add_argument("run_dir", nargs="+", help="a run folder (e.g. runs/default), or method folders with --out")
    r.add_argument("--out", help="with method folders: where to write the leaderboard and report")
    r.set_defaults(handler=_report)
    c = sub.add_parser("compare", help="say which numbers and which provenance fields differ between two runs",
                       description="Compare two run folders of the same config (e.g. the same `lume run` on "
                                   "two machines): every final number and evaluation before unlearning, "
                                   "matched by method, target build and seed, and every provenance field "
                                   "(versions, CPU model and ISA, ATen kernels, MKL mode, threads, GPU). "
                                   "Exit status 0 when the numbers are identical, 1 when they differ.")
    c.add_argument("run_a", help="a run folder")
    c.add_argument("run_b", help="another run folder")
    c.set_defaults(handler=_compare)


def _report(args) -> int:
    from pathlib import Path

    from lumebench.checks import input_dir, output_dir
    from lumebench.errors import LumeError
    from lumebench.io import output_lock
    from lumebench.report.html import build_report

    paths = [input_dir(p, "run_dir") for p in args.run_dir]
    if args.out:
        output_dir(args.out, "--out")
    if args.out:
        out, sources = Path(args.out), paths
    elif len(paths) == 1:
        out, sources = paths[0], None
    else:
        raise LumeError("several folders given: name where to write the report with --out")
    with output_lock(out):
        path = build_report(out, sources)
    print((out / "leaderboard.md").read_text(encoding="utf-8"), end="")
    print(f"\nreport: {path}")
    return 0


def _compare(args) -> int:
    from lumebench.checks import input_dir
    from lumebench.report.compare import compare, format_diff

    a, b = input_dir(args.run_a, "run_a"), input_dir(args.run_b, "run_b")
    diff = compare(a, b)
    print(format_diff(diff, str(a), str(b)), end="")
    return 1 if diff["numbers"] or diff["only_a"] or diff["only_b"] else 0
