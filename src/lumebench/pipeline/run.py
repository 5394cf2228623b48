"""``lume run``: the whole benchmark in one command, resumable.

Stages (each logged; the long ones show progress bars with ETA):

1. **data** — load the configured source, or generate the offline benchmark into
   ``<runs_dir>/.cache/data/`` (reused when already there);
2. **target** — fine-tune the base model until it memorises forget + retain (``build_target``,
   cached by content in ``<runs_dir>/.cache/targets/``), unless the model already is a target;
3. **methods** — for every seed and method, :func:`lumebench.pipeline.unlearn.unlearn` into
   ``<run>/methods/<label>/seed<k>/`` (evaluating before unlearning and after every epoch): each is
   a :class:`~lumebench.step.Step` whose ``done.json`` marker makes a rerun reuse it; a
   method interrupted mid-way resumes through the training loop's checkpoint and its curve;
4. **report** — ``leaderboard.md``/``.json`` (rewritten after every method, so an interrupted run
   still has the leaderboard of what finished), ``plots/``, ``report.html`` (``lume report RUN_DIR``
   draws them for an interrupted run).

Under a launcher (``torchrun`` / ``accelerate launch``) every process runs this same function: the
fine-tuning, the unlearning and every evaluation are shared out over the processes, and everything
else (data generation, config, markers, leaderboard, report) is done by the main process alone while
the others wait, so no file is written twice.

The resolved config is saved as ``config.yaml`` + ``config.json``; re-running a run folder with a
*different* config is refused (name the new run differently), so a resumed run never mixes
settings. Adding method rows or seeds is not a different config: the finished runs are kept and
only the new ones run (a row already there must keep its settings; a dropped row's results stay in
the folder and on its leaderboard until its ``methods/<label>`` folder is deleted). ``run.json`` records provenance: versions, machine, data fingerprint, target, timings.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from lumebench import distributed
from lumebench.errors import LumeError
from lumebench.faults import fault
from lumebench.io import append_jsonl, atomic_write_json, read_json
from lumebench.progress import log
from lumebench.provenance import fingerprint, run_meta
from lumebench.pipeline.config import RunConfig
from lumebench.curve import CURVE, read_curve
from lumebench.pipeline.data import prepare_data
from lumebench.step import MARKER
from lumebench.pipeline.run_folder import method_dir, save_config
from lumebench.pipeline.target import prepare_target



# ------------------------------------------------------------------------------------- stages

def run_method(cfg: RunConfig, m, seed: int, target: str, bench, run_dir: Path) -> dict:
    """Run one method at one seed: the unlearning :class:`~lumebench.step.Step` in its folder
    (reused when done, resumed when interrupted); returns the run's record of it."""
    from lumebench.pipeline.unlearn import unlearn

    out = method_dir(run_dir, m.key, seed)
    was_done = (out / MARKER).exists()
    if not was_done:
        log.info("method %s (seed %d): %s unlearning into %s", m.key, seed,
                 "resuming" if (out / "curve.jsonl").exists() else "starting", out)
        with distributed.main_only() as writer:
            if writer:
                _share_before(run_dir, m.key, seed, cfg.eval.subset)
    # the seed by its namespace: a method hyperparameter of the same name could not take it
    overrides = {**m.overrides, "train.seed": seed}
    result = unlearn(target, bench, m.name, out, overrides=overrides, lora=m.lora, eval=cfg.eval)
    rec = read_json(out / MARKER, expect=dict) if (out / MARKER).exists() else {}
    marker = {"method": m.name, "label": m.key, "seed": seed, "status": str(result.get("status", "finished")),
              "wall_seconds": rec.get("wall_s"), "cpu_seconds": rec.get("cpu_s"), "resumed": rec.get("resumed"),
              "finished_at": rec.get("completed_at")}
    if not was_done:
        fault("run:after-method")
        log.info("method %s (seed %d): %s in %.0f s", m.key, seed, marker["status"], marker["wall_seconds"] or 0)
    return marker


