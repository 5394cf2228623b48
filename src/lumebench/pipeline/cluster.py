"""Independent jobs (method runs, sweep test runs) as tasks on a Ray cluster: ``--cluster ray[:ADDRESS]``.

The local process pool (:mod:`.workers`) stays the default (no Ray needed); this is the same
contract on a cluster (``docs/cluster.md`` says how to start one):

- **Resources.** Every job is a Ray task that declares what it needs: ``num_cpus`` = its torch
  threads, ``num_gpus`` = ``cluster.gpus``, ``memory`` = ``cluster.memory_gb`` or
  :func:`memory_estimate` of the target. Ray places as many runs on a node as its CPUs, GPUs and
  memory hold (8 single-GPU runs on an 8-GPU node); tasks are spread over the nodes (``SPREAD``).
- **Data: a shared filesystem.** The driver (the ``lume`` command) prepares the data and builds the
  target once, before any task is submitted; a task reads the target and writes its run folder by
  path, relative to the driver's working directory. So every node must see that directory at the
  same path (NFS, Lustre, a cloud bucket mounted with the same path). Not Ray's object store: the
  target is a model folder (up to tens of GB for OLMo-7B) read by every run, and a run's checkpoints
  must outlive the node that wrote them, for the retry on another node to resume from them; the
  object store holds neither. :meth:`RayCluster.check_shared` checks it before any task starts (a
  probe task on every node must read a file the driver wrote): a node that cannot is one error line.
- **Retries.** A task whose worker process or node died runs again on a live node, up to
  ``cluster.max_retries`` times; the run's resumable steps (:mod:`.step`: ``done.json``, the
  training loop's checkpoint, the evaluations kept in ``curve.jsonl``) make the retry resume where
  the last checkpoint was: nothing finished is computed again. An exception a run raises is not
  retried (it would raise again).
- **Progress and failure.** The driver logs the cluster (nodes, CPUs, GPUs, the dashboard's URL) and
  one line per finished run (its node and time); a failed run is one line with its name and reason,
  and the others go on. The workers' own log lines stay in Ray's logs (``/tmp/ray/session_latest/
  logs/worker-*`` on each node, and the dashboard): forwarded to the driver, several runs' lines
  would interleave.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lumebench.errors import LumeError
from lumebench.progress import log

#: the driver's environment every task gets: lumebench's switches (``LUME_*``: native kernels, fault
#: injection, offline mode) and the pinned thread count (results depend on it)
PASSED_ENV = ("OMP_NUM_THREADS",)


def require_ray():
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ModuleNotFoundError:
        raise LumeError("--cluster ray needs Ray: pip install 'lumebench[ray]' (./install.sh installs it)") from None
    return ray


def memory_estimate(target) -> int | None:
    """Bytes Ray reserves for one run of ``target`` (a folder of safetensors), after the memory plan
    of ``benchmarks/memory_plan.py`` for one process: fp32 weights 4 + gradients 4 + AdamW moments 8
    + a frozen reference copy (KL, NPO-style methods) 4 = 20 bytes a parameter, plus 1 GiB
    (activations of the small batches, evaluation, the interpreter and torch). None for a target
    that is not a local folder (nothing is reserved then). A reservation for placing runs, not a
    limit; set ``cluster.memory_gb`` for large batches or LoRA (which needs less)."""
    files = sorted(Path(target).glob("*.safetensors")) if Path(str(target)).is_dir() else []
    if not files:
        return None
    from safetensors import safe_open

    n = 0
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            n += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())
    return 5 * 4 * n + 2**30


@dataclass
class Resources:
    """What one task asks Ray for."""

    cpus: float
    gpus: float = 0.0
    memory: int | None = None

    def options(self) -> dict:
        out = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        if self.memory:
            out["memory"] = int(self.memory)
        return out


def resources(threads: int | None, cluster, target) -> Resources:
    """A run's resources: its threads (the pinned default when None), ``cluster.gpus`` and memory."""
    from lumebench.numerics import pinned_threads

    memory = cluster.memory_gb * 2**30 if cluster.memory_gb else memory_estimate(target)
    return Resources(cpus=pinned_threads(threads) or 1, gpus=cluster.gpus, memory=memory)


def _task(fn: Callable, job: Any, threads: int, cwd: str) -> dict:
    """One job on a Ray worker process, set up as the local pool's processes are (allocator, logging,
    threads, no progress bars), in the driver's working directory; says where it ran."""
    from lumebench.pipeline.workers import _child_init

    os.chdir(cwd)
    _child_init(threads)
    t0 = time.time()
    result = fn(job)
    import ray

    node = f"{ray.util.get_node_ip_address()} ({ray.get_runtime_context().get_node_id()[:8]})"
    return {"result": result, "node": node, "wall_s": time.time() - t0}


def _probe(cwd: str, probe: str, token: str) -> tuple[str, str | None, str]:
    """(node, what this node cannot do or None, lumebench's version here)."""
    import ray

    import lumebench

    node = ray.util.get_node_ip_address()
    path = Path(cwd) / probe
    try:
        ok = path.read_text(encoding="utf-8") == token
        problem = None if ok else f"reads another {path}"
        if ok:
            path.with_suffix(".w").write_text(token, encoding="utf-8")  # the runs write there too
            path.with_suffix(".w").unlink()
    except OSError as e:
        problem = f"cannot see {path.parent} ({type(e).__name__})"
    return node, problem, lumebench.__version__


