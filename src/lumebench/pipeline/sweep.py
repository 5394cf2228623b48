"""``lume sweep SWEEP.yaml``: a grid or random search over one method's hyperparameters, selected on
validation rows only, then evaluated once on the test rows.

    name: npo-sweep
    method: npo
    data: {source: generated, docs_per_task: 6, seed: 0}
    target: {model: tiny}
    fixed: {epochs: 5}                 # every trial
    search: grid                       # or random (then `trials: N`, `seed: S`), or optuna (on Ray)
    params:
      beta: [0.05, 0.1, 0.5]           # grid values / random choices
      lr: {log_uniform: [1.0e-4, 1.0e-2]}   # random only; also {uniform: [a, b]}
    seeds: [0]                         # unlearning seeds of every trial (and of the test run)

Honest selection:

- **Which rows.** Official SemEval parquet data: trials use the ``validation`` parts, the test run
  the ``train`` parts. Generated data: the documents of each (split, task) are shuffled (seeded) and
  ``validation_fraction`` of them are held out for selection; the target memorises both halves (it
  is built on the whole benchmark), trials unlearn and score only the validation half, the selected
  setting unlearns and is scored only on the test half. MIA members go with their document; the
  other MIA documents are split in the same proportion. Other local data without a SemEval
  validation part (e.g. the official jsonl files) is split the same way.
- **What is compared.** Each trial's final score (official ``aggregate-score``; ``select_on``
  may name another summary key) after its last epoch, averaged over ``seeds``; the best mean wins
  (ties: the first trial). The test rows never enter a trial: a trial is given the validation
  benchmark object only.

On Ray (``cluster: ray[:ADDRESS]`` or ``--cluster``) every setting is a Ray Tune trial
(:mod:`lumebench.pipeline.tune`): grid and random search try the same settings as here, ``search:
optuna`` lets Optuna's sampler propose ``trials`` settings, and ``scheduler: asha`` stops trials
early on their per-epoch validation curve; the test rows stay out of every trial as here.

Outputs in ``<runs_dir>/<name>/``: ``trials/<k>/seed<s>/`` (each a normal, resumable ``unlearn`` run),
``trials.md`` / ``trials.json`` (the table), ``selected.json``, ``test/<method>/seed<s>/`` with the
test run and its ``leaderboard.md``. Trials run in parallel processes (``workers``; default: the
CPU cores divided by ``threads``); rerunning resumes: finished trials are read back, not redone.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from lumebench.data.records import Benchmark
from lumebench.errors import LumeError
from lumebench.io import atomic_write_json
from lumebench.metrics_table import metric, summary_key
from lumebench.progress import log
from lumebench.pipeline.config import (NAME_RE, ClusterConfig, DataConfig, EvalSettings, TargetConfig, check_cluster,
                                       check_eval_section,
                                       cluster_dict, default_dict)
from lumebench.pipeline.configfile import build, locator, merged, read_config_file
from lumebench.pipeline.trials import record_selection, report_test, run_trial, selected_test_jobs, trial_job
from lumebench.pipeline.workers import cpu_cores, run_jobs

@dataclass
class SweepConfig:
    """A hyperparameter search (see the module docstring).

    method / lora: the method searched, and whether it trains a LoRA adapter.
    data / target / eval: as in ``lume run``, laid over the same default (``default.yaml``).
    validation_fraction: generated data only: share of the documents of each task and split held out
        for selection (at least one document each side).
    fixed: overrides of every trial (method hyperparameters or trainer settings).
    search: ``grid`` (every combination of ``params`` lists), ``random`` (``trials`` draws) or
        ``optuna`` (``trials`` settings proposed by Optuna's TPE sampler as results come in; Ray only).
    params: name -> list of values, or (random, optuna) ``{uniform: [a, b]}`` / ``{log_uniform: [a, b]}``.
    trials / seed: random and optuna search: how many settings, and the seed that draws them.
    scheduler: None, or ``asha`` (Ray only: asynchronous successive halving stops the trials whose
        validation score after ``grace_period`` epochs (then that times ``reduction_factor``, ...) is
        in the worse part; one seed; a stopped trial is listed but not selected).
    grace_period / reduction_factor: ASHA's first milestone (epochs) and its halving factor.
    cluster: where the trials run (:class:`~lumebench.pipeline.config.ClusterConfig`; ``ray:ADDRESS``).
    seeds: unlearning seeds of every trial and of the final test run.
    select_on: the metric compared (``final_score`` = ``final``; e.g. ``task_aggregate`` without MMLU),
        by name in :data:`lumebench.metrics_table.METRICS`; the best in its direction wins.
    workers: trial processes at once (None: CPU cores // threads); threads: torch threads each.
    """

    data: DataConfig
    target: TargetConfig
    eval: EvalSettings
    name: str = "sweep"
    method: str = "npo"
    lora: bool = False
    validation_fraction: float = 0.5
    fixed: dict = field(default_factory=dict)
    search: str = "grid"
    params: dict = field(default_factory=dict)
    trials: int = 8
    seed: int = 0
    seeds: list[int] = field(default_factory=lambda: [0])
    select_on: str = "final_score"
    workers: int | None = None
    threads: int = 1
    scheduler: str | None = None
    grace_period: int = 1
    reduction_factor: int = 2
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

def load_sweep_config(path: str | Path) -> SweepConfig:
    data, text = read_config_file(path)
    where = locator(str(path), text)
    sections = {k: v for k, v in default_dict().items() if k in ("data", "target", "eval")}
    if "cluster" in data:
        data = {**data, "cluster": cluster_dict(data["cluster"])}
    cfg = build(SweepConfig, merged(sections, data), [], where)
    check_cluster(cfg.cluster, where, ["cluster"])
    cfg.eval = check_eval_section(cfg.eval, where)
    from lumebench.registry import METHODS

    if not NAME_RE.match(cfg.name):
        raise where.error("a sweep name is letters, digits, '_', '-', '.', '+' (it names a folder)", ["name"])
    if cfg.method not in METHODS:
        raise where.error(f"unknown method {cfg.method!r}; known: {', '.join(METHODS.names())}", ["method"])
    if cfg.search not in ("grid", "random", "optuna"):
        raise where.error("expected 'grid', 'random' or 'optuna'", ["search"])
    if cfg.scheduler not in (None, "asha"):
        raise where.error("expected 'asha' (or null)", ["scheduler"])
    if cfg.scheduler and len(cfg.seeds) != 1:
        raise where.error("ASHA compares one curve per trial: give one seed", ["seeds"])
    if cfg.grace_period < 1 or cfg.reduction_factor < 2:
        raise where.error("expected grace_period >= 1 and reduction_factor >= 2",
                          ["grace_period" if cfg.grace_period < 1 else "reduction_factor"])
    try:  # a metric of the table (lumebench.metrics_table), selected in its better direction
        metric(cfg.select_on).sign()
        summary_key(cfg.select_on)
    except LumeError as e:
        raise where.error(str(e), ["select_on"]) from None
    if not cfg.params:
        raise where.error("nothing to search: give at least one hyperparameter with its values", ["params"])
    for name, spec in cfg.params.items():
        ok = (isinstance(spec, list) and spec) or (
            cfg.search != "grid" and isinstance(spec, dict) and len(spec) == 1
            and next(iter(spec)) in ("uniform", "log_uniform")
            and isinstance(next(iter(spec.values())), list) and len(next(iter(spec.values()))) == 2)
        if not ok:
            raise where.error("expected a non-empty list of values" + (
                ", or {uniform: [a, b]} / {log_uniform: [a, b]}" if cfg.search != "grid" else ""), ["params", name])
    from lumebench.pipeline.unlearn_config import split_overrides

    try:
        split_overrides(cfg.method, {**cfg.fixed, **{k: None for k in cfg.params}})
    except LumeError as e:
        raise where.error(str(e), ["params"]) from None
    if not 0 < cfg.validation_fraction < 1:
        raise where.error("expected a number between 0 and 1", ["validation_fraction"])
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise where.error("seeds must be a non-empty list of distinct integers", ["seeds"])
    return cfg

# ----------------------------------------------------------------------------- settings

def trial_settings(cfg: SweepConfig) -> list[dict]:
    """The hyperparameter settings tried, in order (grid: every combination; random: seeded draws)."""
    names = list(cfg.params)
    if cfg.search == "grid":
        return [dict(zip(names, combo)) for combo in itertools.product(*(cfg.params[n] for n in names))]
    rng = random.Random(f"lumebench-sweep:{cfg.seed}")
    out = []
    for _ in range(cfg.trials):
        s = {}
        for n in names:
            spec = cfg.params[n]
            if isinstance(spec, list):
                s[n] = rng.choice(spec)
            elif "uniform" in spec:
                a, b = spec["uniform"]
                s[n] = rng.uniform(a, b)
            else:
                a, b = spec["log_uniform"]
                s[n] = math.exp(rng.uniform(math.log(a), math.log(b)))
        out.append(s)
    return out

# ----------------------------------------------------------------------------- validation / test rows

def split_validation(bench: Benchmark, fraction: float, seed: int) -> tuple[Benchmark, Benchmark]:
    """(validation, test): per split and task, a seeded ``fraction`` of the documents (≥ 1 each side)."""
    val_docs: set[str] = set()
    for split in ("forget", "retain"):
        by_task: dict[str, list[str]] = {}
        for r in bench.split(split):
            if r.doc_id not in by_task.setdefault(r.task, []):
                by_task[r.task].append(r.doc_id)
        for task, ids in sorted(by_task.items()):
            ids = sorted(ids)
            if len(ids) < 2:
                raise LumeError(f"{split} {task} has {len(ids)} document(s): a held-out validation split needs "
                                f"at least 2 per task and split (raise data.docs_per_task)")
            random.Random(f"lumebench-sweep-split:{seed}:{split}:{task}").shuffle(ids)
            k = min(len(ids) - 1, max(1, round(fraction * len(ids))))
            val_docs.update(ids[:k])
    val = _subset(bench, val_docs, fraction, seed, keep=True)
    test = _subset(bench, val_docs, fraction, seed, keep=False)
    return val, test

def _subset(bench: Benchmark, val_docs: set[str], fraction: float, seed: int, *, keep: bool) -> Benchmark:
    forget_docs = {r.doc_id for r in bench.forget}

    def side(docs, kind):
        # a member that is a forget document goes with it; the others are split in the same proportion
        others = sorted(d.id for d in docs if d.id not in forget_docs)
        random.Random(f"lumebench-sweep-mia:{seed}:{kind}").shuffle(others)
        val_others = set(others[:max(1, round(fraction * len(others)))] if others else [])
        return [d for d in docs if ((d.id in val_docs) if d.id in forget_docs else (d.id in val_others)) == keep]

    pick = (lambda r: (r.doc_id in val_docs) == keep)
    return Benchmark([r for r in bench.forget if pick(r)], [r for r in bench.retain if pick(r)],
                     side(bench.mia_members, "member"), side(bench.mia_nonmembers, "nonmember"),
                     f"{bench.source} ({'validation' if keep else 'test'})")

def validation_and_test(cfg: SweepConfig, cache: Path) -> tuple[Benchmark, Benchmark, Benchmark]:
    """(benchmark the target memorises, validation rows, test rows)."""
    from lumebench.pipeline.data import prepare_data

    source = Path(str(cfg.data.source)).expanduser()
    semeval = cfg.data.source != "generated" and source.is_dir() and any(source.rglob("*_validation-*.parquet"))
    if semeval:
        from lumebench.data.loaders import load_benchmark

        whole = load_benchmark(source, mia=cfg.data.mia)
        val = load_benchmark(source, mia=cfg.data.mia, which=("validation",))
        test = load_benchmark(source, mia=cfg.data.mia, which=("train",))
        log.info("sweep: official data: selection on the SemEval validation parts (%d rows), test on the "
                 "train parts (%d rows)", len(val.rows), len(test.rows))
        return whole, val, test
    whole = prepare_data(cfg.data, cache)
    val, test = split_validation(whole, cfg.validation_fraction, cfg.data.seed)
    log.info("sweep: %s data: %d documents held out for selection (validation), %d test documents",
             "generated" if cfg.data.source == "generated" else "local", len({r.doc_id for r in val.rows}),
             len({r.doc_id for r in test.rows}))
    return whole, val, test

# ----------------------------------------------------------------------------- trials

def _run_trials(jobs: list[dict], workers: int, threads: int) -> list[dict]:
    def done(job: dict, res: dict) -> None:
        log.info("sweep: trial %d seed %d %s (%s %s)", res["trial"], res["seed"], res["status"],
                 job["select_on"], res["final"].get(summary_key(job["select_on"])))

    return run_jobs(run_trial, jobs, workers, threads, on_done=done)

def sweep(cfg: SweepConfig, runs_dir: str | Path = "runs") -> Path:
    """Run (or resume) the sweep; returns its folder."""
    from lumebench.pipeline.target import prepare_target

    if cfg.cluster.backend != "ray" and (cfg.search == "optuna" or cfg.scheduler):
        raise LumeError(f"{'search: optuna' if cfg.search == 'optuna' else 'scheduler: asha'} runs on Ray Tune: "
                        "set cluster: ray (or --cluster ray[:ADDRESS]); see docs/cluster.md")
    out = Path(runs_dir) / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(runs_dir) / ".cache"
    whole, val, test = validation_and_test(cfg, cache)
    target = prepare_target(cfg.target, whole, cache)
    settings = trial_settings(cfg) if cfg.search != "optuna" else None
    atomic_write_json(out / "sweep.json", {"config": {**dataclasses.asdict(cfg), "eval": cfg.eval.to_dict()},
                                           "settings": settings,
                                           "validation_fingerprint": val.fingerprint(),
                                           "test_fingerprint": test.fingerprint(), "target": str(target)})
    if cfg.cluster.backend == "ray":
        from lumebench.pipeline.tune import sweep_on_ray

        return sweep_on_ray(cfg, out, target, val, test, settings)
    workers = cfg.workers or max(1, cpu_cores() // max(1, cfg.threads))
    jobs = [trial_job(cfg, k, seed, s, target, val, out) for k, s in enumerate(settings) for seed in cfg.seeds]
    log.info("sweep %s: %d settings x %d seed(s) of %s on the validation rows, %d process(es)", cfg.name,
             len(settings), len(cfg.seeds), cfg.method, min(workers, len(jobs)))
    results = _run_trials(jobs, workers, cfg.threads)
    best = record_selection(cfg, out, settings, results)
    _run_trials(selected_test_jobs(cfg, best, target, test, out), workers, cfg.threads)
    return report_test(out)
