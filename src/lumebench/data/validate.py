"""Validation of LUME data: every loader goes through these checks.

A record becomes a :class:`~lumebench.data.records.Row` only through :func:`row_from_record`, which
checks its fields; a whole split is checked by :func:`check_split` (not empty, no duplicate id,
every document has its ``sc1`` row) and a benchmark by :func:`check_no_leak` (no document in both
forget and retain). Every problem is one :class:`~lumebench.errors.DataError` line naming the file,
the line (parquet: row index + 1) and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from lumebench.data.records import SPLITS, TASKS, IdError, MiaDoc, Row
from lumebench.errors import DataError

REQUIRED_FIELDS = ("id", "input", "output", "task")


@dataclass(frozen=True)
class Where:
    """Where a record came from: file and 1-based line (parquet: row index + 1)."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def row_from_record(obj: dict, where: Where, split: str | None) -> Row:
    """Check one record (fields, task, id grammar) and build its Row.

    ``split`` is the split of the file the record is in; ``None`` means the record must carry a
    ``split`` field itself (a single mixed file). A ``split`` field that disagrees with the file is
    an error.
    """
    for name in REQUIRED_FIELDS:
        if name not in obj:
            raise DataError("missing field", path=where.path, line=where.line, field=name)
        if not isinstance(obj[name], str):
            raise DataError(f"must be a string, got {_type_name(obj[name])}",
                            path=where.path, line=where.line, field=name)
    for name in ("input", "output"):
        if not obj[name].strip():
            raise DataError("is empty (a prompt and its gold text need words; the model cannot be asked "
                            "or scored on nothing)", path=where.path, line=where.line, field=name)
    task = obj["task"]
    if task not in TASKS:
        raise DataError(f"unknown task {task!r} (expected one of {', '.join(TASKS)})",
                        path=where.path, line=where.line, field="task")
    row_split = obj.get("split")
    if row_split is None and split is None:
        raise DataError("missing field: rows of a single file must say which split they belong to "
                        "(forget or retain)", path=where.path, line=where.line, field="split")
    if row_split is not None:
        if row_split not in SPLITS:
            raise DataError(f"unknown split {row_split!r} (expected forget or retain)",
                            path=where.path, line=where.line, field="split")
        if split is not None and row_split != split:
            raise DataError(f"split {row_split!r} in a {split} file",
                            path=where.path, line=where.line, field="split")
    try:
        return Row.from_fields(obj["id"], task, split or row_split, obj["input"], obj["output"])
    except IdError as e:
        raise DataError(str(e), path=where.path, line=where.line, field="id") from None


def check_unique_ids(ids: list[str], wheres: list[Where]) -> None:
    """Every id once; a repeat names both places."""
    first: dict[str, Where] = {}
    for row_id, where in zip(ids, wheres):
        if row_id in first:
            raise DataError(f"duplicate id {row_id!r} (first at {first[row_id]})",
                            path=where.path, line=where.line, field="id")
        first[row_id] = where


def check_split(split: str, rows: list[Row], wheres: list[Where], files: Iterable[str], *,
                whole_documents: bool = True) -> None:
    """A split must have unique ids; for work on whole documents (fine-tuning, unlearning, MIA
    sets: ``whole_documents``) it must also be non-empty and give every document an ``sc1`` row.
    Scoring needs neither: the official script scores any set of rows."""
    if not rows and whole_documents:
        raise DataError(f"the {split} split is empty (no rows)", path=", ".join(map(str, files)))
    check_unique_ids([r.id for r in rows], wheres)
    if not whole_documents:
        return
    doc_first: dict[str, Where] = {}
    with_sc1: set[str] = set()
    for row, where in zip(rows, wheres):
        doc_first.setdefault(row.doc_id, where)
        if row.kind == "sc" and row.n == 1:
            with_sc1.add(row.doc_id)
    for doc, where in doc_first.items():
        if doc not in with_sc1:
            raise DataError(f"document {doc} has no sc1 row (its full text comes from sc1), "
                            f"first row here", path=where.path, line=where.line, field="id")


def check_no_leak(forget: list[Row], forget_wheres: list[Where],
                  retain: list[Row], retain_wheres: list[Where]) -> None:
    """No document may be in both forget and retain."""
    in_forget: dict[str, Where] = {}
    for row, where in zip(forget, forget_wheres):
        in_forget.setdefault(row.doc_id, where)
    for row, where in zip(retain, retain_wheres):
        if row.doc_id in in_forget:
            f = in_forget[row.doc_id]
            raise DataError(f"document {row.doc_id} is in both forget ({f}) and retain ({where}): "
                            f"a leak between the splits", path=where.path, line=where.line, field="id")


def mia_from_record(obj: dict, where: Where) -> MiaDoc:
    """An MIA record needs ``id`` (string or integer) and ``document`` (string); the rest is ignored."""
    if "id" not in obj:
        raise DataError("missing field", path=where.path, line=where.line, field="id")
    doc_id = obj["id"]
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        raise DataError(f"must be a string or an integer, got {_type_name(doc_id)}",
                        path=where.path, line=where.line, field="id")
    if "document" not in obj:
        raise DataError("missing field", path=where.path, line=where.line, field="document")
    if not isinstance(obj["document"], str):
        raise DataError(f"must be a string, got {_type_name(obj['document'])}",
                        path=where.path, line=where.line, field="document")
    if not obj["document"].strip():
        raise DataError("is empty (the attack scores a document's loss)", path=where.path, line=where.line,
                        field="document")
    return MiaDoc(str(doc_id), obj["document"])


def check_mia(docs: list[MiaDoc], wheres: list[Where], path: str) -> None:
    if not docs:
        raise DataError("no MIA documents (empty file)", path=path)
    check_unique_ids([d.id for d in docs], wheres)


def check_mia_disjoint(members: list[MiaDoc], member_path: str, nonmembers: list[MiaDoc],
                       nonmember_path: str) -> None:
    """A document cannot be both a member and a non-member (same id or same text in both files)."""
    ids = {d.id: i for i, d in enumerate(members)}
    texts = {d.document: i for i, d in enumerate(members)}
    for j, d in enumerate(nonmembers):
        for key, seen, what in ((d.id, ids, "id"), (d.document, texts, "document")):
            if key in seen:
                raise DataError(f"the same {what} is a member ({member_path}, document {seen[key] + 1}) "
                                "and a non-member; the attack's two sides must not overlap",
                                path=nonmember_path, field=what)
