"""Progress bars and logging in words a researcher understands.

``bar(iterable, desc=..., total=...)`` is tqdm on stderr (with ETA), silenced by ``LUME_QUIET=1``.
``log`` is the package logger; the CLI configures it (``-v`` for debug).
"""

from __future__ import annotations

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


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    if os.environ.get("RANK", "0") not in ("", "0"):  # under a launcher only the main process speaks
        level = logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", datefmt="%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    # third-party chatter that says nothing to a researcher
    for name in ("transformers", "accelerate", "peft", "huggingface_hub", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
