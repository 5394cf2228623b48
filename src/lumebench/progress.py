"""Progress bars and logging in words a researcher understands.

``bar(iterable, desc=..., total=...)`` is tqdm on stderr (with ETA), silenced by ``LUME_QUIET=1``.
``log`` is the package logger; the CLI configures it (``-v`` for debug).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

from tqdm.auto import tqdm

log = logging.getLogger("lumebench")


def quiet() -> bool:
    """LUME_QUIET=1, or a process other than the main one of a launcher (``RANK`` > 0)."""
    return os.environ.get("LUME_QUIET", "") not in ("", "0") or os.environ.get("RANK", "0") not in ("", "0")


def bar(iterable=None, *, desc: str = "", total: int | None = None, unit: str = "it", **kw):
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=quiet(), file=sys.stderr,
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