def _share_before(run_dir: Path, label: str, seed: int, subset: int | None) -> None:
    """Give a method that has not started the epoch-0 evaluation the one another method made: of any
    seed without a subset, of the same seed with one (the subset is drawn with the seed).

    Every method starts from the same target and is evaluated on the same rows with the same
    settings (greedy decoding), so the evaluation before unlearning is identical; ``unlearn`` never
    recomputes a step already in its ``curve.jsonl``, so this saves one evaluation per extra run.
    (LoRA starts with a zero update, so its epoch 0 is the same model too.)
    """
    out = method_dir(run_dir, label, seed)
    if (out / "curve.jsonl").exists():
        return
    # without a subset every seed evaluates the same rows of the same target (greedy decoding): the
    # evaluation before unlearning of any seed serves; with a subset only the same seed's does
    pattern = f"*/seed{seed}/curve.jsonl" if subset is not None else "*/seed*/curve.jsonl"
    for other in sorted((run_dir / "methods").glob(pattern)):
        for rec in read_curve(other.parent):
            if rec.step == 0:
                shared = dataclasses.replace(rec, shared_from=rec.shared_from or other.parent.parent.name)
                append_jsonl(out / CURVE, shared.to_json())
                log.info("method %s (seed %d): reusing the evaluation before unlearning made for %s",
                         label, seed, shared.shared_from)
                return


class _Clock:
    """Wall and CPU seconds between laps."""

    def __init__(self):
        self.wall, self.cpu = time.time(), time.process_time()

    def lap(self) -> dict:
        now_w, now_c = time.time(), time.process_time()
        out = {"wall_s": round(now_w - self.wall, 1), "cpu_s": round(now_c - self.cpu, 1)}
        self.wall, self.cpu = now_w, now_c
        return out


def _workers(cfg: RunConfig, n_runs: int) -> int:
    """Method-run processes: the config's ``workers``, or cores / threads; 1 under a launcher (whose
    processes share each run instead)."""
    from lumebench.pipeline.workers import auto_workers

    return 1 if distributed.world() > 1 else (cfg.workers or auto_workers(cfg.threads, n_runs))


def _set_threads(cfg: RunConfig, workers: int) -> None:
    """This process's threads for the stages run here (data, fine-tuning the target). Under the
    pinned numerics a fixed number whatever the machine (:func:`lumebench.numerics.pinned_threads`:
    ``OMP_NUM_THREADS``, default 2), since float sums depend on the thread count; with
    ``--native-kernels``, ``threads`` times the workers (the stages have the cores to themselves)."""
    from lumebench.numerics import pinned_threads

    import torch

    fixed = pinned_threads(None)
    if fixed:
        torch.set_num_threads(fixed)
    elif cfg.threads:
        torch.set_num_threads(cfg.threads * workers)


def _method_job(job: tuple) -> tuple[str, dict]:
    """One method run (process entry point of the parallel pool)."""
    from lumebench.progress import log_context

    cfg, seed, m, target, bench, run_dir = job
    name = f"{m.key}/seed{seed}"
    with log_context(name):
        return name, run_method(cfg, m, seed, target, bench, run_dir)


def _first_of_each_share_group(cfg: RunConfig, jobs: list[tuple], run_dir: Path) -> list[tuple]:
    """The jobs to run before the others so that those can reuse their evaluation before unlearning
    (:func:`_share_before`): one for the whole run without a subset, one per seed with one; none
    where a finished or started run already has it."""
    def group(seed: int):
        return seed if cfg.eval.subset is not None else None

    have = set()
    for curve in (run_dir / "methods").glob("*/seed*/" + CURVE):
        if any(rec.step == 0 for rec in read_curve(curve.parent)):
            have.add(group(int(curve.parent.name[len("seed"):])))
    first = {}
    for seed, m in jobs:
        first.setdefault(group(seed), (seed, m))
    return [j for g, j in first.items() if g not in have]


