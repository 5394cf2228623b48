"""The leaderboard: one row per method (the target before unlearning first), read from results.

Columns: final score (official ``aggregate-score``), task aggregate (harmonic mean of the 12
terms), MIA score (``1 - 2|AUC - 0.5|``) and the AUC itself, utility (MMLU; marked ``*`` when
measured on a per-subject sample, i.e. partial), then the six forget and six retain terms as raw
means: on forget rows lower is better (forgotten), on retain rows higher is better (kept).

With several seeds a cell is ``mean ± std`` (sample standard deviation over the seeds), and a final
score within the seed spread of the best method's (``|Δ| ≤ √(s₁² + s₂²)``) is marked ``≈``: that
difference is not a finding. With one seed there is no spread, and the table says so. A method's
status is ``finished`` or ``diverged`` (as ``unlearn.json`` says); a diverged method's numbers are
those of its last evaluation. A seed still running (or interrupted) shows its last evaluation only
while no seed of the method has ended; once one has, the cells are over the ended seeds alone (a
mid-training evaluation is not averaged with final ones) and the status says how many were left out.

    rows = build_leaderboard("runs/default")
    write_leaderboard("runs/default", rows)   # leaderboard.md + leaderboard.json, atomically
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from lumebench.io import atomic_write_json, atomic_write_text
from lumebench.metrics_table import BY_NAME, leaderboard_metrics
from lumebench.report.results import MethodRun, collect, group, summary

TARGET_LABEL = "target (before unlearning)"
#: the statuses of a seed whose last evaluation is its final one
ENDED = ("finished", "diverged")


@dataclass
class Stat:
    mean: float | None
    std: float | None
    n: int
    values: list[float]

    @classmethod
    def of(cls, values: Iterable[float | None]) -> "Stat":
        vals = [v for v in values if v is not None]
        if not vals:
            return cls(None, None, 0, [])
        std = statistics.stdev(vals) if len(vals) > 1 else None
        return cls(statistics.fmean(vals), std, len(vals), vals)

    def fmt(self, digits: int = 3) -> str:
        if self.mean is None:
            return "—"
        s = f"{self.mean:.{digits}f}"
        return s if self.std is None else f"{s} ± {self.std:.{digits}f}"


@dataclass
class Row:
    label: str
    method: str
    status: str
    seeds: list
    epochs: float | None
    metrics: dict[str, Stat]
    mmlu_partial: bool = False
    hyperparameters: dict = field(default_factory=dict)
    status_detail: list[str] = field(default_factory=list)
    #: final score within the seed spread of the best method's (None: no spread to compare, or the best)
    tied_with_best: bool | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        d["metrics"] = {k: asdict(v) for k, v in self.metrics.items()}
        return d


def seeds_label(seeds) -> str:
    """``"1 seed (0)"``, ``"3 seeds (0, 1, 2)"``."""
    s = [x for x in seeds if x is not None]
    if not s:
        return "—"
    return f"{len(s)} seed{'' if len(s) == 1 else 's'} ({', '.join(str(x) for x in s)})"


def within_spread(a: Stat, b: Stat) -> bool | None:
    """True when ``|mean_a − mean_b| ≤ √(s_a² + s_b²)``; None when either has fewer than two seeds."""
    if a.mean is None or b.mean is None or a.std is None or b.std is None:
        return None
    return abs(a.mean - b.mean) <= (a.std ** 2 + b.std ** 2) ** 0.5


def mark_ties(rows: list["Row"], key: str = "final") -> None:
    """Set ``tied_with_best`` on every method row (the target row is not a method)."""
    methods = [r for r in rows if r.method != "target" and r.metrics[key].mean is not None]
    if not methods:
        return
    best = max(methods, key=lambda r: BY_NAME[key].sign() * r.metrics[key].mean)
    for r in methods:
        r.tied_with_best = None if r is best else within_spread(r.metrics[key], best.metrics[key])


def _stats(results: list[dict]) -> dict[str, Stat]:
    sums = [summary(r) for r in results]
    keys = [m.name for m in leaderboard_metrics({k for s in sums for k in s})]
    return {k: Stat.of(s.get(k) for s in sums) for k in keys}


def _status(runs: list[MethodRun]) -> str:
    statuses = sorted({r.status for r in runs})
    return statuses[0] if len(statuses) == 1 else "/".join(statuses)


def build_leaderboard(sources) -> list[Row]:
    """Rows from a run folder or a list of method folders; the target (epoch 0) first."""
    runs = collect(sources)
    rows: list[Row] = []
    # Target: the epoch-0 evaluation, one per seed (every method of a seed starts from the same model).
    before: dict = {}
    for r in runs:
        if r.before_point is not None and (r.build, r.seed) not in before:
            before[(r.build, r.seed)] = (r.before, r.before_point.mmlu_partial)
    if before:
        res = [b for b, _ in before.values()]
        rows.append(Row(TARGET_LABEL, "target", "—", sorted((f"{b}:{s}" if b else s for b, s in before), key=str),
                        0.0, _stats(res),
                        any(p for _, p in before.values())))
    for label, rs in group(runs).items():
        done = [r for r in rs if r.final is not None]
        if not done:
            continue
        ended = [r for r in done if r.status in ENDED]
        status, unfinished = _status(rs), len(done) - len(ended)
        if ended and unfinished:
            status += f" ({unfinished} unfinished seed{'s' if unfinished > 1 else ''} not counted)"
            done = ended
        rows.append(Row(label, done[0].method, status, [r.seed_label for r in done],
                        max(r.final_epoch or 0.0 for r in done), _stats([r.final for r in done]),
                        any(r.final_point.mmlu_partial for r in done),
                        dict(done[0].info.get("hyperparameters") or {}),
                        [r.status_detail for r in rs]))
    mark_ties(rows)
    if isinstance(sources, (str, Path)) and Path(sources).is_dir():
        add_robustness(rows, Path(sources))
    return rows


def add_robustness(rows: list[Row], run_dir: Path) -> None:
    """The robustness columns (:mod:`lumebench.report.robustness`) of the rows whose attacks ran."""
    from lumebench.report.robustness import COLUMNS, TARGET, attack_results, metrics

    results = attack_results(run_dir)
    for r in rows:
        seeds = results.get(TARGET if r.method == "target" else r.label)
        if seeds:
            per = [metrics(s) for s in seeds]
            r.metrics.update({k: Stat.of(p[k] for p in per) for k, _ in COLUMNS})


def columns(rows: list[Row] | None = None) -> list[tuple[str, str]]:
    """(metric key, column header) in display order; the robustness columns when ``rows`` have them."""
    present = {k for r in rows or () for k, v in r.metrics.items() if v.mean is not None}
    cols = [(m.name, m.column_header) for m in leaderboard_metrics(present)]
    from lumebench.report.robustness import COLUMNS

    if rows and any(k in r.metrics for r in rows for k, _ in COLUMNS):
        cols += list(COLUMNS)
    return cols


def robustness_notes(run_dir) -> list[str]:
    """The attacks' settings and the robustness summary of a run (none when no attack ran)."""
    from lumebench.report.robustness import attack_results, settings_note, summary_lines

    results = attack_results(run_dir) if run_dir is not None else {}
    note = settings_note(results)
    return ([note] + summary_lines(results)) if note else []


