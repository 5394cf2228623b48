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
