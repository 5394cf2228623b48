"""Every metric lumebench reports, declared once (issue 26).

A :class:`Metric` says where its value sits in an evaluation's ``results.json`` (the official key
path), its short name (the key of summaries, ``leaderboard.json`` and a sweep's ``select_on``), its
label, which direction is better, its role (score, forget, retain, privacy, utility), whether it is
drawn, how seeds are combined, its leaderboard column and its field in ``curve.jsonl``. The scoring
summaries (:func:`curve_summary`, :func:`report_summary`), the leaderboard's columns, the plots, the
HTML report, the sweep's selection and ``lume score`` read :data:`METRICS`; nothing else lists
metrics.

A metric that is not part of the official protocol is off by default (``default=False``): it is
computed only when asked for (``lume eval --metric NAME``, ``EvalConfig(metrics=[NAME])``) by its
``compute`` function (``"module:function"``, imported when needed), and shown only where measured.
Adding one = one entry here + the module that computes it (docs/contributing.md, "Add a metric").
"""

from __future__ import annotations

from dataclasses import dataclass

from lumebench.errors import LumeError

SPLITS_TASKS = [(s, t) for s in ("forget", "retain") for t in ("Task1", "Task2", "Task3")]
_SHORT = {"Task1": "T1", "Task2": "T2", "Task3": "T3", "regurgitation": "reg", "knowledge": "kno"}


@dataclass(frozen=True)
class Metric:
    """One metric. ``official``: its key path in ``results.json``; ``better``: ``higher``, ``lower``,
    ``0.5`` or ``0`` (closest to that value is best); ``role``: ``score``, ``forget``, ``retain``, ``privacy``,
    ``utility``; ``aggregation``: how seeds combine (``mean``: mean ± sample standard deviation);
    ``column``: leaderboard position (None: not a column); ``curve``: its field in ``curve.jsonl``'s
    readable summary (None: not there); ``plot``: the figure it is drawn in (None: not drawn);
    ``default``: measured by every evaluation (False: only when asked for, by ``compute``)."""

    name: str
    official: tuple[str, ...]
    label: str
    better: str
    role: str
    aggregation: str = "mean"
    column: int | None = None
    curve: str | None = None
    plot: str | None = None
    header: str | None = None
    default: bool = True
    compute: object = None  # "module:function", or the function itself
    help: str = ""

    @property
    def plotted(self) -> bool:
        return self.plot is not None

    @property
    def column_header(self) -> str:
        return self.header or self.label

    def raw(self, results: dict):
        """The value as written in ``results`` (None when absent)."""
        d = results
        for k in self.official:
            if not isinstance(d, dict) or k not in d:
                return None
            d = d[k]
        return d

    def value(self, results: dict) -> float | None:
        """The value as a float (None when absent, not a number, or NaN)."""
        v = self.raw(results)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
            return None
        return float(v)

    def sign(self) -> float:
        """+1 when higher is better, -1 when lower is (for selecting the best)."""
        if self.better not in ("higher", "lower"):
            raise LumeError(f"metric {self.name!r} is best at {self.better}, not at an end: select on another")
        return 1.0 if self.better == "higher" else -1.0

    @property
    def compute_name(self) -> str | None:
        """``module:function`` of the computing function (what a stage's fingerprint records)."""
        c = self.compute
        return c if c is None or isinstance(c, str) else f"{c.__module__}:{c.__qualname__}"

    def compute_fn(self):
        """The function computing an opt-in metric: ``fn(MetricInput) -> {"results": {...}, ...}``."""
        import importlib

        if callable(self.compute):
            return self.compute
        mod, _, fn = (self.compute or "").partition(":")
        return getattr(importlib.import_module(mod), fn)


def _term(i: int, split: str, task: str, kind: str) -> Metric:
    arrow = "↓" if split == "forget" else "↑"
    return Metric(f"{split}/{task}/{kind}", (f"{split}-set", task, f"{kind}-score"), f"{split} {kind}",
                  "lower" if split == "forget" else "higher", split, column=5 + i,
                  plot=f"{task.lower()}.png", header=f"{split[0].upper()} {_SHORT[task]} {_SHORT[kind]} {arrow}")


def _overall(split: str, kind: str) -> Metric:
    return Metric(f"{split}_{kind}", (f"{split}-set", f"overall-{kind}-score"), f"{split} {kind}",
                  "lower" if split == "forget" else "higher", split, curve=f"{split}_{kind}")


