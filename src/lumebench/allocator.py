"""Keep glibc's allocator from handing large tensors back to the kernel after every use.

glibc serves allocations above a (dynamic) threshold with ``mmap`` and unmaps them on free, so a
tensor of a few MiB that is allocated and freed at every decoding step (KV-cache growth, logits,
attention buffers) costs fresh page faults every time. The dynamic threshold only rises after such
a tensor is freed, which is why the first evaluation of a process was measured ~25 % slower (CPU
time) than the next ones on the tiny target. Fixing the threshold at its maximum (32 MiB on 64-bit)
and not trimming the heap below 1 GiB removes that; results are unaffected (allocation only).
Set ``LUME_MALLOPT=0`` to leave the allocator alone.
"""

from __future__ import annotations

import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20   # glibc's upper limit for this setting on 64-bit systems
TRIM_THRESHOLD = 2**30

_done = False


def tune_allocator() -> bool:
    """Apply the settings once per process (Linux/glibc only); returns whether they were applied."""
    global _done
    if _done or os.environ.get("LUME_MALLOPT", "1") == "0" or not sys.platform.startswith("linux"):
        return _done
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        _done = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        _done = False
    return _done
