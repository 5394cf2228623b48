"""Parallel rows without batching: ``N`` worker processes that share one copy of the weights, each
running its rows, MIA documents and MMLU questions as batch-1 computations — the kernels and shapes
of the official one-at-a-time run, so the same bits (``EvalConfig.parallel_rows``, ``lume eval
--parallel-rows N``).

Why: batching changes bf16 greedy tokens (:func:`lumebench.eval.mia.one_at_a_time`), so the exact
bf16 path decodes one row at a time, and one row leaves most of the machine idle (a 135M model at
batch 1 keeps one or two CPU cores busy; on a GPU, Python's kernel launches are the bottleneck and
the GPU waits). Several rows computed *side by side*, each alone, use the rest without changing a
bit of any of them.

How:
- the model is moved to shared memory once (``model.share_memory()``: CPU tensors into shared
  memory, in place; a CUDA model's tensors travel by CUDA IPC) and handed to ``N`` processes
  started with ``spawn`` (``torch.multiprocessing``), each with its own torch thread count;
  nothing of the weights is copied;
- the work items go out one at a time, the most expensive first (generation: sc rows, then longer
  prompts; MIA: longer documents; MMLU: per subject), from one queue: a worker that finishes takes
  the next, so the tail is short and the order of completion cannot change any result (each item
  is computed alone);
- every result comes back with its index and is put in place, so the output order is the input order.

The work items are defined beside their engines (this module imports none of them):
:func:`lumebench.eval.generation.generate_rows`, :func:`lumebench.eval.mia.document_stats` with a
pool, :func:`lumebench.eval.mmlu` through ``_mmlu_job``. A worker runs the unchanged engine functions on one item: generation ``generate(..., [row],
batch_size=1, speculative=False)`` (the fast engine's exact one-row path, :mod:`.batch1`) or the
reference engine on ``[row]``; MIA ``document_stats(..., [document], batch_size=1)``; MMLU one
question at a time (bf16/fp16, or the reference engine), else one share of a subject per worker
(the fast engine's shared 5-shot prefix is computed once per share). The CPU tests
(``tests/test_parallel_rows.py``) check bit-identical generations, MIA losses and MMLU predictions
against the serial batch-1 path in bf16 and fp32.

On a GPU (**untested here**: no GPU was lent while this was written) the same code runs: each worker
process gets its own CUDA context (~0.5 GB) and stream, the weights are shared by CUDA IPC (the
parent must outlive the workers, as it does), and the GPU interleaves the processes' kernels —
which fills the gaps a launch-bound batch-1 decode leaves. :func:`worker_plan` picks 4 workers
there by default; measure with ``benchmarks/gpu_speed.py``.
"""

from __future__ import annotations

import os
import queue as queue_mod
from typing import Any, Callable, Sequence

from lumebench.errors import LumeError
from lumebench.progress import bar, log