def to_markdown(rows: list[Row], run_dir=None) -> str:
    cols = columns(rows)
    head = ["method", "status", "seeds"] + [h for _, h in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.label, r.status, str(len([s for s in r.seeds if s is not None]) or "—")]
        for k, _ in cols:
            cells.append(cell_text(r, k) if k in r.metrics else "—")
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["", "final = mean(task aggregate, MMLU, MIA score) (official aggregate-score); "
             "F/R = forget/retain, T1-T3 = tasks, reg = regurgitation (ROUGE-L recall), "
             "kno = knowledge (exact match); ↓ lower is better, ↑ higher is better."]
    notes += [
        f"{BY_NAME[k].label}: {BY_NAME[k].help} (not part of the official score)."
        for k, _ in cols if k in BY_NAME and not BY_NAME[k].default]
    if any(r.mmlu_partial for r in rows):
        notes.append("* MMLU measured on a per-subject sample (partial), not the full test set.")
    notes += seed_notes(rows)
    rob = robustness_notes(run_dir)
    if rob:
        notes += [""] + rob
    return "\n".join(lines + notes) + "\n"


def cell_text(r: Row, key: str) -> str:
    """One leaderboard cell: ``mean ± std``, ``*`` for partial MMLU, ``≈`` for a final score tied with the best."""
    cell = r.metrics[key].fmt()
    if key == "mmlu" and r.mmlu_partial and r.metrics[key].mean is not None:
        cell += "*"
    if key == "final" and r.tied_with_best:
        cell += " ≈"
    return cell


def seed_notes(rows: list[Row]) -> list[str]:
    """What the seeds allow one to conclude (shared by the markdown and the HTML report)."""
    n = [len([s for s in r.seeds if s is not None]) for r in rows if r.method != "target"]
    if not n:
        return []
    if max(n) <= 1:
        return ["1 seed: no spread is known, so differences between methods are not findings "
                "(run several seeds, e.g. `seeds: [0, 1, 2]`)."]
    notes = ["Cells with several seeds: mean ± sample standard deviation over the seeds."]
    if any(r.tied_with_best for r in rows):
        notes.append("≈: final score within the seed spread of the best method's (|Δ| ≤ √(s₁² + s₂²)): "
                     "not distinguishable from it.")
    return notes


def write_leaderboard(run_dir: str | Path, rows: list[Row] | None = None) -> tuple[Path, Path]:
    """Write ``leaderboard.md`` and ``leaderboard.json`` into ``run_dir`` (atomically)."""
    run_dir = Path(run_dir)
    rows = build_leaderboard(run_dir) if rows is None else rows
    md = atomic_write_text(run_dir / "leaderboard.md", to_markdown(rows, run_dir))
    js = atomic_write_json(run_dir / "leaderboard.json",
                           {"columns": [{"key": k, "header": h} for k, h in columns(rows)],
                            "rows": [r.to_json() for r in rows]})
    return md, js
