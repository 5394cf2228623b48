"""Load a LUME benchmark from disk or (when online) from GitHub / the Hugging Face hub.

``load_benchmark(source)`` accepts:

- a directory holding the official layout ``forget.jsonl`` + ``retain.jsonl`` (directly, or in
  ``official/`` or ``data/``), with MIA files ``mia/member.jsonl`` + ``mia/nonmember.jsonl`` (or
  ``mia_data/``) loaded automatically when present;
- a directory holding the SemEval parquet splits ``{forget,retain}_{train,validation}-*.parquet``
  (directly, or in ``semeval/`` or ``data/``); rows carry a ``split`` field; train + validation are
  combined unless ``which`` says otherwise;
- one ``.jsonl`` or ``.parquet`` file whose rows carry a ``split`` field;
- an online id: ``lume`` / ``github:OWNER/REPO[@REF]`` (raw ``data/forget.jsonl`` and
  ``data/retain.jsonl``) or ``semeval`` / ``hf:REPO_ID`` (a dataset with ``data/*.parquet`` and
  ``mia_data/*.jsonl``), downloaded once into ``$LUME_CACHE`` (default ``~/.cache/lumebench``).

Each kind of source is an entry of the :data:`lumebench.registry.SOURCES` registry (``hub``,
``file``, ``jsonl``, ``parquet``, ``generated:DOCS[:SEED]``): an entry claims a source text and
loads it; a user registers their own in a few lines (docs/contributing.md, "Add a data source").
Every loader validates (see :mod:`lumebench.data.validate`); a problem is one ``DataError`` line.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from lumebench.data.records import SPLITS, Benchmark, MiaDoc, Row
from lumebench.data.validate import (Where, check_mia, check_mia_disjoint, check_no_leak, check_split,
                                     mia_from_record, row_from_record)
from lumebench.errors import DataError, LumeError
from lumebench.io import iter_jsonl
from lumebench.registry import SOURCES

LUME_GITHUB = "amazon-science/lume-llm-unlearning"
SEMEVAL_HF = "llmunlearningsemeval2025organization/semeval25-unlearning-dataset-public"
ALIASES = {"lume": f"github:{LUME_GITHUB}", "semeval": f"hf:{SEMEVAL_HF}"}
PARQUET_PARTS = ("train", "validation")
MIA_DIRS = ("mia", "mia_data")
# Seconds to wait for GitHub / the hub before saying it is unreachable (override: LUME_NET_TIMEOUT).
NET_TIMEOUT_S = 10.0


# --------------------------------------------------------------------------------- single files
def _records(path: Path) -> Iterable[tuple[Where, dict]]:
    """(where, record) for every row of a jsonl or parquet file."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            records = pq.read_table(path).to_pylist()
        except FileNotFoundError:
            raise DataError("file not found", path=str(path)) from None
        except Exception as e:  # pyarrow raises several types for a corrupt file
            raise DataError(f"not a readable parquet file ({type(e).__name__}: {e})", path=str(path)) from None
        for i, obj in enumerate(records):
            yield Where(str(path), i + 1), obj
    else:
        for line, obj in iter_jsonl(path):
            yield Where(str(path), line), obj


def _read_rows(paths: Sequence[Path], split: str | None) -> tuple[list[Row], list[Where]]:
    rows, wheres = [], []
    for path in paths:
        for where, obj in _records(path):
            rows.append(row_from_record(obj, where, split))
            wheres.append(where)
    return rows, wheres


def load_rows(path: str | Path, split: str, *, validate: bool = True) -> list[Row]:
    """Rows of one official jsonl (or parquet) file, all in ``split`` (``forget`` or ``retain``)."""
    if split not in SPLITS:
        raise LumeError(f"unknown split {split!r} (expected forget or retain)")
    rows, wheres = _read_rows([Path(path)], split)
    if validate:
        check_split(split, rows, wheres, [str(path)])
    return rows


def _load_mia_file(path: Path) -> list[MiaDoc]:
    docs, wheres = [], []
    for line, obj in iter_jsonl(path):
        where = Where(str(path), line)
        docs.append(mia_from_record(obj, where))
        wheres.append(where)
    check_mia(docs, wheres, str(path))
    return docs


