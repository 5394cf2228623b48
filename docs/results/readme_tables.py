"""Write the generated sections of the README and of the documentation pages (``docs/*.md``) from the
committed result files in ``docs/results/`` and from the method registry, so that no table or figure is
copied by hand and none can drift from what a run gave.

    python docs/results/readme_tables.py          # rewrite every generated section
    python docs/results/readme_tables.py --check  # exit 1 (and say which file and section) if one differs

Sections (between ``<!-- BEGIN GENERATED: NAME -->`` and ``<!-- END GENERATED: NAME -->``):

- ``default``: the default ``lume run``'s leaderboard (``default/leaderboard.json``) and where it was
  measured (``default/run.json``: machine, numerics, versions, date).
- ``default-timings``: its stages' wall times (``default/run.json``) and the whole command from a
  fresh clone (``default/fresh-clone.json``, written by ``benchmarks/fresh_clone.py``).
- ``default-robust``: the default's methods over 3 target builds x 3 unlearning seeds
  (``default-robust/leaderboard.json``): the table, and the orderings between methods that hold
  beyond the combined spread, next to those the single-target table shows that do not.
- ``numerics-cost``: the cost of the pinned numerics (``numerics-cost.json``, ``benchmarks/numerics_pin.py``).
- ``default-attacks``: the default's methods (3 seeds) under the robustness attacks of
  ``configs/default-attacks.yaml`` (``default-attacks/leaderboard.json`` and ``run.json``): the
  leaderboard with its robustness columns, and the verdict per method (``docs/attacks.md``).
- ``mmlu-speed``: MMLU 5-shot, the fast engine against the official batch-1 protocol in one process
  (``mmlu-speed/mmlu_speed.json``, written by ``benchmarks/mmlu_speed.py --out``).
- ``methods``: one section per registered method (``docs/methods.md``): what it is, its source, its
  recipe as its module documents it, its hyperparameters and presets (what ``lume methods`` prints).

A section may appear in several files (the README shows ``default``; ``docs/default-run.md`` too).

Result files come from ``lume run`` (``runs/<name>/leaderboard.json`` and ``run.json``, copied
here as they are).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
README = ROOT / "README.md"


def generated_files() -> list[Path]:
    """The README and every documentation page."""
    return [README] + sorted((ROOT / "docs").glob("*.md"))
sys.path.insert(0, str(HERE.parents[1] / "src"))

from lumebench.report.leaderboard import Row, Stat, mark_ties, to_markdown  # noqa: E402
from lumebench.report.results import TERMS, term_key  # noqa: E402

MARK = re.compile(r"(<!-- BEGIN GENERATED: ([\w-]+) -->\n)(.*?)(<!-- END GENERATED: \2 -->)", re.S)
FORGET = [term_key(*t) for t in TERMS if t[0] == "forget"]
RETAIN = [term_key(*t) for t in TERMS if t[0] == "retain"]


def _load(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def rows_of(board: dict) -> list[Row]:
    rows = []
    for r in board["rows"]:
        metrics = {k: Stat(v["mean"], v["std"], v["n"], v["values"]) for k, v in r["metrics"].items()}
        rows.append(Row(r["label"], r["method"], r["status"], r["seeds"], r["epochs"], metrics,
                        r.get("mmlu_partial", False), r.get("hyperparameters") or {}, r.get("status_detail") or []))
    mark_ties(rows)
    return rows


def _threads(num: dict) -> str:
    n = (num.get("threads") or {}).get("intra_op")
    return f"{n} thread{'' if n == 1 else 's'} in the main process"


def _where(run: dict) -> str:
    meta = run.get("meta") or {}
    m = meta.get("machine") or {}
    num = m.get("numerics") or {}
    cpu = num.get("cpu") or {}
    isa = cpu.get("isa") or []
    widest = "AVX-512" if any(f.startswith("avx512") for f in isa) else ("AVX2" if "avx2" in isa else "no AVX2")
    v = meta.get("versions") or {}
    how = ("Measured with `lume run`" if run.get("name") == "default" else
           f"Measured as build `{run.get('name')}` of `lume run configs/default-robust.yaml` (the default's config, "
           f"data, target build and seeds: the same computation as `lume run`)")
    return (f"{how} on {cpu.get('model') or 'an x86 CPU'} ({widest}, {m.get('cpu_count')} cores), "
            f"numerics {num.get('mode')} (ATen {num.get('aten_capability')}, MKL {str(num.get('mkl_cnr')).split(' (')[0]}, "
            f"{_threads(num)}), lumebench {v.get('lumebench')}, torch "
            f"{v.get('torch')}, {(run.get('finished_at') or meta.get('started_at') or '')[:10]}. The pinned "
            f"numerics give these bits on every x86 CPU with AVX2 (`tests/test_golden.py` checks it on every "
            f"machine CI runs on).")


def section_default() -> str:
    board, run = _load(HERE / "default" / "leaderboard.json"), _load(HERE / "default" / "run.json")
    return to_markdown(rows_of(board)) + "\n" + _where(run) + "\n"


def section_default_timings() -> str:
    run = _load(HERE / "default" / "run.json")
    t = run.get("timings_last_invocation") or {}
    runs = list((run.get("methods") or {}).values())
    per_method: dict[str, list[float]] = {}
    for r in runs:
        per_method.setdefault(r["label"], []).append(r["cpu_seconds"])
    names = {"data": "data generation", "target": "target (held-out pretraining + memorisation, cached)",
             "report": "leaderboard, plots, report"}
    lines = ["| stage | CPU seconds | wall seconds in this run |", "|---|---|---|"]
    for k, label in names.items():
        if k in t:
            lines.append(f"| {label} | {t[k]['cpu_s']:.0f} | {t[k]['wall_s']:.0f} |")
    if runs:
        each = ", ".join(f"{m} {min(v):.0f}–{max(v):.0f}" for m, v in per_method.items())
        lines.append(f"| {len(runs)} method runs, each on 1 thread ({each}) | {sum(r['cpu_seconds'] for r in runs):.0f} "
                     f"| {t.get('methods', {}).get('wall_s', 0):.0f} (on parallel processes) |")
    fresh = HERE / "default" / "fresh-clone.json"
    lines.append("")
    if fresh.exists():
        f = _load(fresh)
        lines.append(f"From a fresh clone (`{f['command']}`) on {f['cpu']}, {f['date']}, the machine {f['load']}: "
                     f"`./install.sh` {f['install_s']:.0f} s, `lume run` {f['run_s']:.0f} s, **{f['total_s'] // 60:.0f} min "
                     f"{f['total_s'] % 60:.0f} s** in all. {f['noise']}")
    else:
        threads = ((((run.get("meta") or {}).get("machine") or {}).get("numerics") or {}).get("threads") or {})
        lines.append(f"CPU seconds are what each stage costs; the wall seconds are those of this run, which "
                     f"shared the machine with other work (its target stage ran on {threads.get('intra_op')} "
                     f"thread(s)), so they are upper bounds. No quiet fresh-clone timing of this version was "
                     f"taken: `python benchmarks/fresh_clone.py --update` takes it and puts it here.")
    return "\n".join(lines) + "\n"


def _per_run(row: Row, keys: list[str]) -> list[float] | None:
    cols = [row.metrics[k].values for k in keys if k in row.metrics]
    if not cols or len({len(c) for c in cols}) != 1 or not cols[0]:
        return None
    return [statistics.fmean(vals) for vals in zip(*cols)]


def _stat(values: list[float]) -> Stat:
    return Stat.of(values)


def measures(rows: list[Row]) -> dict[str, dict[str, Stat]]:
    """Per method: final score, forget mean (the 6 forget terms, lower = forgotten), retain mean (the
    6 retain terms, higher = kept) and MIA AUC, each over its runs."""
    out = {}
    for r in rows:
        if r.method == "target":
            continue
        f, k = _per_run(r, FORGET), _per_run(r, RETAIN)
        out[r.label] = {"final score": r.metrics["final"], "MIA AUC": r.metrics["mia_auc"],
                        "forget mean": _stat(f) if f else Stat.of([]), "retain mean": _stat(k) if k else Stat.of([])}
    return out


def apart(a: Stat, b: Stat) -> bool:
    """Different beyond the combined spread: |Δ| > √(s_a² + s_b²) (needs ≥ 2 runs each)."""
    if a.mean is None or b.mean is None or a.std is None or b.std is None:
        return False
    return abs(a.mean - b.mean) > (a.std ** 2 + b.std ** 2) ** 0.5


def ordering(m: dict[str, dict[str, Stat]], measure: str) -> str:
    """``a 0.80 ± 0.05 > b 0.61 ± 0.10 ≈ c 0.55 ± 0.12`` (">": apart beyond the spread)."""
    names = sorted((n for n in m if m[n][measure].mean is not None), key=lambda n: -m[n][measure].mean)
    parts = []
    for i, n in enumerate(names):
        if i:
            parts.append(">" if apart(m[names[i - 1]][measure], m[n][measure]) else "≈")
        parts.append(f"{n} {m[n][measure].fmt()}")
    return " ".join(parts)


def pairs_apart(m: dict[str, dict[str, Stat]], measure: str) -> set[tuple[str, str]]:
    """(higher, lower) pairs apart beyond the spread."""
    out = set()
    for a in m:
        for b in m:
            sa, sb = m[a][measure], m[b][measure]
            if a != b and sa.mean is not None and sb.mean is not None and sa.mean > sb.mean and apart(sa, sb):
                out.add((a, b))
    return out


def _claims(rows: list[Row]) -> list[str]:
    """The orderings that hold beyond the combined spread, and what the single-target table claims
    beyond its seed spread that does not hold across target builds."""
    robust = measures(rows)
    single = measures(rows_of(_load(HERE / "default" / "leaderboard.json")))
    out = ["What holds beyond the combined spread (`>`: |Δ| > √(s₁² + s₂²) over all runs; `≈`: not apart):", ""]
    for measure, what in (("final score", "higher is better"), ("forget mean", "mean of the 6 forget terms, lower "
                                                                                 "= more forgotten"),
                          ("retain mean", "mean of the 6 retain terms, higher = more kept"),
                          ("MIA AUC", "1.0 = members perfectly separated; 0.5 = indistinguishable")):
        out.append(f"- **{measure}** ({what}): {ordering(robust, measure)}")
    lost = []
    for measure in ("final score", "forget mean", "retain mean", "MIA AUC"):
        for a, b in sorted(pairs_apart(single, measure) - pairs_apart(robust, measure)):
            lost.append(f"{a} vs {b} on {measure}")
    out.append("")
    if lost:
        out.append("Differences that the single-target default table shows beyond its seed spread but that do "
                   "not hold across target builds (not findings): " + "; ".join(lost) + ".")
    else:
        out.append("Every difference the single-target default table shows beyond its seed spread holds "
                   "across target builds too.")
    moved = [n for n, s in robust.items() if s["MIA AUC"].mean is not None and s["MIA AUC"].std is not None
             and s["MIA AUC"].mean + s["MIA AUC"].std < 1.0]
    out.append("")
    out.append("MIA AUC below 1.0 beyond its spread: " + (", ".join(moved) if moved else "no method") + ".")
    return out


def section_default_robust() -> str:
    board, run = _load(HERE / "default-robust" / "leaderboard.json"), _load(HERE / "default-robust" / "run.json")
    rows = rows_of(board)
    n = max(len(r.seeds) for r in rows if r.method != "target")
    out = [f"`lume run configs/default-robust.yaml`: the default's methods on {len(run.get('target_builds') or [])} "
           f"target builds x {len(run.get('seeds') or [])} unlearning seeds ({n} runs a method; a cell is mean ± "
           "std over all of them, so the spread covers the target build).", "", to_markdown(rows), ""]
    return "\n".join(out + _claims(rows)) + "\n"


def section_default_robust_claims() -> str:
    """The claims of ``default-robust`` without its table (the README's headline)."""
    run = _load(HERE / "default-robust" / "run.json")
    rows = rows_of(_load(HERE / "default-robust" / "leaderboard.json"))
    n = max(len(r.seeds) for r in rows if r.method != "target")
    head = [f"Across {len(run.get('target_builds') or [])} target builds x {len(run.get('seeds') or [])} unlearning "
            f"seeds (`lume run configs/default-robust.yaml`, {n} runs a method):", ""]
    return "\n".join(head + _claims(rows)) + "\n"


def section_numerics_cost() -> str:
    c = _load(HERE / "numerics-cost.json")
    s = c["settings"]
    lines = ["| numerics | ATen kernels | MKL | CPU time of a training step, ratio to native | weights |",
             "|---|---|---|---|---|"]
    native = s["native"]["digests"]
    for name in ("native", "pinned", "compatible"):
        x = s[name]
        same = "same as native" if x["digests"] == native else "other bits"
        lines.append(f"| {name} | {x['aten']} | {x['mkl_cnr'].split(' (')[0]} | {x['ratio_to_native']:.2f}x "
                     f"(min–max {x['min_cpu_s'] / s['native']['median_cpu_s']:.2f}–"
                     f"{x['max_cpu_s'] / s['native']['median_cpu_s']:.2f}) | {same} |")
    lines += ["", f"`{c['command']}` on {c['cpu']}, {c['date']}: {c['rounds']} rounds of {c['steps']} steps of the "
              f"tiny model (batch 8 x 150 tokens, 1 thread) per setting, each in a fresh process, interleaved; CPU "
              f"seconds (process time), so other load on the machine moves them less than wall time; min–max "
              f"is the spread over the rounds."]
    return "\n".join(lines) + "\n"


def section_mmlu_speed() -> str:
    r = _load(HERE / "mmlu-speed" / "mmlu_speed.json")
    m, a, b = r["mmlu"], r["args"], r["mmlu"]["token_bound"]
    f, ref = m["fast"], m["reference"]
    same = "identical" if m["same_predictions"] and m["same_accuracy"] else "**differ**"
    lines = ["| workload | official protocol | fast engine | wall | CPU time | predictions | multiply-add bound |",
             "|---|---|---|---|---|---|---|",
             f"| MMLU 5-shot, {len(m['subjects'])} subjects x {m['limit']} ({m['questions']} questions) | "
             f"{ref['wall_s']:.1f} s | {f['wall_s']:.1f} s | **{m['speedup_wall']:.1f}x** | {m['speedup_cpu']:.1f}x | "
             f"{same} (accuracy {f['average_acc']:.2f}) | {b['mac_ratio']:.2f}x causal, "
             f"{b['mac_ratio_executed']:.2f}x as executed |"]
    cpu = r["machine"]["numerics"]["cpu"]
    lines += ["", f"`benchmarks/mmlu_speed.py --subjects {a['subjects']} --limit {a['limit']} --pick {a['pick']} "
              f"--threads {a['threads']}`, SmolLM2-135M fp32, {cpu['model']} ({r['machine']['cpu_count']} cores, "
              f"{r['machine']['numerics']['mode']} numerics), {r['date']}, load average {r['load_average_before']} "
              f"before the start; both engines in one process, alternating subject by subject. One run; "
              f"quiet runs of this command on this machine have varied by about +-4 %."]
    return "\n".join(lines) + "\n"


def section_default_attacks() -> str:
    from lumebench.report.robustness import COLUMNS, verdict_lines

    board, run = _load(HERE / "default-attacks" / "leaderboard.json"), _load(HERE / "default-attacks" / "run.json")
    rows = rows_of(board)
    methods = [r for r in rows if r.method != "target"]
    values = {r.label: {k: list(r.metrics[k].values) for k, _ in COLUMNS if k in r.metrics} for r in methods}
    seeds = {r.label: len([x for x in r.seeds if x is not None]) for r in methods}
    relearn = set(values) if ((run.get("config") or {}).get("attacks") or {}).get("relearn") is not None else set()
    t = run.get("timings_last_invocation") or {}
    took = ", ".join(f"{k} {v['wall_s']:.0f} s" for k, v in t.items()
                     if isinstance(v, dict) and (v.get("wall_s") or 0) >= 1 and k != "total")
    out = [f"`lume run configs/default-attacks.yaml`: the default's data, target, methods and {len(run.get('seeds') or [])} "
           f"seeds, then every attack on every method row and seed.", "", to_markdown(rows), "",
           _where(run), "", f"Wall time of the invocation that wrote these results (stages already done are reused, not "
           f"timed): {took or 'not recorded'}.", ""]
    out += verdict_lines(values, seeds, relearn)
    return "\n".join(out) + "\n"


def section_methods() -> str:
    """One section per registered method, from the registry and each method's module docstring."""
    import dataclasses
    import inspect

    import lumebench.methods.catalog  # noqa: F401  (registration)
    from lumebench.methods.commands import trainer_lines
    from lumebench.registry import METHODS

    out = []
    for e in METHODS.entries():
        cls = e.obj
        module = inspect.getmodule(cls)
        out += [f"## `{e.name}`", "", f"{e.help}.", "", f"**Source:** {cls.source or '(none given)'}", ""]
        fields = dataclasses.fields(cls.Hparams)
        if fields:
            out += ["| hyperparameter | default |", "|---|---|"]
            out += [f"| `{f.name}` | `{f.default}` |" for f in fields]
            out.append("")
        presets = [("recipe (every preset)", cls.recipe), ("literature preset", cls.trainer_defaults)]
        presets += [(f"`{k}` preset", v) for k, v in cls.preset_defaults.items()]
        for what, values in presets:
            if values:
                out.append(f"- {what}: " + ", ".join(f"`{k}={v}`" for k, v in values.items()))
        doc = inspect.getdoc(module) or ""
        if doc:
            out += ["", f"From `{module.__name__}`:", ""] + ["    " + l if l else "" for l in doc.splitlines()]
        out.append("")
    out += ["## Trainer settings", ""] + [f"- {l}" for l in trainer_lines()] + [""]
    return "\n".join(out)


def render(text: str, where: str = "README.md") -> tuple[str, list[str]]:
    """``text`` with every generated section rewritten; the names of the sections that changed."""
    changed = []

    def sub(m: re.Match) -> str:
        name = m.group(2)
        if name not in SECTIONS:
            raise SystemExit(f"error: {where}: unknown generated section {name!r}")
        body = SECTIONS[name]()
        if body != m.group(3):
            changed.append(name)
        return m.group(1) + body + m.group(4)

    return MARK.sub(sub, text), changed


SECTIONS = {"default": section_default, "default-timings": section_default_timings,
            "default-robust": section_default_robust, "numerics-cost": section_numerics_cost,
            "default-robust-claims": section_default_robust_claims, "methods": section_methods,
            "default-attacks": section_default_attacks, "mmlu-speed": section_mmlu_speed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md is not what the results give")
    args = ap.parse_args()
    stale = []
    for path in generated_files():
        text = path.read_text(encoding="utf-8")
        where = str(path.relative_to(ROOT))
        new, changed = render(text, where)
        if changed:
            stale.append(f"{where} ({', '.join(changed)})")
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if args.check:
        if stale:
            print(f"out of date: {'; '.join(stale)}: run python docs/results/readme_tables.py")
            return 1
        print("every generated section matches docs/results/ and the method registry")
        return 0
    print(f"{len(stale)} file(s) rewritten" + (f": {'; '.join(stale)}" if stale else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
