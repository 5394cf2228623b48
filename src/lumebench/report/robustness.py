"""The robustness columns, plot data and summary, read from the attack results of a run
(``<run>/attacks/<label>/seed<k>/<attack>/<attack>.json``, written by :mod:`lumebench.attacks`).

Columns (mean ± std over the seeds, as every leaderboard cell):

- ``rob_relearn_kno`` / ``rob_relearn_reg``: the relearning recovery ratio of V's knowledge /
  regurgitation after k steps of full fine-tuning on T (k = 5 when measured, else the middle k):
  0 = nothing came back, 1 = back to the target;
- ``rob_quant_kno``: the change of forget knowledge when the model is quantised to 4 bits (NF4; 8-bit
  when only that ran): > 0 = quantisation brought knowledge back;
- ``rob_para_kno``: forget knowledge on the held-out paraphrase and fill-in probes;
- ``rob_lens``: the share of forget QA rows whose answer's first token is the top token at some layer
  (logit lens); ``rob_lens_hidden``: at some layer but not at the output.

The summary calls a method's forgetting **hidden** when an attack brings back a clear share of it
(recovery ratio ≥ 0.25 at k, or quantised forget knowledge +0.10 or more, or logit-lens hidden ≥ 0.10,
each by its mean over seeds minus one std, so a one-seed fluke does not count), and **stays forgotten**
when every attack that ran stays below those marks; the thresholds are stated with the summary.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from lumebench.io import read_json

NAMES = ("relearn", "quantize", "paraphrase", "logit_lens")
COLUMNS = (("rob_relearn_kno", "relearn kno rec@k ↓"), ("rob_relearn_reg", "relearn reg rec@k ↓"),
           ("rob_quant_kno", "4-bit Δ F kno ↓"), ("rob_para_kno", "para F kno ↓"),
           ("rob_lens", "lens recov. ↓"), ("rob_lens_hidden", "lens hidden ↓"))
THRESHOLDS = {"rob_relearn_kno": 0.25, "rob_relearn_reg": 0.25, "rob_quant_kno": 0.10, "rob_lens_hidden": 0.10}
TARGET = "target"


def _read(folder: Path) -> dict:
    out = {}
    for name in NAMES:
        p = folder / name / f"{name}.json"
        if p.is_file():
            out[name] = read_json(p, expect=dict)
    return out


def attack_results(run_dir) -> dict[str, list[dict]]:
    """``{label: [per-seed {attack: result}]}`` of a run folder (and of its target builds); the target's
    attacks under ``"target"``."""
    run_dir = Path(run_dir)
    out: dict[str, list[dict]] = {}
    for base in [run_dir] + sorted(p for p in run_dir.glob("target*") if p.is_dir()):
        root = base / "attacks"
        if not root.is_dir():
            continue
        for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "controls"):
            seeds = sorted(p for p in label_dir.glob("seed*") if p.is_dir()) or [label_dir]
            for s in seeds:
                res = _read(s)
                if res:
                    out.setdefault(label_dir.name, []).append(res)
    return out


def report_k(relearn: dict) -> int | None:
    ks = sorted(p["k"] for p in _points(relearn) if p["k"] > 0)
    if not ks:
        return None
    return 5 if 5 in ks else ks[len(ks) // 2]


def _mode(relearn: dict) -> str | None:
    modes = relearn.get("modes") or {}
    return "full" if "full" in modes else next(iter(modes), None)


def _points(relearn: dict, mode: str | None = None) -> list[dict]:
    mode = mode or _mode(relearn)
    return ((relearn.get("modes") or {}).get(mode) or {}).get("points") or []


def recovery_curve(relearn: dict, measure: str = "knowledge", mode: str | None = None) -> list[tuple[int, float]]:
    return [(p["k"], p["recovery"][measure]["value"]) for p in _points(relearn, mode)
            if p["recovery"][measure]["value"] is not None]


def metrics(res: dict) -> dict[str, float | None]:
    """One seed's robustness numbers (None where the attack did not run or the number is undefined)."""
    out: dict[str, float | None] = {k: None for k, _ in COLUMNS}
    r = res.get("relearn")
    if r:
        k = report_k(r)
        for measure, key in (("knowledge", "rob_relearn_kno"), ("regurgitation", "rob_relearn_reg")):
            out[key] = dict(recovery_curve(r, measure)).get(k)
    q = res.get("quantize")
    if q:
        schemes = q.get("schemes") or {}
        scheme = "nf4" if "nf4" in schemes else next(iter(schemes), None)
        if scheme:
            out["rob_quant_kno"] = schemes[scheme]["delta"].get("forget_knowledge")
    p = res.get("paraphrase")
    if p:
        out["rob_para_kno"] = ((p.get("probes") or {}).get("forget") or {}).get("knowledge")
    lens = res.get("logit_lens")
    if lens:
        out["rob_lens"], out["rob_lens_hidden"] = lens.get("recoverable"), lens.get("hidden")
    return out


