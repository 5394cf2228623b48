"""``lume sweep`` on Ray Tune (``cluster: ray[:ADDRESS]``): every hyperparameter setting is a Tune trial.

- **Settings.** ``grid`` and ``random``: the settings :func:`~.sweep.trial_settings` makes, the same
  as on the local pool (Tune is given their list as a grid over its index), in the same folders
  ``trials/<k>/``, so the runs, the trial table and the selection are those of a local sweep.
  ``optuna``: Optuna's TPE sampler, seeded with the sweep's ``seed``, proposes ``trials`` settings
  from ``params`` (a list is a choice; ``uniform``/``log_uniform`` ranges) as results come in; a
  proposal lives in ``trials/o-<hash of its setting>-<Tune's trial id>/`` (two proposals of one
  setting never share a folder).
- **Trials.** A trial runs its setting at every seed, each a normal resumable unlearning run
  (:func:`~.trials.run_trial`) given the *validation* rows only, and reports the mean validation
  ``select_on`` score. It asks Ray for what a method run of ``lume run`` asks
  (:func:`~.cluster.resources`); a trial whose process or node died is run again (``max_retries``)
  and resumes from its checkpoint.
- **ASHA** (``scheduler: asha``): the trial reports every evaluation of its curve (epoch, validation
  score) as it is made; asynchronous successive halving stops a trial that is not in the best
  ``1/reduction_factor`` of the trials seen at a milestone (``grace_period`` epochs, then times
  ``reduction_factor``). A stopped trial keeps its (unfinished) folder and is listed as
  ``stopped``; only trials that ran every epoch are selected from, as in a local sweep. Which trials
  stop depends on the order results arrive (ASHA does not wait for the others).
- **Selection and test** as on the local pool (:func:`~.trials.record_selection`): the best mean
  validation score; then the selected setting runs on the test rows (Ray tasks), the only runs that
  see them.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from lumebench.errors import LumeError
from lumebench.io import read_json
from lumebench.metrics_table import metric, summary_key
from lumebench.step import MARKER
from lumebench.progress import log
from lumebench.provenance import fingerprint


def folder_key(setting: dict, trial_id: str) -> str:
    """An Optuna proposal's folder name."""
    return f"o-{fingerprint(setting)[:8]}-{trial_id}"


def _space(params: dict) -> dict:
    """``params`` as Tune's search space (for Optuna)."""
    from ray import tune

    out = {}
    for name, spec in params.items():
        if isinstance(spec, list):
            out[name] = tune.choice(spec)
        elif "uniform" in spec:
            out[name] = tune.uniform(*spec["uniform"])
        else:
            out[name] = tune.loguniform(*spec["log_uniform"])
    return out


def _mode(cfg) -> str:
    """Tune's direction: that of the ``select_on`` metric in the table."""
    return "max" if metric(cfg.select_on).sign() > 0 else "min"


def _trial(config: dict, ctx: dict) -> None:
    """One Tune trial, on a Ray worker: its setting at every seed on the validation rows."""
    from ray import tune

    from lumebench.pipeline.trials import run_trial, trial_job
    from lumebench.pipeline.workers import _child_init

    os.chdir(ctx["cwd"])
    _child_init(ctx["threads"])
    cfg = ctx["cfg"]
    if "trial" in config:  # grid / random: an index into the listed settings
        k, setting, key = config["trial"], ctx["settings"][config["trial"]], str(config["trial"])
    else:  # optuna: the proposal itself
        setting = {n: config[n] for n in cfg.params}
        k = key = folder_key(setting, tune.get_context().get_trial_id())
    seen: set[int] = set()

    def on_evaluation(rec) -> None:  # ASHA: every point of the validation curve, once
        score = rec.summary.get(summary_key(cfg.select_on))
        if rec.step not in seen and isinstance(score, (int, float)):
            seen.add(rec.step)
            tune.report({"epoch": rec.epoch, "score": score, "trial": k, "folder": key})

    scores = []
    for seed in cfg.seeds:
        job = trial_job(cfg, key, seed, setting, ctx["target"], ctx["bench"], ctx["out"])
        if cfg.scheduler:
            job["on_evaluation"] = on_evaluation
        score = run_trial(job)["final"].get(summary_key(cfg.select_on))
        if isinstance(score, (int, float)):
            scores.append(score)
    if scores and not seen:
        tune.report({"score": statistics.fmean(scores), "trial": k, "folder": key})


