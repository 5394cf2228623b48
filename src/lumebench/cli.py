"""The ``lume`` command.

Each area of the package contributes its own sub-commands through a ``register(subparsers)``
function in its ``commands`` module (heavy imports happen inside the handlers, so ``--help`` is
instant). A handler returns an exit code; a :class:`~lumebench.errors.LumeError` becomes one line
``error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from lumebench import __version__
from lumebench.errors import LumeError

COMMAND_MODULES = (
    "lumebench.data.commands",      # lume data validate|generate|stats
    "lumebench.eval.commands",      # lume eval, lume score
    "lumebench.train.commands",     # lume finetune, lume models
    "lumebench.methods.commands",   # lume unlearn, lume methods
    "lumebench.report.commands",    # lume run, lume report
    "lumebench.parity.commands",    # lume parity, lume export
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lume",
        description="lumebench: the LUME LLM-unlearning benchmark. Get data, build a target model "
                    "that memorised it, run unlearning methods, score them exactly as the official "
                    "SemEval-2025 Task 4 script does, and read the result as a report.",
    )
    parser.add_argument("--version", action="version", version=f"lumebench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod:
                continue  # area not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from lumebench.progress import setup_logging

    setup_logging(args.verbose)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except LumeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished results are saved; run the same command again to resume",
              file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
