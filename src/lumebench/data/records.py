"""The LUME data model: one :class:`Row` per prompt, a :class:`Benchmark` of forget + retain rows.

Row ids follow the official grammar (SPEC.md §1): ``<doc_id><kind><n>`` where kind is ``sc``
(sentence completion) or ``qa`` (question answering) and n is one digit. ``doc_id`` is a UUID in
literal double quotes for Task1 (``"8f24…233"sc1``), a bare UUID for Task2, and a numeric Wikipedia
page id for Task3. The kind is parsed with the whole grammar, never from the last characters alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Literal

from lumebench.provenance import fingerprint as _fingerprint

TASKS = ("Task1", "Task2", "Task3")
SPLITS = ("forget", "retain")
ROW_KINDS = ("sc", "qa")  # sentence completion (regurgitation), question answering (knowledge)

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
DOC_ID_PATTERNS = {
    "Task1": re.compile(rf'"{_UUID}"'),
    "Task2": re.compile(_UUID),
    "Task3": re.compile(r"[0-9]+"),
}
ID_RE = re.compile(rf'^(?P<doc>"{_UUID}"|{_UUID}|[0-9]+)(?P<kind>sc|qa)(?P<n>[0-9])\Z')


class IdError(ValueError):
    pass


def parse_id(row_id: str, task: str) -> tuple[str, str, int]:
    """Split a row id into ``(doc_id, kind, n)``; raise :class:`IdError` if it breaks the grammar."""
    m = ID_RE.match(row_id)
    if not m:
        raise IdError(f"id {row_id!r} does not match <doc_id>(sc|qa)<digit>")
    doc = m.group("doc")
    pattern = DOC_ID_PATTERNS.get(task)
    if pattern is None:
        raise IdError(f"unknown task {task!r}")
    if not pattern.fullmatch(doc):
        expected = {"Task1": "a quoted UUID", "Task2": "a bare UUID", "Task3": "a numeric page id"}[task]
        raise IdError(f"id {row_id!r}: a {task} document id must be {expected}")
    return doc, m.group("kind"), int(m.group("n"))


@dataclass(frozen=True)
class Row:
    """One LUME prompt. For ``sc`` rows the full document is ``input + " " + output``."""

    id: str
    doc_id: str
    kind: Literal["sc", "qa"]
    n: int
    task: str
    split: str
    input: str
    output: str

    @classmethod
    def from_fields(cls, id: str, task: str, split: str, input: str, output: str) -> "Row":
        doc, kind, n = parse_id(id, task)
        return cls(id=id, doc_id=doc, kind=kind, n=n, task=task, split=split, input=input, output=output)

    def to_official(self) -> dict:
        """The record as written in the official ``forget.jsonl`` / ``retain.jsonl``."""
        return {"id": self.id, "input": self.input, "output": self.output, "task": self.task}


@dataclass(frozen=True)
class Document:
    doc_id: str
    task: str
    split: str
    text: str


@dataclass(frozen=True)
class MiaDoc:
    id: str
    document: str


@dataclass
class Benchmark:
    """Forget rows + retain rows (+ optional MIA member / non-member documents)."""

    forget: list[Row]
    retain: list[Row]
    mia_members: list[MiaDoc] = field(default_factory=list)
    mia_nonmembers: list[MiaDoc] = field(default_factory=list)
    source: str = ""

    @property
    def rows(self) -> list[Row]:
        return self.forget + self.retain

    def split(self, name: str) -> list[Row]:
        return {"forget": self.forget, "retain": self.retain}[name]

    def select(self, *, split: str | None = None, task: str | None = None,
               kind: str | None = None) -> list[Row]:
        return [r for r in self.rows
                if (split is None or r.split == split) and (task is None or r.task == task)
                and (kind is None or r.kind == kind)]

    def documents(self, split: str | None = None, task: str | None = None) -> list[Document]:
        """Full documents (``sc.input + " " + sc.output`` of each document's ``sc1`` row)."""
        return [Document(r.doc_id, r.task, r.split, r.input + " " + r.output)
                for r in self.select(split=split, task=task, kind="sc") if r.n == 1]

    def qa_pairs(self, split: str | None = None, task: str | None = None) -> list[Row]:
        return self.select(split=split, task=task, kind="qa")

    def doc_ids(self, split: str) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.split(split):
            seen.setdefault(r.doc_id, None)
        return list(seen)

    def has_mia(self) -> bool:
        return bool(self.mia_members) and bool(self.mia_nonmembers)

    def fingerprint(self) -> str:
        """Stable content hash of every row and MIA document (order-independent)."""
        rows = sorted((r.split, r.id, r.task, r.input, r.output) for r in self.rows)
        mia = [sorted((d.id, d.document) for d in self.mia_members),
               sorted((d.id, d.document) for d in self.mia_nonmembers)]
        return _fingerprint({"rows": rows, "mia": mia})

    def subset(self, doc_ids: Iterable[str]) -> "Benchmark":
        keep = set(doc_ids)
        return Benchmark([r for r in self.forget if r.doc_id in keep],
                         [r for r in self.retain if r.doc_id in keep],
                         self.mia_members, self.mia_nonmembers, self.source)