def _mia_dir(path: Path) -> Path | None:
    """The directory holding member.jsonl / nonmember.jsonl: ``path`` itself or its mia/ subfolder."""
    for d in (path, *(path / m for m in MIA_DIRS)):
        if (d / "member.jsonl").is_file() or (d / "nonmember.jsonl").is_file():
            return d
    return None


def load_mia(path: str | Path) -> tuple[list[MiaDoc], list[MiaDoc]]:
    """``(members, non-members)`` from a directory holding ``member.jsonl`` and ``nonmember.jsonl``
    (or its ``mia/`` / ``mia_data/`` subfolder). Only ``id`` and ``document`` are read."""
    path = Path(path)
    d = _mia_dir(path) if path.is_dir() else None
    if d is None:
        raise DataError("no MIA files here (expected member.jsonl and nonmember.jsonl)", path=str(path))
    members, nonmembers = _load_mia_file(d / "member.jsonl"), _load_mia_file(d / "nonmember.jsonl")
    check_mia_disjoint(members, str(d / "member.jsonl"), nonmembers, str(d / "nonmember.jsonl"))
    return members, nonmembers


# --------------------------------------------------------------------------------- layouts
def _find_jsonl_dir(d: Path) -> Path | None:
    for base in (d, d / "official", d / "data"):
        if (base / "forget.jsonl").is_file() or (base / "retain.jsonl").is_file():
            return base
    return None


def _find_parquet_dir(d: Path) -> Path | None:
    for base in (d, d / "semeval", d / "data"):
        if any(base.glob("forget_*.parquet")) or any(base.glob("retain_*.parquet")):
            return base
    return None


def _parquet_files(base: Path, split: str, which: Sequence[str]) -> list[Path]:
    files = []
    for part in which:
        if part not in PARQUET_PARTS:
            raise LumeError(f"unknown SemEval part {part!r} (expected train and/or validation)")
        found = sorted(base.glob(f"{split}_{part}-*.parquet")) + sorted(base.glob(f"{split}_{part}.parquet"))
        if not found:
            raise DataError(f"no {split}_{part}-*.parquet file", path=str(base))
        files += found
    return files


def _benchmark(forget: tuple[list[Row], list[Where]], retain: tuple[list[Row], list[Where]],
               forget_files: list[str], retain_files: list[str], validate: bool,
               mia: tuple[list[MiaDoc], list[MiaDoc]], source: str, whole_documents: bool = True) -> Benchmark:
    if validate:
        check_split("forget", *forget, forget_files, whole_documents=whole_documents)
        check_split("retain", *retain, retain_files, whole_documents=whole_documents)
        if not forget[0] and not retain[0]:
            raise DataError("no rows in forget or retain", path=", ".join(map(str, forget_files + retain_files)))
        check_no_leak(*forget, *retain)
    return Benchmark(forget[0], retain[0], mia[0], mia[1], source=source)


@dataclass(frozen=True)
class Request:
    """How ``load_benchmark`` was asked to load (handed to every data source's loader)."""

    mia: str | Path | None = None
    validate: bool = True
    which: tuple[str, ...] = PARQUET_PARTS
    whole_documents: bool = True

    def mia_docs(self, *near: Path) -> tuple[list[MiaDoc], list[MiaDoc]]:
        """The MIA documents: from ``mia`` when given, else found beside the data (none if absent)."""
        if self.mia is not None:
            return load_mia(self.mia)
        d = next((d for d in (_mia_dir(p) for p in near if p.is_dir()) if d is not None), None)
        return load_mia(d) if d is not None else ([], [])

    def from_records(self, records: Iterable[dict], where: str, source: str, first_line: int = 1) -> Benchmark:
        """A validated benchmark from row records carrying a ``split`` field (``where`` names the
        file in an error, the i-th record is on line ``first_line + i``)."""
        rows, wheres = [], []
        for i, obj in enumerate(records):
            rows.append(row_from_record(obj, Where(where, first_line + i), None))
            wheres.append(Where(where, first_line + i))
        return self.from_rows(rows, wheres, [where], source)

    def from_rows(self, rows: list[Row], wheres: list[Where], files: list[str], source: str,
                  mia: tuple[list[MiaDoc], list[MiaDoc]] | None = None) -> Benchmark:
        by = {s: ([r for r in rows if r.split == s], [w for r, w in zip(rows, wheres) if r.split == s])
              for s in SPLITS}
        return _benchmark(by["forget"], by["retain"], files, files, self.validate,
                          self.mia_docs() if mia is None else mia, source, self.whole_documents)


