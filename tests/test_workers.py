"""The process pool of ``lume run`` and ``lume sweep`` (:mod:`lumebench.pipeline.workers`) when a job
fails: the running jobs finish and are delivered, the error reaches the caller with its type."""

from __future__ import annotations

import time

import pytest

from lumebench.pipeline.workers import run_jobs


def _job(name: str) -> str:
    if name == "oom":
        import torch

        time.sleep(0.5)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB")
    if name == "slow":
        time.sleep(6)
    if name.startswith("later"):
        time.sleep(2)
    return name.upper()


def test_a_job_out_of_memory_lets_the_running_one_finish_and_reaches_the_caller():
    import torch

    done = []
    with pytest.raises(torch.OutOfMemoryError, match="Tried to allocate 2.00 MiB"):
        run_jobs(_job, ["slow", "oom", "later1", "later2", "later3", "later4"], workers=2, threads=1,
                 on_done=lambda job, res: done.append((job, res)))
    # "slow" was running when "oom" failed: it finished and was delivered (its work is kept); no
    # waiting job started after the failure
    assert done == [("slow", "SLOW")]


def test_jobs_return_in_job_order_whatever_order_they_finish_in():
    done = []
    assert run_jobs(_job, ["slow", "a", "b"], workers=2, threads=1,
                    on_done=lambda job, res: done.append(job)) == ["SLOW", "A", "B"]
    assert done[-1] == "slow" and sorted(done) == ["a", "b", "slow"]
