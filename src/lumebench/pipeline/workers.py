"""Run independent jobs (unlearning runs, sweep trials) in parallel processes on one machine.

A job is a picklable value given to a module-level function; each job runs in a fresh *spawned*
process (no state inherited from the parent: torch, the allocator and logging are set up as the CLI
does) with ``threads`` torch threads. Results arrive in completion order through ``on_done`` (the
caller records them as they come: an interrupted pool loses only the jobs still running, which the
steps' own resume picks up on the next run). With one worker, or one job, everything runs here.

Thread counts do not change results on CPU: a GA run of the tiny target gave bit-identical weights
at 1 and 2 threads (``benchmarks/`` and the README's parallel ``lume run`` check the leaderboard).
Progress bars are silenced in the workers (several bars on one terminal garble), their log lines
are kept.
"""

from __future__ import annotations

import os
from typing import Any, Callable

CHILD_ENV = "LUMEBENCH_WORKER"


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_workers(threads: int | None, jobs: int) -> int:
    """Processes to use: the cores divided by the threads each (1 when threads is torch's default)."""
    if not threads:
        return 1
    return max(1, min(jobs, cpu_cores() // threads))


def _child_init(threads: int) -> None:
    import torch

    from lumebench.allocator import tune_allocator
    from lumebench.progress import setup_logging

    os.environ[CHILD_ENV] = "1"
    os.environ["LUME_QUIET"] = "1"
    tune_allocator()
    setup_logging()
    torch.set_num_threads(threads)


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
    from concurrent.futures import ProcessPoolExecutor, as_completed

    results: dict[int, Any] = {}
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), initializer=_child_init,
                             initargs=(threads or 1,),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
        try:
            for f in as_completed(futures):
                i = futures[f]
                results[i] = f.result()
                on_done(jobs[i], results[i])
        except BaseException:  # a failed job: the running ones finish (their steps keep their work),
            pool.shutdown(wait=True, cancel_futures=True)  # the waiting ones do not start
            raise
    return [results[i] for i in range(len(jobs))]
