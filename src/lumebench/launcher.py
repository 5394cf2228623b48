"""What a launcher (``torchrun``, ``accelerate launch``) tells each process, checked at the border.

``torchrun`` gives every process it starts ``RANK`` (0 .. ``WORLD_SIZE`` - 1), ``WORLD_SIZE`` (the
number of processes), ``LOCAL_RANK`` / ``LOCAL_WORLD_SIZE`` (the same on this machine) and
``MASTER_ADDR`` / ``MASTER_PORT`` (where the process group meets): the "Environment Variables"
section of https://pytorch.org/docs/stable/elastic/run.html. ``accelerate launch`` starts several
processes through torchrun and so sets the same.

:func:`launch` reads them without importing torch (the output-folder lock asks it before anything
heavy is loaded). A value no launcher writes (``RANK=abc``, ``WORLD_SIZE=0``, ``RANK=3`` with
``WORLD_SIZE=2``, ``MASTER_PORT=99999``, several processes without ``MASTER_ADDR``) is one
:class:`~lumebench.errors.LumeError` line naming the variable, instead of a traceback from inside
``torch.distributed`` or a process that waits for peers that were never started.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lumebench.errors import LumeError

_START = ("start several processes with torchrun --standalone --nproc_per_node N, or accelerate "
          "launch, which set it; or unset it to run one process")


@dataclass(frozen=True)
class Launch:
    rank: int        # this process, 0 .. world - 1 (0 without a launcher)
    world: int       # processes in all (1 without a launcher)
    local_rank: int  # this process on its machine

    @property
    def main(self) -> bool:
        """The process that takes the output-folder locks and writes the files."""
        return self.rank == 0


def _whole(name: str, minimum: int, what: str) -> int | None:
    text = os.environ.get(name, "")
    if text.strip() == "":
        return None
    try:
        value = int(text.strip())
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise LumeError(f"environment variable: expected {what} (a whole number >= {minimum}), got {text!r}; "
                        + _START, field=name)
    return value


def launch() -> Launch:
    """This process's place among the launcher's processes (one process when none started it)."""
    world = _whole("WORLD_SIZE", 1, "the number of processes")
    rank = _whole("RANK", 0, "this process's rank")
    local_world = _whole("LOCAL_WORLD_SIZE", 1, "the number of processes on this machine")
    local_rank = _whole("LOCAL_RANK", 0, "this process's rank on its machine")
    port = _whole("MASTER_PORT", 1, "the port of the process group")
    n = world or 1
    if rank is not None and rank >= n:
        raise LumeError(f"environment variable: rank {rank} of {n} process(es) (WORLD_SIZE "
                        f"{'unset' if world is None else world}); a rank is 0 .. WORLD_SIZE - 1; " + _START,
                        field="RANK")
    if local_world is not None and local_world > n:
        raise LumeError(f"environment variable: {local_world} processes on this machine but {n} in all "
                        "(WORLD_SIZE); " + _START, field="LOCAL_WORLD_SIZE")
    if local_rank is not None and local_rank >= (local_world or n):
        raise LumeError(f"environment variable: local rank {local_rank} of {local_world or n} process(es) "
                        "on this machine; " + _START, field="LOCAL_RANK")
    if port is not None and port > 65535:
        raise LumeError(f"environment variable: {port} is not a port (1 .. 65535); " + _START,
                        field="MASTER_PORT")
    addr = os.environ.get("MASTER_ADDR")
    if addr is not None and (not addr.strip() or any(c.isspace() for c in addr)):
        raise LumeError(f"environment variable: expected a host name or address, got {addr!r}; " + _START,
                        field="MASTER_ADDR")
    if n > 1:
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if not os.environ.get(name, "").strip():
                raise LumeError(f"environment variable: not set, but WORLD_SIZE says {n} processes (the "
                                "process group meets at MASTER_ADDR:MASTER_PORT); " + _START, field=name)
    return Launch(rank=rank or 0, world=n, local_rank=local_rank or 0)