#: default worker count on a GPU (launch-bound batch-1 decoding; untested, see the module docstring)
GPU_WORKERS = 4
#: seconds without any result after which a dead worker is reported (checked every POLL_S)
POLL_S = 1.0
#: seconds a worker gets to take its stop message before it is terminated
STOP_S = 5.0


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def worker_plan(requested: int | str, device) -> tuple[int, int]:
    """``(workers, torch threads per worker)`` for ``parallel_rows=requested``.

    ``"auto"``: on a CPU one worker per usable core, one thread each (a batch-1 forward of a small
    model gains little from a second thread; two rows gain nearly 2x); on a GPU
    :data:`GPU_WORKERS`. A number ``N``: ``N`` workers sharing the usable cores
    (``max(1, cores // N)`` threads each)."""
    cores = usable_cores()
    if requested == "auto":
        n = GPU_WORKERS if getattr(device, "type", "cpu") == "cuda" else cores
    else:
        n = int(requested)
        if n < 1:
            raise LumeError(f"parallel_rows must be 'auto' or a whole number >= 1, got {requested!r}",
                            field="parallel_rows")
    return n, max(1, cores // n)


def _worker(model, tokenizer, threads: int, tasks, results) -> None:
    import torch

    import lumebench  # noqa: F401  (the pinned numerics: inherited environment, checked on import)

    os.environ["LUME_QUIET"] = "1"  # one progress bar: the parent's
    torch.set_num_threads(threads)
    model.eval()
    while True:
        msg = tasks.get()
        if msg is None:  # every result it sent has been read: skip the slow interpreter shutdown, but
            from multiprocessing import util  # release the locks it made (tqdm's), or the resource

            util._run_finalizers(0)  # tracker reports them as leaked semaphores
            os._exit(0)
        key, fn, item = msg
        try:
            results.put((key, True, fn(model, tokenizer, item)))
        except BaseException as e:  # noqa: BLE001 - sent back and raised in the parent
            try:
                results.put((key, False, e))
            except Exception:  # noqa: BLE001 - an exception that does not pickle
                results.put((key, False, RuntimeError(f"{type(e).__name__}: {e}")))


class RowPool:
    """``with RowPool(model, tokenizer, workers, threads) as pool: pool.map(fn, items, costs)``.

    ``fn(model, tokenizer, item)`` must be a module-level function (it is sent by name)."""

    def __init__(self, model, tokenizer, workers: int, threads: int = 1):
        self.model, self.tokenizer, self.workers, self.threads = model, tokenizer, workers, threads
        self.procs: list = []
        self.tasks = self.results = None

    def _start(self) -> None:
        """Start the workers (at the first :meth:`map`: a pool whose work is all reused costs nothing)."""
        import torch.multiprocessing as mp

        if next(self.model.parameters()).device.type == "cpu":
            self.model.share_memory()  # in place: the workers map the same pages
        ctx = mp.get_context("spawn")
        self.tasks, self.results = ctx.Queue(), ctx.Queue()
        self.procs = [ctx.Process(target=_worker, args=(self.model, self.tokenizer, self.threads, self.tasks,
                                                        self.results), daemon=True, name=f"lume-row-worker-{k}")
                      for k in range(self.workers)]
        try:
            for p in self.procs:
                p.start()
        except BaseException:
            self.close()
            raise
        log.info("parallel rows: %d worker processes x %d threads, one copy of the weights", self.workers,
                 self.threads)

    def map(self, fn: Callable[[Any, Any, Any], Any], items: Sequence, costs: Sequence[float],
            desc: str = "parallel rows", unit: str = "row") -> list:
        """``[fn(model, tokenizer, item) for item in items]``, computed by the workers, the costliest
        items sent first (ties: input order)."""
        if not items:
            return []
        if not self.procs:
            self._start()
        order = sorted(range(len(items)), key=lambda i: (-costs[i], i))
        for i in order:
            self.tasks.put((i, fn, items[i]))
        out: list = [None] * len(items)
        with bar(total=len(items), desc=desc, unit=unit) as progress:
            for _ in range(len(items)):
                i, ok, value = self._next()
                if not ok:  # the other items of this map are abandoned with the workers
                    self.close()
                    raise value
                out[i] = value
                progress.update(1)
        return out

    def _next(self):
        while True:
            try:
                return self.results.get(timeout=POLL_S)
            except queue_mod.Empty:
                dead = [p for p in self.procs if not p.is_alive()]
                if dead:
                    raise LumeError(f"parallel rows: worker {dead[0].name} stopped (exit code "
                                    f"{dead[0].exitcode}); run again with parallel_rows 1 to see why")

    def close(self) -> None:
        """Stop the workers: each takes a stop message and exits at once (``os._exit``: every result
        it sent has been read, and interpreter shutdown with torch loaded takes seconds); one that
        does not (busy on an abandoned item after an error) is terminated."""
        if not self.procs:
            return
        started = [p for p in self.procs if p.pid is not None]
        for _ in started:
            self.tasks.put(None)
        for p in started:
            p.join(timeout=STOP_S)
            if p.is_alive():
                p.terminate()
                p.join()
        self.procs = []
        for q in (self.tasks, self.results):
            q.cancel_join_thread()
            q.close()
        self.tasks = self.results = None  # their locks go with them (no leaked semaphore at exit)

    def __enter__(self) -> "RowPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_pool(model, tokenizer, requested: int | str | None) -> RowPool | None:
    """A :class:`RowPool` (its workers start at its first use) for ``parallel_rows=requested``, or None for serial work (``None``/1, or
    several launched processes: ``torchrun`` shares the work out already)."""
    from lumebench import distributed

    if requested in (None, 1, "1"):
        return None
    if distributed.world() > 1:
        log.info("parallel rows: off under %d launched processes (they share the work already)",
                 distributed.world())
        return None
    device = next(model.parameters()).device
    workers, threads = worker_plan(requested, device)
    return RowPool(model, tokenizer, workers, threads) if workers > 1 else None