def settings_note(results: dict[str, list[dict]]) -> str | None:
    """The attacks' settings, for the leaderboard's header notes."""
    first = {name: seed[name] for seeds in results.values() for seed in seeds for name in seed}
    if not first:
        return None
    parts = []
    if "relearn" in first:
        r = first["relearn"]
        c, sp = r["config"], r["split"]
        parts.append(f"relearn: full fine-tuning on T ({len(sp['T'])} of {len(sp['T']) + len(sp['V'])} forget "
                     f"documents, seed {sp['seed']}), k = {report_k(r)} of steps {c['steps']}, lr "
                     f"{(r.get('lr') or {}).get(_mode(r))}, batch {c['batch_size']}; rec = (V_attacked − "
                     f"V_unlearned) / (V_target − V_unlearned)")
    if "quantize" in first:
        q = first["quantize"]
        s = "nf4" if "nf4" in q["schemes"] else next(iter(q["schemes"]))
        parts.append(f"4-bit: {q['schemes'][s]['scheme']['describe']} ({q['config']['backend']})")
    if "paraphrase" in first:
        parts.append(f"para: held-out templates + fill-in probes ({first['paraphrase']['probes_source']})")
    if "logit_lens" in first:
        parts.append("lens: final norm + unembedding of each layer at the answer's first position")
    return "Robustness (docs/attacks.md): " + "; ".join(parts) + "."


def _pessimistic(values: list[float]) -> float:
    """Mean minus one std (the mean with one seed)."""
    m = statistics.fmean(values)
    return m - (statistics.stdev(values) if len(values) > 1 else 0.0)


def summary_lines(results: dict[str, list[dict]]) -> list[str]:
    """One line per attacked method: stays forgotten / hidden, with the numbers that say so."""
    values, seeds, relearn_ran = {}, {}, set()
    for label, per_seed in results.items():
        if label == TARGET:
            continue
        per = [metrics(s) for s in per_seed]
        values[label] = {key: [p[key] for p in per if p[key] is not None] for key, _ in COLUMNS}
        seeds[label] = len(per_seed)
        if any("relearn" in s for s in per_seed):
            relearn_ran.add(label)
    return verdict_lines(values, seeds, relearn_ran)


def verdict_lines(values: dict[str, dict[str, list[float]]], seeds: dict[str, int], relearn_ran: set[str]) -> list[str]:
    """The summary from each method's per-seed values of the columns (``{label: {key: [value per
    seed]}}``): what :func:`summary_lines` says of a run folder, and what a committed leaderboard's
    values say (``docs/results/readme_tables.py``)."""
    lines = []
    for label, vals_of in values.items():
        if label in relearn_ran and not any(vals_of.get(k) for k in ("rob_relearn_kno", "rob_relearn_reg")):
            lines.append(f"- {label}: not judged: V's scores are the same before and after unlearning "
                         f"(nothing was forgotten, or the target never knew them), so no recovery exists")
            continue
        found, held = [], []
        for key, header in COLUMNS:
            vals = vals_of.get(key) or []
            if not vals or key not in THRESHOLDS:
                continue
            m = statistics.fmean(vals)
            sd = f" ± {statistics.stdev(vals):.2f}" if len(vals) > 1 else ""
            text = f"{header.rsplit(' ', 1)[0]} {m:.2f}{sd}"
            (found if _pessimistic(vals) >= THRESHOLDS[key] else held).append(text)
        if not found and not held:
            continue
        n = seeds[label]
        verdict = ("hidden: " + "; ".join(found)) if found else ("stays forgotten: " + "; ".join(held))
        lines.append(f"- {label} ({n} seed{'s' if n != 1 else ''}): {verdict}")
    if lines:
        lines.insert(0, "Robustness summary (hidden = an attack recovers at least " + ", ".join(
            f"{h.rsplit(' ', 1)[0]} {t:.2f}" for k, h in COLUMNS for kk, t in THRESHOLDS.items() if k == kk)
            + ", mean − std over seeds):")
    return lines
