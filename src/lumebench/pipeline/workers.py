"""Run independent jobs (unlearning runs, sweep trials) in parallel processes on one machine.

A job is a picklable value given to a module-level function; each job runs in a fresh *spawned*
process (no state inherited from the parent: torch, the allocator and logging are set up as the CLI
does) with ``threads`` torch threads. Results arrive in completion order through ``on_done`` (the
caller records them as they come). A job that raises lets the running ones finish and starts no
other (those that finish are delivered through ``on_done`` before the error is raised again); a
worker process that dies (killed, out of memory) breaks the pool, which stops the other running
jobs too: each resumes from its last checkpoint on the next run, finished jobs are kept. With one
worker, or one job, everything runs here.

Thread counts do not change results on CPU: a GA run of the tiny target gave bit-identical weights
at 1 and 2 threads (``benchmarks/`` and the README's parallel ``lume run`` check the leaderboard).
Progress bars are silenced in the workers (several bars on one terminal garble), their log lines
are kept.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Callable

def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_workers(threads: int | None, jobs: int) -> int:
    """Processes to use: the cores divided by the threads each; 1 when threads is torch's default,
    or when a GPU is there (the runs would share one device)."""
    import torch

    if not threads or torch.cuda.is_available():
        return 1
    return max(1, min(jobs, cpu_cores() // threads))


def threads_each(threads: int | None, workers: int) -> int:
    """Torch threads of each of ``workers`` processes: ``threads``; else, under the pinned numerics,
    the fixed default (:func:`lumebench.numerics.pinned_threads`: results must not depend on the
    core count); else (``--native-kernels``) the cores shared out."""
    from lumebench.numerics import pinned_threads

    return pinned_threads(threads) or max(1, cpu_cores() // max(1, workers))


def _child_init(threads: int) -> None:
    import torch

    from lumebench.allocator import tune_allocator
    from lumebench.progress import setup_logging

    os.environ["LUME_QUIET"] = "1"
    tune_allocator()
    setup_logging()
    torch.set_num_threads(threads)


def _log_failure(e: BaseException, still_going: int) -> None:
    from concurrent.futures.process import BrokenProcessPool

    from lumebench.progress import log

    if isinstance(e, BrokenProcessPool):
        log.error("a worker process died (killed, or out of memory): the runs still going stop "
                  "here and resume from their checkpoints when the command is run again")
    elif still_going:
        log.error("a run failed (%s); the %d still going finish and are kept, no other starts",
                  " ".join(f"{type(e).__name__}: {e}".split())[:160], still_going)


def run_jobs(fn: Callable[[Any], Any], jobs: list, workers: int, threads: int | None,
             on_done: Callable[[Any, Any], None] | None = None) -> list:
    """``[fn(job) for job in jobs]`` on ``workers`` processes of ``threads`` threads each; returns the
    results in job order; ``on_done(job, result)`` is called (here) as each job finishes."""
    on_done = on_done or (lambda job, res: None)
    if workers <= 1 or len(jobs) <= 1:
        if threads:
            import torch

            torch.set_num_threads(threads)
        out = []
        for job in jobs:
            out.append(fn(job))
            on_done(job, out[-1])
        return out
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    results: dict[int, Any] = {}
    n = min(workers, len(jobs))
    waiting = iter(enumerate(jobs))
    failed: BaseException | None = None
    # a job is submitted only when a process is free, so after a failure nothing is queued that could
    # still start (the executor cannot cancel a job once it sits in its call queue)
    with ProcessPoolExecutor(max_workers=n, initializer=_child_init, initargs=(threads_each(threads, workers),),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        running = {pool.submit(fn, job): i for i, job in itertools.islice(waiting, n)}
        try:
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in finished:
                    i = running.pop(f)
                    if f.exception() is not None:
                        if failed is None:
                            failed = f.exception()
                            _log_failure(failed, len(running))
                        continue
                    results[i] = f.result()
                    on_done(jobs[i], results[i])  # the running ones that finish after a failure too
                    if failed is None:
                        for j, job in itertools.islice(waiting, 1):
                            running[pool.submit(fn, job)] = j
        except BaseException as e:  # interrupted here (Ctrl-C): the running ones finish, none starts
            _log_failure(e, 0)
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    if failed is not None:
        raise failed
    return [results[i] for i in range(len(jobs))]
