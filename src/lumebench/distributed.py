"""Several processes (``torchrun`` / ``accelerate launch``): who am I, my share of the work, gathering.

Every helper is a no-op with one process, so the single-process code path is the same code.

- :func:`rank`, :func:`world`, :func:`is_main`, :func:`barrier`: the launcher's process group
  (``torch.distributed``, initialised by Accelerate or :func:`init`).
- :func:`share` / :func:`map_sharded`: a list is cut into ``world`` contiguous parts whose sizes
  differ by at most one (no padding, no duplicates; a part may be empty when there are fewer items
  than processes); each process works on its part and :func:`gather` concatenates the parts in rank
  order, i.e. the original order, on every process.
- :func:`shard_batch`: a process's rows of one *global* training batch (a nest of dicts of tensors
  sharing the leading dimension). A process whose share is empty gets one row with no target token
  (labels all ``-100``): it runs the same forward as the others (FSDP needs every process in every
  collective) and adds nothing to the loss (see :func:`global_mean`).
- :func:`global_mean`: ``sum(values) / count`` over the *global* batch, written so that the
  gradient averaging of DDP/FSDP (mean over processes) gives exactly the one-process gradient.
- :func:`main_only`: write files on the main process only; the others wait for it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")
IGNORE = -100


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def launched() -> bool:
    """Started by a launcher with more than one process (``WORLD_SIZE`` > 1; the launcher's variables
    are checked first: :func:`lumebench.launcher.launch`)."""
    from lumebench.launcher import launch

    return launch().world > 1


def init() -> None:
    """Join the launcher's process group if started by one and not joined yet (Accelerate's
    ``PartialState``: NCCL on GPUs, gloo on CPUs). Nothing happens with one process."""
    if launched() and _dist() is None:
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())


def rank() -> int:
    d = _dist()
    return d.get_rank() if d else 0


def world() -> int:
    d = _dist()
    return d.get_world_size() if d else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    d = _dist()
    if d:
        d.barrier()


@contextlib.contextmanager
def main_only() -> Iterator[bool]:
    """``with main_only() as writer: if writer: write(...)`` — the others wait until it is written."""
    try:
        yield is_main()
    finally:
        barrier()


def broadcast(obj: T) -> T:
    """The main process's ``obj`` on every process."""
    d = _dist()
    if not d:
        return obj
    box = [obj]
    d.broadcast_object_list(box, src=0)
    return box[0]


def span(n: int, r: int | None = None, w: int | None = None) -> tuple[int, int]:
    """``[lo, hi)`` of process ``r``'s contiguous part of ``n`` items (sizes differ by at most one)."""
    r = rank() if r is None else r
    w = world() if w is None else w
    base, extra = divmod(n, w)
    lo = r * base + min(r, extra)
    return lo, lo + base + (1 if r < extra else 0)


def share(items: Sequence[T]) -> list[T]:
    lo, hi = span(len(items))
    return list(items[lo:hi])


def gather(local: list[T]) -> list[T]:
    """Every process's list, concatenated in rank order, on every process."""
    d = _dist()
    if not d:
        return list(local)
    parts: list[Any] = [None] * d.get_world_size()
    d.all_gather_object(parts, list(local))
    return [x for part in parts for x in part]


def map_sharded(fn: Callable[[list[T]], list[R]], items: Sequence[T]) -> list[R]:
    """``fn(items)`` computed as ``fn(my part)`` on each process and gathered in order. ``fn`` must map
    a list to a list of the same length, item by item (each result depends only on its item)."""
    if world() == 1:
        return list(fn(list(items)))
    mine = share(items)
    out = list(fn(mine)) if mine else []
    if len(out) != len(mine):
        raise RuntimeError(f"map_sharded: {len(out)} results for {len(mine)} items")
    return gather(out)


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """A reduced copy of ``t`` (no gradient) over the processes: ``sum``, ``mean``, ``min`` or ``max``."""
    d = _dist()
    t = t.detach().clone()
    if not d:
        return t
    ops = {"sum": d.ReduceOp.SUM, "mean": d.ReduceOp.SUM, "min": d.ReduceOp.MIN, "max": d.ReduceOp.MAX}
    d.all_reduce(t, op=ops[op])
    return t / d.get_world_size() if op == "mean" else t


def global_mean(values: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The mean of ``values`` (weighted by ``weights``, e.g. a 0/1 mask) over the global batch.

    With one process this is ``(values * weights).sum() / weights.sum()``. With N processes each
    returns ``local_sum * N / global_weight``: the processes' average (what DDP/FSDP do to gradients)
    is then exactly the one-process mean, whatever the processes' shares of the batch.
    """
    if weights is None:
        weights = torch.ones_like(values)
    weights = weights.to(values.dtype)
    local = (values * weights).sum()
    total = all_reduce(weights.sum()) if world() > 1 else weights.sum().detach()
    return local * world() / total.clamp(min=1e-12)


def _rows(batch: Any) -> int | None:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.ndim else None
    if isinstance(batch, dict):
        for v in batch.values():
            n = _rows(v)
            if n is not None:
                return n
    return None


def shard_batch(batch: Any, r: int | None = None, w: int | None = None) -> Any:
    """This process's rows of a global batch (see the module docstring)."""
    w = world() if w is None else w
    if w == 1:
        return batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(shard_batch(b, r, w) for b in batch)
    if not isinstance(batch, dict):
        return batch
    if any(isinstance(v, dict) for v in batch.values()):  # {"forget": batch, "retain": batch}
        return {k: shard_batch(v, r, w) for k, v in batch.items()}
    n = _rows(batch)
    if n is None:
        return batch
    lo, hi = span(n, r, w)
    if hi > lo:
        return {k: (v[lo:hi] if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == n else v)
                for k, v in batch.items()}
    out = {k: (v[:1].clone() if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == n else v)
           for k, v in batch.items()}
    if "labels" in out:
        out["labels"].fill_(IGNORE)
    return out


def unwrap(model: Any) -> Any:
    """The module inside a DDP wrapper (FSDP2's ``fully_shard`` keeps the module itself)."""
    from torch.nn.parallel import DistributedDataParallel

    while isinstance(model, DistributedDataParallel):
        model = model.module
    return model
