"""Progress bars and logging in words a researcher understands.

``bar(iterable, desc=..., total=...)`` is tqdm on stderr (with ETA), silenced by ``LUME_QUIET=1``.
On a terminal it redraws one line (``\r``); anywhere else (``lume run > run.log``, a cluster job's
log) it writes a plain line every 10 % of the way or every 30 s, and the last state once, instead
of thousands of ``\r`` updates (issue 29).
``log`` is the package logger; the CLI configures it (``-v`` for debug).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time

from tqdm.auto import tqdm

log = logging.getLogger("lumebench")


def quiet() -> bool:
    """LUME_QUIET=1, or a process other than the main one of a launcher (``RANK`` > 0)."""
    return os.environ.get("LUME_QUIET", "") not in ("", "0") or os.environ.get("RANK", "0") not in ("", "0")


LINE_EVERY_FRACTION = 0.10  # outside a terminal: a line per 10 % of the work ...
LINE_EVERY_S = 30.0         # ... or per 30 s, whichever comes first


class LogLines(tqdm):
    """tqdm for a stream that is not a terminal: the same text as plain lines, at a low rate."""

    def __init__(self, *args, **kw):
        self._line_n: float | None = None
        self._line_t = 0.0
        super().__init__(*args, **kw)

    def display(self, msg=None, pos=None):
        if msg == "":  # close() clearing the bar: say where it ended instead, once
            if self._line_n != self.n:
                self._write_line()
            return False
        step = (self.total or 0) * LINE_EVERY_FRACTION
        if (self._line_n is None or (step and self.n - self._line_n >= step)
                or time.monotonic() - self._line_t >= LINE_EVERY_S):
            self._write_line()
        return True

    def _write_line(self) -> None:
        self.fp.write(str(self).strip() + "\n")
        self.fp.flush()
        self._line_n, self._line_t = self.n, time.monotonic()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def bar(iterable=None, *, desc: str = "", total: int | None = None, unit: str = "it", **kw):
    stream = sys.stderr
    cls = tqdm if _is_terminal(stream) else LogLines
    return cls(iterable, desc=desc, total=total, unit=unit, disable=quiet(), file=stream,
               dynamic_ncols=True, leave=False, **kw)


def _formatter(context: str = "") -> logging.Formatter:
    return logging.Formatter(f"[%(asctime)s] {context + ': ' if context else ''}%(message)s", datefmt="%H:%M:%S")


@contextlib.contextmanager
def log_context(context: str):
    """Prefix every log line with ``context`` (e.g. ``ga/seed1``) meanwhile, so that the lines of
    method runs going on at once in several processes say which run they are about."""
    handlers = list(log.handlers)
    for h in handlers:
        h.setFormatter(_formatter(context))
    try:
        yield
    finally:
        for h in handlers:
            h.setFormatter(_formatter())


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    if os.environ.get("RANK", "0") not in ("", "0"):  # under a launcher only the main process speaks
        level = logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter())
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    # third-party chatter that says nothing to a researcher; transformers resets its logger's level
    # from TRANSFORMERS_VERBOSITY when it first configures it (after this, on import)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in ("transformers", "accelerate", "peft", "huggingface_hub", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