def _run_methods(cfg: RunConfig, jobs: list[tuple], target: str, bench, run_dir: Path, main: bool) -> dict:
    """Every (seed, method) run: in this process, or on ``workers`` processes (the first run of each
    group sharing an evaluation before unlearning goes first, on all the threads)."""
    from lumebench.numerics import pinned_threads
    from lumebench.pipeline.workers import run_jobs, threads_each
    from lumebench.report.leaderboard import write_leaderboard

    todo = [j for j in jobs if not (method_dir(run_dir, j[1].key, j[0]) / MARKER).exists()]
    workers = _workers(cfg, len(todo))
    markers, spent, t0 = {}, [], [time.time()]
    n = len(jobs)

    def done(job: tuple, res: tuple[str, dict]) -> None:
        markers[res[0]] = res[1]
        if job in todo:  # (a run finished before is on the leaderboard already; the report rewrites it)
            if main:
                write_leaderboard(run_dir)  # an interrupted run still has the leaderboard of what finished
            spent.append(time.time() - t0[0])
            t0[0] = time.time()
        left = n - len(markers)
        if left and spent:
            per = sum(spent) / len(spent)  # wall seconds per finished run, with `workers` at once
            log.info("%d of %d method runs done; about %.0f min left", len(markers), n, left * per / 60)

    if cfg.cluster.backend == "ray":
        _run_on_ray(cfg, jobs, todo, target, bench, run_dir, done)
        return {f"{m.key}/seed{seed}": markers[f"{m.key}/seed{seed}"] for seed, m in jobs
                if f"{m.key}/seed{seed}" in markers}
    if workers <= 1:
        if cfg.threads or pinned_threads(None):  # a method run's threads, as on a worker process
            import torch

            torch.set_num_threads(threads_each(cfg.threads, 1))
        for i, (seed, m) in enumerate(jobs, 1):
            log.info("[%d/%d] %s, seed %d", i, n, m.key, seed)
            done((seed, m), _method_job((cfg, seed, m, target, bench, run_dir)))
        return markers
    for seed, m in jobs:  # finished runs: read back here
        if (seed, m) not in todo:
            done((seed, m), _method_job((cfg, seed, m, target, bench, run_dir)))
    first = _first_of_each_share_group(cfg, todo, run_dir)
    rest = [j for j in todo if j not in first]
    log.info("%d method runs on %d processes of %s thread(s) each%s", len(todo), workers, cfg.threads or "all",
             f", after {len(first)} that evaluate the target before unlearning once" if first else "")
    each = threads_each(cfg.threads, workers)  # all the cores, shared out over fewer runs when fewer are left

    def plan(pairs: list) -> tuple[int, int]:
        w = max(1, min(workers, len(pairs)))
        if pinned_threads(None):  # pinned numerics: every method run on the same fixed threads
            return w, each
        return w, max(1, each * workers // w)

    for pairs, (w, threads) in ((first, plan(first)), (rest, plan(rest))):
        run_jobs(_method_job, [(cfg, seed, m, target, bench, run_dir) for seed, m in pairs], w, threads,
                 on_done=lambda job, res: done((job[1], job[2]), res))
    return {f"{m.key}/seed{seed}": markers[f"{m.key}/seed{seed}"] for seed, m in jobs}


def _run_on_ray(cfg: RunConfig, jobs: list[tuple], todo: list[tuple], target: str, bench, run_dir: Path,
                done) -> None:
    """Every (seed, method) run as a Ray task (:mod:`lumebench.pipeline.cluster`): the first of each
    group sharing an evaluation before unlearning first, then the others; a failed run lets the
    others finish, then is one error line saying how to resume."""
    from lumebench.pipeline.cluster import RayCluster, failure_message, resources

    for seed, m in jobs:  # finished runs: read back here
        if (seed, m) not in todo:
            done((seed, m), _method_job((cfg, seed, m, target, bench, run_dir)))
    if not todo:
        return
    first = _first_of_each_share_group(cfg, todo, run_dir)
    res = resources(cfg.threads, cfg.cluster, target)
    failures = []
    with RayCluster(cfg.cluster) as rc:
        rc.check_shared(run_dir)
        for pairs in (first, [j for j in todo if j not in first]):
            failures += rc.run(_method_job, [(cfg, seed, m, target, bench, run_dir) for seed, m in pairs],
                               [f"{cfg.name}/{m.key}/seed{seed}" for seed, m in pairs], res, int(res.cpus),
                               on_done=lambda job, r: done((job[1], job[2]), r), what="method runs")
    if failures:
        raise LumeError(failure_message(failures, len(todo), "method runs"), path=str(run_dir))


def _run_builds(cfg: RunConfig, runs_dir: Path, cache: Path) -> Path:
    """A run over several target builds (``target.seeds``): one run folder per build inside the run's
    folder, then the leaderboard and report over all of them."""
    from lumebench.report.html import build_report

    run_dir = runs_dir / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(run_dir, cfg)
    builds = []
    for ts in cfg.target.seeds:
        log.info("run %s: target build %d of %d (fine-tuning seed %d)", cfg.name, len(builds) + 1,
                 len(cfg.target.seeds), ts)
        sub = dataclasses.replace(cfg, name=f"target{ts}", target=dataclasses.replace(
            cfg.target, seeds=None, finetune={**cfg.target.finetune, "seed": ts}))
        builds.append(run(sub, runs_dir=run_dir, cache=cache, quiet=True))
    if distributed.is_main():
        atomic_write_json(run_dir / "run.json", {"name": cfg.name, "target_builds": [b.name for b in builds],
                                                  "seeds": cfg.seeds, "target_seeds": cfg.target.seeds})
        _print_leaderboard(run_dir, build_report(run_dir))
    distributed.barrier()
    return run_dir


def _print_leaderboard(run_dir: Path, report: Path) -> None:
    print((run_dir / "leaderboard.md").read_text(encoding="utf-8"), end="")
    rel = os.path.relpath(report)
    print(f"\nreport: {report if rel.startswith('..') else rel}")


def run(cfg: RunConfig, runs_dir: str | Path = "runs", config_path: str | None = None, *,
        cache: Path | None = None, quiet: bool = False) -> Path:
    """Run (or resume) the benchmark described by ``cfg``; returns the run folder. ``cache``: the
    cached data and targets (default ``<runs_dir>/.cache``); ``quiet``: no leaderboard printed."""
    from lumebench.report.html import build_report

    t_start = time.time()
    distributed.init()
    main = distributed.is_main()
    runs_dir = Path(runs_dir)
    run_dir = runs_dir / cfg.name
    cache = cache or runs_dir / ".cache"
    if cfg.target.seeds:
        return _run_builds(cfg, runs_dir, cache)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(run_dir, cfg)
    _set_threads(cfg, _workers(cfg, len(cfg.seeds) * len(cfg.methods)))
    log.info("run %s: %d method(s) x %d seed(s) into %s", cfg.name, len(cfg.methods), len(cfg.seeds), run_dir)

    prov_path = run_dir / "run.json"
    prov = read_json(prov_path, expect=dict) if prov_path.exists() else {}
    timings: dict[str, dict] = {}
    clock = _Clock()
    bench = prepare_data(cfg.data, cache)
    timings["data"] = clock.lap()
    fp = bench.fingerprint()
    if prov.get("data_fingerprint") not in (None, fp):
        raise LumeError(f"the data changed since this run started (fingerprint {prov['data_fingerprint']} "
                        f"-> {fp}); use another --name", path=str(run_dir))
    target = prepare_target(cfg.target, bench, cache)
    timings["target"] = clock.lap()
    meta = prov.get("meta") or run_meta(seed=cfg.seeds[0], config=cfg.to_dict(), data_fingerprint=fp)
    prov.update({"name": cfg.name, "seeds": cfg.seeds, "data_fingerprint": fp, "data_source": bench.source,
                 "target": target, "config_fingerprint": fingerprint(cfg.to_dict()), "meta": meta})
    target_json = Path(target) / "target.json"
    if target_json.exists():
        prov["target_info"] = read_json(target_json, expect=dict)
    prov["processes"] = distributed.world()
    if main:
        atomic_write_json(prov_path, prov)

    jobs = [(seed, m) for seed in cfg.seeds for m in cfg.methods]
    markers = _run_methods(cfg, jobs, target, bench, run_dir, main)
    timings["methods"] = clock.lap()
    if cfg.attacks is not None and distributed.world() == 1:
        # the robustness attacks (lumebench.attacks), imported only when configured
        from lumebench.pipeline.attack_stage import run_attacks

        prov["attacks"] = run_attacks(cfg, run_dir, target, bench, cache)
        timings["attacks"] = clock.lap()
    elif cfg.attacks is not None:
        log.warning("the attacks run in one process: run the same `lume run` again without the launcher to add them")
    if not main:  # the main process writes the report
        distributed.barrier()
        log.info("run %s: done in %.0f s (process %d)", cfg.name, time.time() - t_start, distributed.rank())
        return run_dir
    report = build_report(run_dir)
    timings["report"] = clock.lap()
    prov["methods"] = markers
    prov["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    # wall and process CPU seconds of this invocation's stages (a resumed run only counts what it did)
    prov["timings_last_invocation"] = {**timings, "total": {"wall_s": round(time.time() - t_start, 1),
                                                            "cpu_s": round(time.process_time(), 1)}}
    atomic_write_json(prov_path, prov)
    if not quiet:
        _print_leaderboard(run_dir, report)
    log.info("run %s: done in %.0f s", cfg.name, time.time() - t_start)
    distributed.barrier()
    return run_dir
