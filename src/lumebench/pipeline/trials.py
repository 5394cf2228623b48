"""A sweep's trials, shared by the local pool (:mod:`lumebench.pipeline.sweep`) and Ray Tune
(:mod:`lumebench.pipeline.tune`): one (setting, seed) as a resumable unlearning run, the trial table
and the selection on validation rows, and the selected setting's runs on the test rows. ``cfg`` is a
:class:`lumebench.pipeline.sweep.SweepConfig`."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from lumebench.data.records import Benchmark
from lumebench.errors import LumeError
from lumebench.io import atomic_write_json, atomic_write_text
from lumebench.metrics_table import metric, summary_key
from lumebench.progress import log


def run_trial(job: dict) -> dict:
    """One (setting, seed) on the validation rows: a normal resumable ``unlearn`` run (process entry point)."""
    from lumebench.pipeline.unlearn import unlearn

    r = unlearn(job["target"], job["bench"], job["method"], job["out"], overrides=job["overrides"],
                lora=job["lora"], eval=job["eval"], on_evaluation=job.get("on_evaluation"))
    return {"trial": job["trial"], "seed": job["seed"], "status": r["status"], "final": r.get("final") or {},
            "out": str(job["out"])}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def trials_table(cfg, settings: list[dict], results: list[dict]) -> tuple[list[dict], str]:
    rows = []
    for k, s in enumerate(settings):
        rs = [r for r in results if r["trial"] == k]
        vals = [r["final"].get(summary_key(cfg.select_on)) for r in rs]
        vals = [v for v in vals if isinstance(v, (int, float))]
        rows.append({"trial": k, "setting": s, "status": sorted({r["status"] for r in rs}),
                     "score_mean": statistics.fmean(vals) if vals else None,
                     "score_std": statistics.stdev(vals) if len(vals) > 1 else None,
                     "scores": vals,
                     **{f"{key}_mean": _mean([r["final"].get(key) for r in rs])
                        for key in ("forget_regurgitation", "retain_regurgitation", "task_aggregate", "mia_auc")}})
    names = list(cfg.params)
    head = ["trial"] + names + [f"{cfg.select_on} (validation)", "F reg", "R reg", "task agg", "MIA AUC", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        score = "—" if r["score_mean"] is None else f"{r['score_mean']:.3f}" + (
            "" if r["score_std"] is None else f" ± {r['score_std']:.3f}")
        lines.append("| " + " | ".join([str(r["trial"])] + [_fmt(r["setting"][n]) for n in names] + [score] + [
            "—" if r[f"{k}_mean"] is None else f"{r[f'{k}_mean']:.3f}"
            for k in ("forget_regurgitation", "retain_regurgitation", "task_aggregate", "mia_auc")]
            + ["/".join(r["status"])]) + " |")
    return rows, "\n".join(lines) + "\n"


def _mean(values) -> float | None:
    v = [x for x in values if isinstance(x, (int, float))]
    return statistics.fmean(v) if v else None


def select(rows: list[dict], select_on: str = "final") -> dict:
    """The trial with the best mean validation score in the metric's better direction (the first on
    a tie); an error if none has one."""
    scored = [r for r in rows if r["score_mean"] is not None]
    if not scored:
        raise LumeError("no trial has a validation score to select on (is MIA/MMLU off? set select_on, "
                        "e.g. task_aggregate)")
    sign = metric(select_on).sign()
    return max(scored, key=lambda r: (sign * r["score_mean"], -r["trial"]))


def trial_job(cfg, k: int | str, seed: int, setting: dict, target: str, bench: Benchmark, out: Path,
              *, folder: Path | None = None) -> dict:
    """The job of one (setting, seed) (:func:`run_trial`): trial ``k``'s folder unless ``folder`` is given."""
    return {"trial": k, "seed": seed, "target": target, "bench": bench, "method": cfg.method, "lora": cfg.lora,
            "out": folder or out / "trials" / str(k) / f"seed{seed}", "eval": cfg.eval, "select_on": cfg.select_on,
            "overrides": {**cfg.fixed, **setting, "train.seed": seed}}


def record_selection(cfg, out: Path, settings: list[dict], results: list[dict]) -> dict:
    """Write the trial table and ``selected.json``; return the selected trial's row."""
    rows, table = trials_table(cfg, settings, results)
    atomic_write_json(out / "trials.json", rows)
    atomic_write_text(out / "trials.md", table)
    best = select(rows, cfg.select_on)
    atomic_write_json(out / "selected.json", {"trial": best["trial"], "setting": best["setting"],
                                              "validation_score": best["score_mean"], "select_on": cfg.select_on})
    log.info("sweep %s: selected trial %d %s (validation %s %.3f); evaluating it on the test rows", cfg.name,
             best["trial"], json.dumps(best["setting"]), cfg.select_on, best["score_mean"])
    print(table, end="")
    print(f"\nselected: trial {best['trial']} {json.dumps(best['setting'])} "
          f"(validation {cfg.select_on} {best['score_mean']:.3f})")
    return best


def selected_test_jobs(cfg, best: dict, target: str, test: Benchmark, out: Path) -> list[dict]:
    """The selected setting's runs on the test rows, one per seed, in ``test/<method>/seed<s>/``."""
    return [trial_job(cfg, best["trial"], seed, best["setting"], target, test, out,
                      folder=out / "test" / cfg.method / f"seed{seed}") for seed in cfg.seeds]


def report_test(out: Path) -> Path:
    from lumebench.report.leaderboard import write_leaderboard

    write_leaderboard(out / "test")
    print((out / "test" / "leaderboard.md").read_text(encoding="utf-8"), end="")
    return out
