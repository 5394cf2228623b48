"""Deterministic crash injection for the fault tests: ``LUME_FAULT=<point>`` makes the process die
at that named point with ``os._exit(137)`` (what ``kill -9`` leaves behind: no ``finally``, no
flush, no clean-up), so a test can check that a rerun recovers from exactly that state.

Points (see ``tests/test_faults.py``): ``eval:after-generation``, ``eval:after-mia``,
``finetune:after-model-save`` (final model saved, ``target.json`` not yet written),
``unlearn:after-eval`` (an evaluation appended to the curve, training not yet resumed),
``run:after-method`` (a method's done marker written, the next method not started), and
``write:<file name>`` inside every atomic write, after half of the temporary file is on disk
(e.g. ``write:nll.safetensors``, NPO's reference cache). ``LUME_FAULT_SKIP=N`` lets the point pass N
times first (crash at the N+1-th time). ``LUME_FAULT=raise:<point>`` raises a RuntimeError there
instead (an unexpected error, to test how the CLI reports one), ``oom:<point>`` a
``torch.OutOfMemoryError`` (what a full GPU raises); ``cli:handler`` is just before a command's
handler runs.
"""

from __future__ import annotations

import os

_seen: dict[str, int] = {}


def fault(point: str) -> None:
    """Die here (exit status 137, no clean-up) when ``LUME_FAULT`` names this point."""
    wanted = os.environ.get("LUME_FAULT")
    if not wanted:
        return
    if wanted == f"raise:{point}":
        raise RuntimeError(f"fault injected at {point} (LUME_FAULT)")
    if wanted == f"oom:{point}":
        import torch

        raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 426.00 MiB. Fault injected at "
                                     f"{point} (LUME_FAULT)")
    if wanted != point:
        return
    n = _seen.get(point, 0)
    _seen[point] = n + 1
    if n >= int(os.environ.get("LUME_FAULT_SKIP", "0") or 0):
        os._exit(137)
