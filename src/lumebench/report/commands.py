"""``lume run [CONFIG]`` (the whole benchmark) and ``lume report RUN_DIR`` (rebuild the report)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(handler=_run)

    r = sub.add_parser("report", help="rebuild leaderboard, plots and report.html of a run from its results",
                       description="Rebuild leaderboard.md/json, plots/*.png and report.html of RUN_DIR "
                                   "from the results files alone (no model is loaded). Or compare "
                                   "method folders written by `lume unlearn`: "
                                   "lume report DIR1 DIR2 ... --out OUT_DIR.")
    r.add_argument("run_dir", nargs="+", help="a run folder (e.g. runs/default), or method folders with --out")
    r.add_argument("--out", help="with method folders: where to write the leaderboard and report")
    r.set_defaults(handler=_report)

    w = sub.add_parser("sweep", help="search a method's hyperparameters (grid or random) on validation rows, "
                                     "then evaluate the selected setting on the test rows",
                       description="Run every hyperparameter setting of SWEEP.yaml as a normal, resumable "
                                   "unlearning run on the validation rows (the SemEval validation parts, or "
                                   "a held-out half of generated documents), in parallel processes; select "
                                   "the best final score; evaluate the selected setting on the test rows. "
                                   "Writes RUNS_DIR/<name>/trials.md, selected.json and test/leaderboard.md. "
                                   "See lumebench.report.sweep for the file format.")
    w.add_argument("config", help="sweep config (.yaml)")
    w.add_argument("--runs-dir", default="runs", help="parent folder of run folders (default: runs)")
    w.set_defaults(handler=_sweep)


def _sweep(args) -> int:
    from lumebench.report.sweep import load_sweep_config, sweep

    sweep(load_sweep_config(args.config), runs_dir=args.runs_dir)
    return 0


def _run(args) -> int:
    from lumebench.report.config import load_config, to_yaml

    from lumebench.checks import output_dir

    output_dir(args.runs_dir, "--runs-dir")
    cfg = load_config(args.config)
    if args.name:
        from lumebench.report.config import NAME_RE
        from lumebench.errors import LumeError

        if not NAME_RE.match(args.name):
            raise LumeError(f"--name {args.name!r}: a run name is letters, digits, '_', '-', '.', '+' "
                            "(it names a folder inside --runs-dir)")
        cfg.name = args.name
    from lumebench.report.config import check_methods

    check_methods(cfg, args.config)  # methods, overrides, fine-tuning settings, target: before any work
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    from pathlib import Path

    from lumebench.io import output_lock
    from lumebench.report.run import run

    output_dir(Path(args.runs_dir) / cfg.name, "name")
    with output_lock(Path(args.runs_dir) / cfg.name):
        run(cfg, runs_dir=args.runs_dir, config_path=args.config)
    return 0


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