# --------------------------------------------------------------------------------- sources
# Each data source is an entry of SOURCES: ``claims(text)`` says whether it reads the source text
# (a path or an id), the entry's function loads it: ``fn(text, request) -> Benchmark``. They are
# tried by ``order`` (a user's own first: 0), then name; nothing claiming ``text`` is one error.

@SOURCES.register("hub", help="online ids: lume, semeval, github:OWNER/REPO[@REF], hf:REPO_ID (cached)",
                  order=10, claims=lambda text: not Path(text).exists() and
                  ALIASES.get(text, text).startswith(("github:", "hf:")))
def _hub_source(text: str, req: Request) -> Benchmark:
    return _load_dir(resolve_source(text), req, text)


@SOURCES.register("file", help="one .jsonl or .parquet file whose rows carry a split field", order=20,
                  claims=lambda text: Path(text).expanduser().is_file())
def _file_source(text: str, req: Request) -> Benchmark:
    path = Path(text).expanduser()
    rows, wheres = _read_rows([path], None)
    return req.from_rows(rows, wheres, [str(path)], text)


@SOURCES.register("jsonl", help="a folder with forget.jsonl + retain.jsonl (or in official/, data/) and "
                  "mia/member.jsonl + nonmember.jsonl", order=30,
                  claims=lambda text: Path(text).expanduser().is_dir() and _find_jsonl_dir(Path(text).expanduser()) is not None)
def _jsonl_source(text: str, req: Request) -> Benchmark:
    return _load_dir(Path(text).expanduser(), req, text)


@SOURCES.register("parquet", help="a folder with the SemEval {forget,retain}_{train,validation}-*.parquet "
                  "splits (or in semeval/, data/)", order=40,
                  claims=lambda text: Path(text).expanduser().is_dir() and _find_parquet_dir(Path(text).expanduser()) is not None)
def _parquet_source(text: str, req: Request) -> Benchmark:
    return _load_dir(Path(text).expanduser(), req, text)


@SOURCES.register("generated", help="generated:DOCS[:SEED]: the offline generator's benchmark (DOCS documents "
                  "per task), written once into the cache", order=5,
                  claims=lambda text: text.startswith("generated:") and not Path(text).exists())
def _generated_source(text: str, req: Request) -> Benchmark:
    from lumebench.data.generate import generate_benchmark

    parts = text.split(":")[1:]
    if not (1 <= len(parts) <= 2 and all(p.isdigit() for p in parts) and int(parts[0]) > 0):
        raise LumeError(f"expected generated:DOCS[:SEED] with whole numbers (DOCS > 0), got {text!r}")
    docs, seed = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    out = cache_dir() / "generated" / f"{docs}docs-seed{seed}"
    if not (out / "forget.jsonl").is_file():
        generate_benchmark(out, docs_per_task=docs, seed=seed)
    return _load_dir(out, req, text)


def _load_dir(path: Path, req: Request, source: str) -> Benchmark:
    if not path.is_dir():
        raise DataError("not found (expected a directory, a .jsonl/.parquet file, or an online id: "
                        "lume, semeval, github:OWNER/REPO, hf:REPO_ID)", path=str(path))
    base = _find_jsonl_dir(path)
    if base is not None:
        forget_files = [base / "forget.jsonl"]
        retain_files = [base / "retain.jsonl"]
    else:
        base = _find_parquet_dir(path)
        if base is None:
            raise DataError("no LUME data here: expected forget.jsonl + retain.jsonl, or the SemEval "
                            "{forget,retain}_{train,validation}-*.parquet files", path=str(path))
        forget_files = _parquet_files(base, "forget", req.which)
        retain_files = _parquet_files(base, "retain", req.which)
    return _benchmark(_read_rows(forget_files, "forget"), _read_rows(retain_files, "retain"),
                      [str(f) for f in forget_files], [str(f) for f in retain_files],
                      req.validate, req.mia_docs(path, base), source, req.whole_documents)


# --------------------------------------------------------------------------------- online
def cache_dir() -> Path:
    """Where downloads are kept: ``$LUME_CACHE`` or ``~/.cache/lumebench``."""
    return Path(os.environ.get("LUME_CACHE") or Path.home() / ".cache" / "lumebench")