def reason(e: BaseException) -> str:
    """A task's failure in one line: the run's own exception, or what happened to its process/node."""
    import ray

    if isinstance(e, ray.exceptions.RayTaskError) and getattr(e, "cause", None) is not None:
        e = e.cause
        text = f"{type(e).__name__}: {e}"
    elif isinstance(e, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)):
        text = f"its worker process or node died (killed, or out of memory) and the retries ran out ({type(e).__name__})"
    else:
        first = (str(e).strip().splitlines() or [""])[0]
        text = f"{type(e).__name__}: {first}"
    return " ".join(text.split())[:240]


def failure_message(failures: list[tuple[str, str]], total: int, what: str) -> str:
    shown = "; ".join(f"{name}: {why}" for name, why in failures[:3]) + ("; ..." if len(failures) > 3 else "")
    return (f"{len(failures)} of {total} {what} failed ({shown}); the finished ones are kept: run the same "
            f"command again to resume the others from their checkpoints")


class RayCluster:
    """A connection to a Ray cluster for one command (``with RayCluster(cluster) as rc: ...``)."""

    def __init__(self, cluster):
        self.address, self.max_retries = cluster.address, cluster.max_retries
        self.dashboard: str | None = None

    def __enter__(self) -> "RayCluster":
        ray = require_ray()
        env = {k: v for k, v in os.environ.items() if k.startswith("LUME_") or k in PASSED_ENV}
        try:
            ctx = ray.init(address=self.address or None, log_to_driver=False, runtime_env={"env_vars": env})
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise LumeError(f"cannot reach the Ray cluster at {self.address or 'this machine'}: "
                            f"{' '.join(str(e).split())[:200]}") from None
        self.dashboard = getattr(ctx, "dashboard_url", None) or None
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        total = ray.cluster_resources()
        log.info("ray: %d node(s), %g CPUs, %g GPUs%s", len(nodes), total.get("CPU", 0), total.get("GPU", 0),
                 f"; dashboard: http://{self.dashboard}" if self.dashboard else "")
        return self

    def __exit__(self, *exc) -> None:
        import ray

        ray.shutdown()

    def check_shared(self, folder: Path) -> None:
        """Every live node must read a file the driver writes into ``folder`` (relative to this
        working directory, as the tasks resolve it) and write there, with this lumebench version."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        import lumebench

        token = secrets.token_hex(8)
        probe = Path(folder) / f".ray-probe-{token}"
        probe.write_text(token, encoding="utf-8")
        try:
            task = ray.remote(_probe)
            refs = [task.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(os.getcwd(), str(probe), token) for n in ray.nodes() if n.get("Alive")]
            try:
                answers = ray.get(refs, timeout=300)
            except ray.exceptions.RayError as e:
                raise LumeError(f"a probe task failed on the Ray cluster ({reason(e)}); every node needs "
                                "lumebench installed, as on this machine") from None
        finally:
            probe.unlink(missing_ok=True)
        for node, problem, version in answers:
            if problem:
                raise LumeError(f"Ray node {node} {problem}: runs on a Ray cluster need a shared filesystem "
                                f"with the run folder at the same path on every node (docs/cluster.md)")
            if version != lumebench.__version__:
                raise LumeError(f"Ray node {node} has lumebench {version}, this machine {lumebench.__version__}: "
                                "install the same version on every node")

    def run(self, fn: Callable[[Any], Any], jobs: list, names: list[str], res: Resources, threads: int,
            on_done: Callable[[Any, Any], None] | None = None, what: str = "runs") -> list[tuple[str, str]]:
        """``fn(job)`` for every job as a Ray task; ``on_done(job, result)`` here as each finishes.
        Returns the failures ``(name, one-line reason)``; the other jobs are not stopped by one."""
        import ray

        task = ray.remote(_task)
        refs = {task.options(**res.options(), max_retries=self.max_retries, retry_exceptions=False,
                             scheduling_strategy="SPREAD", name=f"lume {name}").remote(fn, job, threads, os.getcwd()): i
                for i, (job, name) in enumerate(zip(jobs, names))}
        log.info("ray: %d %s submitted (each %g CPU, %g GPU%s)", len(jobs), what, res.cpus, res.gpus,
                 f", {res.memory / 2**30:.1f} GiB" if res.memory else "")
        failures: list[tuple[str, str]] = []
        finished = 0
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                i = refs.pop(ready[0])
                try:
                    out = ray.get(ready[0])
                except ray.exceptions.RayError as e:
                    failures.append((names[i], reason(e)))
                    log.error("%s failed: %s (the others go on)", names[i], failures[-1][1])
                    continue
                finished += 1
                log.info("[%d/%d] %s done on %s in %.0f s", finished, len(jobs), names[i], out["node"], out["wall_s"])
                if on_done is not None:
                    on_done(jobs[i], out["result"])
        except KeyboardInterrupt:  # the runs still going stop here and resume on the next run
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
        return failures
