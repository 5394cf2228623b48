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

Every loader validates (see :mod:`lumebench.data.validate`); a problem is one ``DataError`` line.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable, Sequence

from lumebench.data.records import SPLITS, Benchmark, MiaDoc, Row
from lumebench.data.validate import (Where, check_mia, check_mia_disjoint, check_no_leak, check_split,
                                     mia_from_record, row_from_record)
from lumebench.errors import DataError, LumeError
from lumebench.io import iter_jsonl

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


def _load_local(path: Path, mia: str | Path | None, validate: bool, which: Sequence[str],
                source: str, whole_documents: bool = True) -> Benchmark:
    if path.is_file():
        rows, wheres = _read_rows([path], None)
        by_split = {s: ([r for r in rows if r.split == s], [w for r, w in zip(rows, wheres) if r.split == s])
                    for s in SPLITS}
        mia_docs = load_mia(mia) if mia is not None else ([], [])
        return _benchmark(by_split["forget"], by_split["retain"], [str(path)], [str(path)],
                          validate, mia_docs, source, whole_documents)
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
        forget_files = _parquet_files(base, "forget", which)
        retain_files = _parquet_files(base, "retain", which)
    if mia is not None:
        mia_docs = load_mia(mia)
    else:
        d = _mia_dir(path) or _mia_dir(base)
        mia_docs = load_mia(d) if d is not None else ([], [])
    return _benchmark(_read_rows(forget_files, "forget"), _read_rows(retain_files, "retain"),
                      [str(f) for f in forget_files], [str(f) for f in retain_files],
                      validate, mia_docs, source, whole_documents)


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
    path = resolve_source(source)
    return _load_local(path, mia, validate, tuple(which), str(source), whole_documents)
