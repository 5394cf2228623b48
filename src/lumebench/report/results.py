"""Read what a run wrote: per-method unlearning curves and the numbers the report shows.

A run folder (``runs/<name>/``, see :mod:`lumebench.pipeline.run`) holds one folder per method and
seed, each written by :func:`lumebench.pipeline.unlearn.unlearn`:

- ``curve.jsonl``: one line per evaluation, ``{"epoch": e, "step": s, "results": {...}}``; epoch 0
  is the target before unlearning; ``results`` carries the official keys of SPEC.md §2.
- ``unlearn.json``: method, hyperparameters, status (``finished`` / ``diverged`` / ...).

Everything the leaderboard, the plots and the HTML page show is read from these files, so
``lume report RUN_DIR`` rebuilds the report from results alone. Folders are found by searching for
``curve.jsonl``; a folder named ``seed<k>`` belongs to the method named by its parent folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from lumebench.data.records import SPLITS, TASKS
from lumebench.errors import LumeError
from lumebench.io import read_json
from lumebench.curve import CURVE, Evaluation, read_curve
from lumebench.metrics_table import BY_NAME, leaderboard_metrics, report_summary

SCORE_KINDS = ("regurgitation", "knowledge")
# The 12 task terms in the official order (SPEC.md §2): forget T1 reg, T1 kno, ..., retain T3 kno.
TERMS: tuple[tuple[str, str, str], ...] = tuple((s, t, k) for s in SPLITS for t in TASKS for k in SCORE_KINDS)

# Scalar metrics of one evaluation: short name -> (label, official results key), read from the
# one table of metrics (lumebench.metrics_table); kept for readers of this name.
SCALARS = {m.name: (m.label, m.official[0]) for m in leaderboard_metrics() if len(m.official) == 1}

_SEED_DIR = re.compile(r"^seed[-_]?(\d+)\Z")


def term_key(split: str, task: str, kind: str) -> str:
    return f"{split}/{task}/{kind}"


def terms(results: dict) -> dict[str, float | None]:
    """The 12 raw per-split, per-task means (forget values NOT inverted: lower = more forgotten)."""
    return {term_key(*t): BY_NAME[term_key(*t)].value(results) for t in TERMS}


def summary(results: dict) -> dict[str, float | None]:
    """Scalar metrics + 12 terms of one evaluation (+ the opt-in metrics measured), keyed by short
    name (:func:`lumebench.metrics_table.report_summary`; the terms as :func:`term_key`)."""
    return report_summary(results)


@dataclass
class MethodRun:
    """One method at one seed: its evaluations (``curve.jsonl``) and what ``unlearn.json`` says about it."""

    label: str
    path: Path
    curve: list[Evaluation]
    info: dict = field(default_factory=dict)
    seed: int | None = None
    #: the target build it ran on (``target<k>`` of a run with several targets; "" for one target)
    build: str = ""

    @property
    def seed_label(self):
        """The unlearning seed, with its target build where a run has several (``target1:0``)."""
        return f"{self.build}:{self.seed}" if self.build else self.seed

    @property
    def method(self) -> str:
        return str(self.info.get("method") or self.label)

    @property
    def status(self) -> str:
        """``finished``, ``diverged``, ``running`` (interrupted) or what ``unlearn.json`` says."""
        s = str(self.info.get("status") or "")
        if s.startswith("diverged"):
            return "diverged"
        return s or "incomplete"

    @property
    def status_detail(self) -> str:
        return str(self.info.get("status") or "incomplete")

    @property
    def before_point(self) -> Evaluation | None:
        return next((p for p in self.curve if p.step == 0), None)

    @property
    def before(self) -> dict | None:
        p = self.before_point
        return p.results if p else None

    @property
    def final_point(self) -> Evaluation | None:
        """The evaluation of the model the method ended with (after a divergence: the restored one,
        ``last_good_step`` of ``unlearn.json``)."""
        after = [p for p in self.curve if p.step != 0]
        if not after:
            # a run that ended (e.g. diverged on its first step) without changing the model
            return self.curve[0] if self.curve and self.status in ("finished", "diverged") else None
        good = self.info.get("last_good_step")
        return next((p for p in after if p.step == good), after[-1])

    @property
    def final(self) -> dict | None:
        p = self.final_point
        return p.results if p else None

    @property
    def final_epoch(self) -> float | None:
        p = self.final_point
        return p.epoch if p else None

    def points(self) -> list[tuple[float, dict]]:
        """(epoch, summary) for every evaluation, in order."""
        return [(p.epoch, summary(p.results)) for p in self.curve]


def load_method_dir(path: Path, label: str | None = None) -> MethodRun:
    path = Path(path)
    info = read_json(path / "unlearn.json", expect=dict) if (path / "unlearn.json").exists() else {}
    curve = read_curve(path)
    seed = None
    m = _SEED_DIR.match(path.name)
    if m:
        seed = int(m.group(1))
        label = label or path.parent.name
    if isinstance(info.get("seed"), int):
        seed = info["seed"]
    label = label or info.get("label") or path.name
    return MethodRun(label=str(label), path=path, curve=curve, info=info, seed=seed)


def collect(sources: Path | str | Iterable[Path | str]) -> list[MethodRun]:
    """Every method run under a run folder (or in a list of method folders), in config order.

    The order is that of ``methods`` in the run's ``config.json`` when there is one, else by name.
    """
    builds: dict[Path, str] = {}
    if isinstance(sources, (str, Path)):
        root = Path(sources)
        if not root.is_dir():
            raise LumeError("run folder not found", path=str(root))
        dirs = sorted({p.parent for p in root.rglob(CURVE) if ".cache" not in p.parts})
        for d in dirs:  # <run>/target<k>/methods/<label>/seed<s>: a run over several target builds
            rel = d.relative_to(root).parts
            if len(rel) >= 4 and rel[1] == "methods" and _BUILD_DIR.match(rel[0]):
                builds[d] = rel[0]
        order = _config_order(root)
    else:
        dirs, order = [Path(s) for s in sources], []
    runs = [load_method_dir(d) for d in dirs]
    for r in runs:
        r.build = builds.get(r.path, "")
    runs = [r for r in runs if r.curve]
    seen: dict[tuple, Path] = {}
    for r in runs:
        key = (r.label, r.build, r.seed)
        if key in seen:
            raise LumeError(f"two results for method '{r.label}' seed {r.seed_label} ({seen[key]} and {r.path}); "
                            "point at one run folder, or give method folders with distinct names")
        seen[key] = r.path
    rank = {name: i for i, name in enumerate(order)}
    runs.sort(key=lambda r: (rank.get(r.label, len(rank)), r.label, r.build, r.seed if r.seed is not None else -1))
    return runs


_BUILD_DIR = re.compile(r"^target\d+$")


def _config_order(root: Path) -> list[str]:
    cfg_path = root / "config.json"
    if not cfg_path.exists():
        return []
    cfg = read_json(cfg_path, expect=dict)
    return [m.get("label") or m.get("name") for m in cfg.get("methods", []) if isinstance(m, dict)]


def group(runs: list[MethodRun]) -> dict[str, list[MethodRun]]:
    """Method label -> its runs (one per seed), keeping the order of ``runs``."""
    out: dict[str, list[MethodRun]] = {}
    for r in runs:
        out.setdefault(r.label, []).append(r)
    return out