# In curve.jsonl order (the oldest file); the leaderboard orders by ``column``.
METRICS: list[Metric] = [
    *(_overall(s, k) for s in ("forget", "retain") for k in ("regurgitation", "knowledge")),
    Metric("task_aggregate", ("harmonic-mean-task-aggregate",), "task aggregate", "higher", "score",
           column=1, curve="task_aggregate", plot="scores.png"),
    Metric("mia_auc", ("mia_loss_acc",), "MIA AUC", "0.5", "privacy", column=3, curve="mia_auc",
           plot="mia_auc.png", help="AUC of the LOSS attack, members vs non-members (0.5 = indistinguishable)"),
    Metric("mia_score", ("mia_final_score",), "MIA score", "higher", "privacy", column=2, curve="mia_score"),
    Metric("mmlu", ("mmlu_average",), "MMLU", "higher", "utility", column=4, curve="mmlu", plot="utility.png"),
    Metric("final", ("aggregate-score",), "final score", "higher", "score", column=0, curve="final_score",
           plot="scores.png"),
    *(_term(i, s, t, k) for i, (s, t, k) in
      enumerate((s, t, k) for s, t in SPLITS_TASKS for k in ("regurgitation", "knowledge"))),
    # --- opt-in metrics (off by default; computed only when asked for) ---------------------------
    Metric("exact_memorization", ("exact_memorization",), "exact memorization", "lower", "forget",
           column=100, curve="exact_memorization", default=False,
           compute="lumebench.eval.memorization:exact_memorization",
           help="forget rows: fraction of answer tokens whose argmax prediction given the gold prefix "
                "is the gold token (Tirumala et al. 2022)"),
    Metric("extraction_strength", ("extraction_strength",), "extraction strength", "lower", "forget",
           column=101, curve="extraction_strength", default=False,
           compute="lumebench.eval.memorization:extraction_strength",
           help="forget rows: 1 - smallest prefix fraction of the answer from which greedy decoding "
                "gives the rest exactly (Carlini et al. 2021)"),
    Metric("gradnorm_auc", ("mia_gradnorm_auc",), "GradNorm MIA AUC", "0.5", "privacy", column=102,
           curve="gradnorm_auc", default=False, compute="lumebench.eval.gradnorm:gradnorm_mia",
           help="AUC of the gradient-norm attack: score -||grad of the document loss wrt the "
                "parameters||_2, members labelled 1"),
    Metric("privleak", ("privleak",), "privleak", "0", "privacy", column=103, curve="privleak",
           default=False, compute="lumebench.eval.privleak:privleak",
           help="MUSE privleak (AUC - AUC_ref) / AUC_ref of Min-K% (k=0.4), reference = the "
                "reference model; 0 = as private as the reference"),
]

@dataclass
class MetricInput:
    """What an opt-in metric's ``compute`` function is given: the model and tokenizer, the benchmark,
    the evaluated rows, their scored generation records, the reference ``(model, tokenizer)`` (or
    None) and the engine name. It returns ``{"results": {official key: value}, ...details}``."""

    model: object
    tokenizer: object
    benchmark: object
    rows: list
    records: list
    reference: object = None
    engine: str = "fast"


BY_NAME = {m.name: m for m in METRICS}
_ALIASES = {m.curve: m for m in METRICS if m.curve}


def register_metric(m: Metric) -> Metric:
    """Add an opt-in metric from outside this file (a plugin, the docs' recipe); the built-in ones are
    the entries above. Its name, curve field and official key must be new."""
    if m.default or m.compute is None:
        raise LumeError(f"metric {m.name!r}: an added metric is opt-in (default=False) with a compute function")
    taken = [x.name for x in METRICS if {m.name, m.curve} & {x.name, x.curve} or x.official == m.official]
    if taken:
        raise LumeError(f"metric {m.name!r} clashes with {taken[0]!r} (name, curve field or official key)")
    METRICS.append(m)
    BY_NAME[m.name] = m
    if m.curve:
        _ALIASES[m.curve] = m
    return m


def metric(name: str) -> Metric:
    """A metric by its short name or its ``curve.jsonl`` field (``final`` or ``final_score``)."""
    m = BY_NAME.get(name) or _ALIASES.get(name)
    if m is None:
        raise LumeError(f"unknown metric {name!r}; known: {', '.join(sorted(BY_NAME))}")
    return m


def opt_in() -> list[Metric]:
    """The metrics computed only when asked for."""
    return [m for m in METRICS if not m.default]


def curve_summary(results: dict) -> dict:
    """The readable summary of one evaluation written in ``curve.jsonl`` (an opt-in metric only
    where measured), keyed by the ``curve`` fields."""
    return {m.curve: m.raw(results) for m in METRICS
            if m.curve and (m.default or m.raw(results) is not None)}


def report_summary(results: dict) -> dict[str, float | None]:
    """Every metric of one evaluation as floats (NaN, booleans, absent → None), keyed by short name:
    the leaderboard's and the plots' numbers. An opt-in metric only where measured."""
    out = {}
    for m in sorted((m for m in METRICS if m.column is not None), key=lambda m: m.column):
        v = m.value(results)
        if m.default or v is not None:
            out[m.name] = v
    return out


def leaderboard_metrics(present: set[str] | None = None) -> list[Metric]:
    """The leaderboard's metrics in column order; an opt-in one only when ``present``."""
    return sorted((m for m in METRICS if m.column is not None and (m.default or m.name in (present or ()))),
                  key=lambda m: m.column)


def summary_key(name: str) -> str:
    """The ``curve.jsonl`` summary field of the metric ``name`` (what a sweep's trials compare)."""
    m = metric(name)
    if m.curve is None:
        raise LumeError(f"metric {name!r} is not in an evaluation's summary; choose one of "
                        f"{', '.join(x.name for x in METRICS if x.curve)}")
    return m.curve
