"""The ``lume`` command.

Each area of the package contributes its own sub-commands through a ``register(subparsers)``
function in its ``commands`` module (heavy imports happen inside the handlers, so ``--help`` is
instant). A handler returns an exit code; a :class:`~lumebench.errors.LumeError` (and a bad flag)
becomes one line ``error: ...`` on stderr and exit status 2. Any other exception is a bug, not the
user's doing: it becomes one line naming it and the log file that holds its traceback, exit status 1
(``--debug`` prints the traceback instead).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from lumebench import __version__
from lumebench.errors import LumeError


class UsageError(LumeError):
    """A flag argparse could not accept (unknown, missing, wrong type or out of range)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with bad flags reported as one ``error:`` line (exit 2) instead of usage + message,
    and without exiting the interpreter (so ``main([...])`` returns like every other error)."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")

COMMAND_MODULES = (
    "lumebench.data.commands",      # lume data validate|generate|stats
    "lumebench.eval.commands",      # lume eval, lume score
    "lumebench.models.commands",    # lume models
    "lumebench.pipeline.commands",  # lume finetune, lume unlearn, lume run, lume sweep
    "lumebench.methods.commands",   # lume methods
    "lumebench.report.commands",    # lume report
    "lumebench.parity.commands",    # lume parity, lume export
    "lumebench.attacks.commands",   # lume attack relearn|quantize|paraphrase|logit-lens
)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="lume",
        description="lumebench: the LUME LLM-unlearning benchmark. Get data, build a target model "
                    "that memorised it, run unlearning methods, score them exactly as the official "
                    "SemEval-2025 Task 4 script does, and read the result as a report.",
    )
    parser.add_argument("--version", action="version", version=f"lumebench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an unexpected error (accepted after any command too)")
    parser.add_argument("--native-kernels", action="store_true",
                        help="use this CPU's own fastest kernels and torch's thread count instead of the pinned, "
                             "portable numerics (ATen AVX2 kernels, MKL_CBWR=AVX2,STRICT, oneDNN AVX2, fixed threads): faster on "
                             "AVX-512 machines, but the bits differ between machines; the run record says so "
                             "(accepted after any command too; LUME_NATIVE_KERNELS=1 does the same)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    _add_debug_everywhere(parser)
    return parser


def _add_debug_everywhere(parser: argparse.ArgumentParser) -> None:
    """``--debug`` after a sub-command too (``lume eval ... --debug``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                if "--debug" not in child._option_string_actions:
                    child.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                       help="show the full traceback of an unexpected error")
                if "--native-kernels" not in child._option_string_actions:
                    child.add_argument("--native-kernels", action="store_true", default=argparse.SUPPRESS,
                                       help="this CPU's own kernels and threads, not the portable pin")
                _add_debug_everywhere(child)


def crash_log_dir() -> Path:
    """Where tracebacks of unexpected errors go: ``$LUME_CACHE/logs`` (default ``~/.cache/lumebench/logs``)."""
    return Path(os.environ.get("LUME_CACHE") or Path.home() / ".cache" / "lumebench") / "logs"


def _report_crash(exc: BaseException, argv: list[str] | None) -> str:
    """Write the traceback to a log file; return the one line the user sees."""
    import tempfile
    import time
    import traceback

    text = (f"lume {' '.join(argv if argv is not None else sys.argv[1:])}\n"
            f"lumebench {__version__}, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n\n"
            + "".join(traceback.format_exception(exc)))
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    where = None
    for d in (crash_log_dir(), Path(tempfile.gettempdir()) / "lumebench-logs"):
        try:
            d.mkdir(parents=True, exist_ok=True)
            (d / name).write_text(text, encoding="utf-8")
            where = d / name
            break
        except OSError:
            continue
    what = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    return (f"error: unexpected {what} (a lumebench bug, not your input; "
            + (f"the traceback is in {where}; " if where else "")
            + "run again with --debug to see it, and please report it)")


def _out_of_memory(exc: BaseException) -> str | None:
    """The one line for a process (or a worker of ``lume run``) that ran out of memory — not a bug:
    the machine was asked for more than it has — or None for any other error."""
    if not (isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"):
        return None
    what = ". ".join(" ".join(str(exc).split()).split(". ")[:2]).rstrip(".")
    return (f"error: out of memory ({what}); the finished results are saved: run the same command again "
            f"with fewer --workers, a smaller batch_size or a shorter max_length to resume")


def main(argv: list[str] | None = None) -> int:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except LumeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a bug in a command module
        if debug:
            raise
        print(_report_crash(e, argv), file=sys.stderr)
        return 1
    if getattr(args, "native_kernels", False):
        from lumebench.numerics import unpin_for_native

        try:
            unpin_for_native()
        except LumeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    from lumebench.allocator import tune_allocator
    from lumebench.progress import setup_logging

    tune_allocator()
    setup_logging(args.verbose)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        from lumebench.faults import fault

        fault("cli:handler")
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
    except Exception as e:  # a bug: one line + the traceback in a log file (--debug: on stderr)
        if debug or getattr(args, "debug", False):
            raise
        print(_out_of_memory(e) or _report_crash(e, argv), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