def _offline() -> bool:
    return os.environ.get("LUME_OFFLINE", "") not in ("", "0")


def _timeout() -> float:
    return float(os.environ.get("LUME_NET_TIMEOUT", NET_TIMEOUT_S))


_LOCAL_HINT = ("pass a local directory instead (one holding forget.jsonl + retain.jsonl, e.g. "
               "../shared/lume-data/official, or the SemEval parquet files), or write one offline "
               "with `lume data generate --out DIR`")


def _fetch_github(repo: str) -> Path:
    """Download ``data/forget.jsonl`` and ``data/retain.jsonl`` of a GitHub repo (once)."""
    repo, _, ref = repo.partition("@")
    ref = ref or "main"
    target = cache_dir() / "github" / repo / ref
    names = ("forget.jsonl", "retain.jsonl")
    if all((target / n).is_file() for n in names):
        return target
    base = os.environ.get("LUME_GITHUB_RAW", "https://raw.githubusercontent.com").rstrip("/")
    for name in names:
        url = f"{base}/{repo}/{ref}/data/{name}"
        if _offline():
            raise LumeError(f"cannot download {url}: offline (LUME_OFFLINE is set); {_LOCAL_HINT}")
        try:
            with urllib.request.urlopen(url, timeout=_timeout()) as resp:
                blob = resp.read()
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise LumeError(f"GitHub is unreachable: could not download {url} ({reason}); "
                            f"{_LOCAL_HINT}") from None
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / f".{name}.part"
        tmp.write_bytes(blob)
        os.replace(tmp, target / name)
    return target


def _fetch_hf(repo_id: str) -> Path:
    """Download a dataset's ``data/*.parquet`` and ``mia_data/*.jsonl`` from the Hugging Face hub."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise LumeError(f"the Hugging Face hub client is not installed (pip install huggingface_hub); "
                        f"{_LOCAL_HINT}") from None
    offline = _offline() or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", cache_dir=cache_dir() / "hf",
                                      allow_patterns=["data/*.parquet", "mia_data/*.jsonl"],
                                      local_files_only=offline, etag_timeout=_timeout()))
    except Exception as e:  # the hub client raises many types (connection, auth, not found, offline)
        why = "offline mode (HF_HUB_OFFLINE / LUME_OFFLINE) and not in the cache" if offline else \
            (str(e).strip().split("\n")[0].removeprefix("Got: ")[:200] or type(e).__name__)
        raise LumeError(f"the Hugging Face hub is unreachable for dataset {repo_id} ({why}); "
                        f"{_LOCAL_HINT}") from None


def resolve_source(source: str | Path) -> Path:
    """A local path for ``source``: the path itself, or the cache folder of an online id."""
    text = str(source)
    text = ALIASES.get(text, text)
    if isinstance(source, str) and not Path(source).exists():
        if text.startswith("github:"):
            return _fetch_github(text[len("github:"):])
        if text.startswith("hf:"):
            return _fetch_hf(text[len("hf:"):])
    return Path(source).expanduser()


def load_benchmark(source: str | Path, *, mia: str | Path | None = None, validate: bool = True,
                   which: Sequence[str] = PARQUET_PARTS, whole_documents: bool = True) -> Benchmark:
    """Load and validate a LUME benchmark (see the module docstring for what ``source`` may be).

    ``mia``: a directory with ``member.jsonl`` / ``nonmember.jsonl`` (default: found beside the data).
    ``validate=False`` skips the whole-split checks (duplicates, sc1, leaks, empty split); rows are
    always checked. ``whole_documents=False`` (scoring: ``lume eval``/``score``) accepts any
    non-empty set of rows — a sample, one task, one split — without the sc1-per-document and
    non-empty-split checks, which only work on whole documents needs (fine-tuning, unlearning).
    ``which``: the SemEval parts to combine (``train``, ``validation``).
    """
    text = str(source)
    req = Request(mia, validate, tuple(which), whole_documents)
    for e in sorted(SOURCES.entries(), key=lambda e: (e.meta.get("order", 0), e.name)):
        claims = e.meta.get("claims")
        if claims is None:
            raise LumeError(f"data source {e.name!r} was registered without claims=: say which sources it reads")
        if claims(text):
            return e.obj(text, req)
    return _load_dir(resolve_source(source), req, text)  # nothing claims it: the one "not found" error
