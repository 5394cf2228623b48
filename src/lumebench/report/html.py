"""``report.html``: one self-contained page (inline CSS, PNGs as base64 data URIs, no external
resources) with the leaderboard, the figures, the run's configuration and provenance, and the
published OLMo-7B numbers for reference (another model: not comparable).

A small inline script marks ``<body data-images-loaded="true">`` once every image has decoded
(``naturalWidth > 0``), and ``data-js-errors`` counts script errors, so a headless browser can
check that the page renders.

    build_report("runs/default")   # leaderboard.{md,json} + plots/ + report.html from results alone
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path

from lumebench.errors import LumeError
from lumebench.io import atomic_write_text, read_json
from lumebench.provenance import flatten
from lumebench.report.leaderboard import (Row, build_leaderboard, cell_text, columns, robustness_notes, seed_notes,
                                          seeds_label, write_leaderboard)
from lumebench.report.plots import make_plots
from lumebench.report.results import MethodRun, collect

# SPEC.md §3: published results on the official OLMo-7B target (task website, final scoring).
PUBLISHED_BASELINES = [
    # method, final, task aggregate, MIA score, MMLU, note
    ("Gradient Ascent", 0.394, 0.0, 0.912, 0.269, "MMLU below the 0.371 threshold"),
    ("Gradient Difference", 0.243, 0.0, 0.382, 0.348, ""),
    ("KL minimisation", 0.395, 0.0, 0.916, 0.269, "MMLU below the 0.371 threshold"),
    ("NPO", 0.188, 0.021, 0.080, 0.463, ""),
]
# SemEval-2025 Task 4 leaderboard: team, model, final, (task aggregate, MIA score, MMLU) if published.
PUBLISHED_SEMEVAL = [
    ("AILS-NTUA", "7B", 0.706, 0.827, 0.847, 0.443),
    ("ZJUKLAB", "7B", 0.487, 0.944, 0.048, 0.471),
    ("YNU", "7B", 0.470, None, None, None),
    ("Mr. Snuffleupagus", "7B", 0.376, None, None, None),
    ("Atyaephyra", "7B", 0.273, None, None, None),
    ("AILS-NTUA", "1B", 0.688, None, None, None),
    ("SHA256", "1B", 0.652, None, None, None),
    ("Atyaephyra", "1B", 0.586, None, None, None),
]

FIGURE_CAPTIONS = {
    "task1.png": "Task1 (synthetic short novels): forget and retain regurgitation and knowledge against epochs.",
    "task2.png": "Task2 (synthetic biographies with PII): forget and retain regurgitation and knowledge against epochs.",
    "task3.png": "Task3 (real Wikipedia biographies): forget and retain regurgitation and knowledge against epochs.",
    "mia_auc.png": "Membership inference AUC against epochs (0.5 = forget documents look like unseen ones).",
    "utility.png": "Utility (MMLU accuracy) against epochs.",
    "scores.png": "Final score and task aggregate against epochs.",
    "final_scores.png": "Final scores after unlearning (the target before unlearning in grey).",
}

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1250px;
color:#222;padding:0 1em;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;font-size:.82em;margin:.6em 0}
th,td{border:1px solid #ccc;padding:.25em .45em;text-align:right;white-space:nowrap}
th{background:#f2f2f2}td:first-child,th:first-child,td:nth-child(2){text-align:left}
tr.target td{background:#f7f7f7;font-style:italic}tr.diverged td{color:#a33}
.scroll{overflow-x:auto}.note{color:#555;font-size:.9em}
.warn{background:#fff6e0;border:1px solid #e8c66a;padding:.5em .8em;border-radius:4px}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#444}pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.8em}
"""

SCRIPT = """
(function(){
  var errors = 0;
  window.addEventListener('error', function(){ errors += 1;
    document.body.setAttribute('data-js-errors', String(errors)); }, true);
  function check(){
    var imgs = Array.prototype.slice.call(document.images);
    var ok = imgs.every(function(i){ return i.complete && i.naturalWidth > 0; });
    document.body.setAttribute('data-images-total', String(imgs.length));
    document.body.setAttribute('data-images-decoded',
      String(imgs.filter(function(i){ return i.naturalWidth > 0; }).length));
    document.body.setAttribute('data-images-loaded', ok ? 'true' : 'false');
  }
  document.body.setAttribute('data-js-errors', '0');
  check();
  window.addEventListener('load', check);
})();
"""