def _progress_callback():
    """A Tune callback logging one line per finished, stopped or failed trial."""
    from ray import tune

    from lumebench.pipeline.cluster import reason

    class Progress(tune.Callback):
        done = 0

        def on_trial_complete(self, iteration, trials, trial, **info):
            r = trial.last_result or {}
            self.done += 1
            log.info("[%d/%d] sweep trial %s done (validation score %s, epoch %s)", self.done, len(trials),
                     r.get("folder", trial.trial_id), _fmt(r.get("score")), r.get("epoch", "last"))

        def on_trial_error(self, iteration, trials, trial, **info):
            err = trial.get_error() if hasattr(trial, "get_error") else None
            if isinstance(err, str):  # the traceback's text: its last line is the exception
                err = RuntimeError(([x for x in err.strip().splitlines() if x.strip()] or ["?"])[-1].strip())
            log.error("sweep trial %s %s failed: %s (the others go on)", trial.trial_id,
                      json.dumps(trial.config), reason(err) if err else "see the Ray logs")

    return Progress()


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "—"


def _collect(cfg, grid, settings: list[dict] | None, out: Path) -> tuple[list[dict], list[dict]]:
    """(settings tried, in trial order; one result per trial and seed) from the trial folders:
    a finished run gives its final validation summary, a stopped or failed one none."""
    tried = list(settings) if settings is not None else []
    keys = [str(k) for k in range(len(tried))]
    if settings is None:  # in Tune's order of the proposals
        for r in grid:
            if r.config:
                tried.append({n: r.config[n] for n in cfg.params})
                keys.append((r.metrics or {}).get("folder") or "")  # none: failed before its first report
    results = []
    for k, key in enumerate(keys):
        for seed in cfg.seeds:
            folder = out / "trials" / key / f"seed{seed}"
            if key and (folder / MARKER).exists():
                state = read_json(folder / "unlearn.json", expect=dict)
                results.append({"trial": k, "seed": seed, "status": state.get("status", "finished"),
                                "final": state.get("final") or {}, "out": str(folder)})
            else:
                results.append({"trial": k, "seed": seed, "status": "stopped" if key else "failed", "final": {},
                                "out": str(folder)})
    return tried, results


def sweep_on_ray(cfg, out: Path, target: str, val, test, settings: list[dict] | None) -> Path:
    """The trials as Ray Tune trials, the selection, the test runs as Ray tasks (module docstring)."""
    from lumebench.pipeline.cluster import RayCluster, failure_message, require_ray, resources
    from lumebench.pipeline.trials import record_selection, report_test, run_trial, selected_test_jobs

    require_ray()
    from ray import tune

    res = resources(cfg.threads, cfg.cluster, target)
    with RayCluster(cfg.cluster) as rc:
        rc.check_shared(out)
        ctx = {"cfg": cfg, "settings": settings, "target": target, "bench": val, "out": out,
               "threads": int(res.cpus), "cwd": os.getcwd()}
        trainable = tune.with_resources(tune.with_parameters(_trial, ctx=ctx), {
            "cpu": res.cpus, "gpu": res.gpus, **({"memory": res.memory} if res.memory else {})})
        if settings is not None:
            space, search, samples = {"trial": tune.grid_search(list(range(len(settings))))}, None, 1
        else:
            from ray.tune.search.optuna import OptunaSearch

            space, search, samples = _space(cfg.params), OptunaSearch(seed=cfg.seed), cfg.trials
        scheduler = None
        if cfg.scheduler == "asha":
            from ray.tune.schedulers import ASHAScheduler

            # max_t: past any run's end (a trial at max_t would be stopped before its run completes)
            scheduler = ASHAScheduler(time_attr="epoch", max_t=10**6,
                                      grace_period=cfg.grace_period, reduction_factor=cfg.reduction_factor)
        log.info("sweep %s: %s search of %s on Ray Tune%s, %s trial(s) x %d seed(s) on the validation rows",
                 cfg.name, cfg.search, cfg.method, " with ASHA early stopping" if scheduler else "",
                 len(settings) if settings is not None else cfg.trials, len(cfg.seeds))
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's own tables off (verbose=0): a line a trial here
        tuner = tune.Tuner(trainable, param_space=space,
                           tune_config=tune.TuneConfig(metric="score", mode=_mode(cfg), search_alg=search,
                                                       scheduler=scheduler, num_samples=samples),
                           run_config=tune.RunConfig(name="tune", storage_path=str(out.resolve()), verbose=0,
                                                     callbacks=[_progress_callback()],
                                                     failure_config=tune.FailureConfig(max_failures=cfg.cluster.max_retries)))
        grid = tuner.fit()
        tried, results = _collect(cfg, grid, settings, out)
        best = record_selection(cfg, out, tried, results)
        jobs = selected_test_jobs(cfg, best, target, test, out)
        failures = rc.run(run_trial, jobs, [f"{cfg.name}/test/{cfg.method}/seed{j['seed']}" for j in jobs], res,
                          int(res.cpus), what="test runs")
        if failures:
            raise LumeError(failure_message(failures, len(jobs), "test runs"), path=str(out))
    return report_test(out)
