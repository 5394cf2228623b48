"""Result files: atomic writes (temp file + rename), append-as-produced jsonl, strict jsonl reading."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from lumebench.errors import DataError


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> Path:
    """Atomically write a whole jsonl file (one JSON object per line)."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return atomic_write_text(path, text)


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one record as it is produced (flushed + fsynced, so a crash loses at most this line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def iter_jsonl(path: str | os.PathLike, *, tolerate_truncated_tail: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)``; a malformed line raises a one-line :class:`DataError`.

    ``tolerate_truncated_tail`` skips a broken *last* line (a run killed mid-append) instead of failing.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        raise DataError("file not found", path=str(path)) from None
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason})", path=str(path)) from None
    last = max((i for i, l in enumerate(lines) if l.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            if tolerate_truncated_tail and i == last:
                return
            raise DataError(f"malformed JSON ({e.msg} at column {e.colno})", path=str(path), line=i + 1) from None
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=str(path), line=i + 1)
        yield i + 1, obj


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("file not found", path=str(path)) from None
    except json.JSONDecodeError as e:
        raise DataError(f"malformed JSON ({e.msg})", path=str(path), line=e.lineno) from None


def inside(base: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Resolve ``path`` and refuse it unless it lies inside ``base`` (never write outside the output dir)."""
    base_r, p = Path(base).resolve(), Path(path).resolve()
    if p != base_r and base_r not in p.parents:
        raise DataError(f"refusing to write outside the output directory {base_r}", path=str(p))
    return p