def _escape(x) -> str:
    return html.escape(str(x))


def _number(v, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _leaderboard_table(rows: list[Row]) -> str:
    cols = columns(rows)
    head = "".join(f"<th>{_escape(h)}</th>" for h in ["method", "status", "epochs", "seeds"] + [h for _, h in cols])
    body = []
    for r in rows:
        cls = "target" if r.method == "target" else ("diverged" if r.status == "diverged" else "")
        cells = [r.label, r.status, _number(r.epochs, 2).rstrip("0").rstrip(".") if r.epochs else "0",
                 seeds_label(r.seeds)]
        cells += [cell_text(r, k) if k in r.metrics else "—" for k, _ in cols]
        body.append(f'<tr class="{cls}">' + "".join(f"<td>{_escape(c)}</td>" for c in cells) + "</tr>")
    return f'<div class="scroll"><table id="leaderboard"><tr>{head}</tr>{"".join(body)}</table></div>'


def _reference_tables() -> str:
    base = "".join(f"<tr><td>{_escape(m)}</td><td>{_number(a)}</td><td>{_number(t)}</td><td>{_number(s)}</td><td>{_number(u)}</td>"
                   f"<td>{_escape(n)}</td></tr>" for m, a, t, s, u, n in PUBLISHED_BASELINES)
    sem = "".join(f"<tr><td>{_escape(team)}</td><td>{_escape(size)}</td><td>{_number(a)}</td><td>{_number(t)}</td><td>{_number(s)}</td>"
                  f"<td>{_number(u)}</td></tr>" for team, size, a, t, s, u in PUBLISHED_SEMEVAL)
    return (
        '<p class="warn"><b>Published numbers on another model (OLMo-7B), not comparable</b> with the '
        "numbers above: different target model, data size and compute. They are here to show what the "
        "official scoring gives on the official target (SPEC.md §3).</p>"
        "<h3>LUME baselines (OLMo-7B target, task website)</h3>"
        '<table id="published-baselines"><tr><th>method</th><th>final</th><th>task aggregate</th>'
        f"<th>MIA score</th><th>MMLU</th><th>note</th></tr>{base}</table>"
        "<h3>SemEval-2025 Task 4 leaderboard (8×A100, 1-hour budget)</h3>"
        '<table id="published-semeval"><tr><th>team</th><th>model</th><th>final</th><th>task aggregate</th>'
        f"<th>MIA score</th><th>MMLU</th></tr>{sem}</table>")


def _figures(paths: list[Path]) -> str:
    out = []
    for p in paths:
        data = base64.b64encode(p.read_bytes()).decode("ascii")
        cap = FIGURE_CAPTIONS.get(p.name, p.stem)
        out.append(f'<figure><img alt="{_escape(cap)}" data-name="{_escape(p.name)}" src="data:image/png;base64,{data}">'
                   f"<figcaption>{_escape(cap)}</figcaption></figure>")
    return "".join(out)


def _provenance(run_dir: Path, runs: list[MethodRun]) -> tuple[dict, dict]:
    """(resolved config, provenance) from ``config.json`` / ``run.json``, else ``unlearn.json``."""
    config = read_json(run_dir / "config.json", expect=dict) if (run_dir / "config.json").exists() else {}
    prov = read_json(run_dir / "run.json", expect=dict) if (run_dir / "run.json").exists() else {}
    if not prov:
        for r in runs:
            if r.info.get("versions"):
                prov = {"from": str(r.path / "unlearn.json"),
                        "seeds": sorted({x.seed_label for x in runs if x.seed is not None}, key=str),
                        **{k: r.info[k] for k in ("data_fingerprint", "versions", "machine", "started_at")
                           if k in r.info}}
                break
    return config, prov


def _provenance_table(prov: dict) -> str:
    rows = []
    meta = prov.get("meta", prov)
    for key in ("name", "seeds", "data_fingerprint", "data_source", "target", "started_at", "finished_at",
                "timings_last_invocation"):
        for src in (prov, meta):
            if key in src and src[key] not in (None, "", {}):
                v = src[key]
                rows.append((key, json.dumps(v) if isinstance(v, (dict, list)) else v))
                break
    tinfo = prov.get("target_info") or {}
    for key in ("base", "memorisation", "target_met", "epochs", "train_wall_s", "key"):
        if key in tinfo:
            v = tinfo[key]
            rows.append((f"target: {key}", json.dumps(v) if isinstance(v, (dict, list)) else v))
    for k, v in (meta.get("versions") or {}).items():
        rows.append((f"version: {k}", v))
    for k, v in flatten(meta.get("machine") or {}).items():  # the numerics too: CPU, ISA, kernels, MKL, threads
        rows.append((f"machine: {k}", ", ".join(map(str, v)) if isinstance(v, list) else v))
    return '<table id="provenance">' + "".join(
        f"<tr><th>{_escape(k)}</th><td style='text-align:left'>{_escape(v)}</td></tr>" for k, v in rows) + "</table>"


def render_html(run_dir: Path, rows: list[Row], plots: list[Path], runs: list[MethodRun]) -> str:
    config, prov = _provenance(run_dir, runs)
    yaml_path = run_dir / "config.yaml"
    config_text = (yaml_path.read_text(encoding="utf-8") if yaml_path.exists()
                   else json.dumps(config, indent=2))
    name = config.get("name") or run_dir.name
    diverged = [r.label for r in rows if r.status == "diverged"]
    partial = any(r.mmlu_partial for r in rows)
    notes = []
    if partial:
        notes.append("* MMLU was measured on a per-subject sample (partial): a rough utility signal, "
                     "not the full 14k-question test set.")
    if diverged:
        notes.append("Diverged (stopped by the loss guard): " + ", ".join(diverged)
                     + "; their numbers are from the last evaluation.")
    notes += seed_notes(rows)
    notes_html = "".join(f'<p class="note">{_escape(n)}</p>' for n in notes)
    rob = robustness_notes(run_dir)
    rob_html = ("<h2>Robustness</h2>" + "".join(f'<p class="note">{_escape(n)}</p>' for n in rob)) if rob else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>lumebench report: {_escape(name)}</title>
<style>{CSS}</style></head>
<body>
<h1>lumebench report: {_escape(name)}</h1>
<p class="note">Generated {_escape(time.strftime('%Y-%m-%d %H:%M:%S %Z'))} from the results in
<code>{_escape(run_dir)}</code>. Scores follow the official SemEval-2025 Task 4 evaluation (SPEC.md §2).</p>
<h2>Leaderboard</h2>
{_leaderboard_table(rows)}
<p class="note">final = mean(task aggregate, MMLU, MIA score); task aggregate = harmonic mean of the 12 terms
(forget terms as 1 − v); MIA score = 1 − 2·|AUC − 0.5|. F/R = forget/retain, T1–T3 = tasks,
reg = regurgitation (ROUGE-L recall), kno = knowledge (exact match); ↓ lower is better, ↑ higher is better.</p>
{notes_html}
{rob_html}
<h2>Curves</h2>
{_figures(plots)}
<h2>Reference: published OLMo-7B numbers</h2>
{_reference_tables()}
<h2>Run configuration and provenance</h2>
{_provenance_table(prov)}
<h3>Resolved configuration</h3>
<pre id="config">{_escape(config_text)}</pre>
<script>{SCRIPT}</script>
</body></html>
"""


def build_report(run_dir: str | Path, sources=None) -> Path:
    """Rebuild ``leaderboard.{md,json}``, ``plots/*.png`` and ``report.html`` in ``run_dir`` from the
    results: those of the run folder itself, or of ``sources`` (a list of method folders)."""
    run_dir = Path(run_dir)
    sources = run_dir if sources is None else [Path(s) for s in sources]
    runs = collect(sources)
    if not runs:
        where = run_dir if isinstance(sources, Path) else ", ".join(str(s) for s in sources)
        raise LumeError(f"no results found in {where} (no method folder with a curve.jsonl)")
    rows = build_leaderboard(sources)
    write_leaderboard(run_dir, rows)
    plots = make_plots(run_dir, runs=runs, rows=rows)
    return atomic_write_text(run_dir / "report.html", render_html(run_dir, rows, plots, runs))
