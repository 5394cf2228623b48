"""Reading an evaluation's saved files back, without a model (``lume score``, and :func:`lumebench.eval.evaluate.evaluate`
when it resumes): ``generations.jsonl`` checked strictly, the MIA summary from ``mia.jsonl``, and every
metric recomputed from the files."""

from __future__ import annotations

import math
from pathlib import Path

from lumebench.data.records import ROW_KINDS, SPLITS, Row
from lumebench.errors import DataError
from lumebench.eval import metrics
from lumebench.io import iter_jsonl, read_json

GENERATION_FIELDS = ("id", "task", "split", "kind", "input", "gold", "generated")


def read_generations(path: str | Path) -> list[dict]:
    """Read ``generations.jsonl`` strictly: every field the metrics need, with the right type
    (gold and generated must be JSON strings — an SSN written as a number would lose its zeros),
    and each row checked by the rules of a data file (:mod:`lumebench.data.validate`): a known task
    and split, an id of the official grammar for its task, the ``kind`` the id says, no row twice
    in a split and no document in both splits. A row the benchmark could not hold would otherwise
    be scored, and move the means (issue 29: a ``Task9`` row moved the forget regurgitation)."""
    from lumebench.data.validate import Where, check_no_leak, check_split, row_from_record

    records = []
    rows: dict[str, tuple[list[Row], list[Where]]] = {s: ([], []) for s in SPLITS}
    for line, obj in iter_jsonl(path):
        for f in GENERATION_FIELDS:
            if f not in obj:
                raise DataError("missing field", path=str(path), line=line, field=f)
            if not isinstance(obj[f], str):
                raise DataError(f"expected a string, got {type(obj[f]).__name__}", path=str(path),
                                line=line, field=f)
        if obj["kind"] not in ROW_KINDS:
            raise DataError(f"kind must be sc or qa, got {obj['kind']!r}", path=str(path), line=line, field="kind")
        where = Where(str(path), line)
        try:
            row = row_from_record({"id": obj["id"], "task": obj["task"], "split": obj["split"],
                                   "input": obj["input"], "output": obj["gold"]}, where, None)
        except DataError as e:  # the data file's "output" is this file's "gold"
            raise DataError(e.message, path=e.path, line=e.line,
                            field="gold" if e.field == "output" else e.field) from None
        if row.kind != obj["kind"]:
            raise DataError(f"kind {obj['kind']!r} but the id {obj['id']!r} is a {row.kind} row", path=str(path),
                            line=line, field="kind")
        rows[row.split][0].append(row)
        rows[row.split][1].append(where)
        records.append(obj)
    if not records:
        raise DataError("no generations in the file", path=str(path))
    for split in SPLITS:  # counted twice, a row would weigh twice in every mean
        check_split(split, *rows[split], [str(path)], whole_documents=False)
    check_no_leak(*rows["forget"], *rows["retain"])
    return records


def read_mia(path: str | Path) -> dict:
    """The MIA summary recomputed from ``mia.jsonl`` (fields ``member`` and ``nll`` per document)."""
    from lumebench.eval.mia import roc_auc

    labels, scores, attack_scores = [], [], {}
    for line, obj in iter_jsonl(path):
        for f in ("member", "nll"):
            if f not in obj:
                raise DataError("missing field", path=str(path), line=line, field=f)
        if not isinstance(obj["nll"], (int, float)) or isinstance(obj["nll"], bool) or not math.isfinite(obj["nll"]):
            raise DataError(f"expected a finite number, got {obj['nll']!r}", path=str(path), line=line, field="nll")
        if obj["member"] not in (True, False, 0, 1):
            raise DataError(f"expected true or false, got {obj['member']!r}", path=str(path), line=line,
                            field="member")
        labels.append(int(bool(obj["member"])))
        scores.append(-float(obj["nll"]))
        scores_obj = obj.get("scores") or {}
        if not isinstance(scores_obj, dict):
            raise DataError("expected an object of attack scores", path=str(path), line=line, field="scores")
        for k, v in scores_obj.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise DataError(f"expected a finite number, got {v!r}", path=str(path), line=line,
                                field=f"scores.{k}")
            attack_scores.setdefault(k, []).append(v)
    if len(set(labels)) < 2:
        raise DataError("needs both member and non-member documents", path=str(path), field="member")
    auc = roc_auc(labels, scores)
    summary = {"mia_loss_acc": auc, "n_members": sum(labels), "n_nonmembers": len(labels) - sum(labels)}
    if attack_scores and all(len(v) == len(labels) for v in attack_scores.values()):
        summary["auc"] = {k: roc_auc(labels, v) for k, v in attack_scores.items()}
    return summary


def score_files(generations: str | Path, *, mia: str | Path | None = None,
                mmlu: str | Path | None = None, official_csv: bool = True) -> dict:
    """Recompute every metric from saved files, without a model (``lume score``). Any non-empty
    set of rows is scored; missing cells leave their terms and the task aggregate ``None``."""
    records = read_generations(generations)
    for r in records:
        r.update(metrics.score_row(r["kind"], r["gold"], r["generated"], official_csv=official_csv))
    mia_summary = read_mia(mia) if mia else None
    mmlu_avg = None
    if mmlu:
        from lumebench.checks import probability

        m = read_json(mmlu, expect=dict)
        if "average_acc" not in m:
            raise DataError("missing field", path=str(mmlu), field="average_acc")
        if isinstance(m["average_acc"], (str, bool)):
            raise DataError(f"expected a number, got {m['average_acc']!r}", path=str(mmlu), field="average_acc")
        mmlu_avg = probability(m["average_acc"], "average_acc", path=str(mmlu))  # an accuracy, in [0, 1]
    res = metrics.aggregate(records, mia_auc=None if mia_summary is None else mia_summary["mia_loss_acc"],
                            mmlu_average=mmlu_avg)
    return res
