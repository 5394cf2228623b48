"""Result files: atomic writes (temp file + rename), append-as-produced jsonl, strict reading, and a
lock that keeps two processes from writing into the same output folder (an OS lock on the folder
itself, no file left in it).

- Every write goes to a temporary file in the same folder, is fsynced, then renamed over the target:
  a reader (or a resumed run after a crash) sees the old file or the whole new one, never half.
  Files get the usual permissions (0666 minus the umask, e.g. 0644), not ``mkstemp``'s 0600. The
  temporary file of a writer that died mid-write is removed by the next write of the same file.
- JSON has no NaN or infinity: a non-finite number is written as ``null`` (strict JSON readers
  reject ``NaN``), never as ``NaN``.
- Readers turn every way a file can be unreadable (missing, a directory, not UTF-8, malformed, the
  wrong JSON type) into one :class:`~lumebench.errors.DataError` line.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import secrets
from pathlib import Path
from typing import Any, Iterable, Iterator

from lumebench.errors import DataError, LumeError
from lumebench.faults import fault


def _tmp_path(path: Path) -> Path:
    """``.<name>.<pid>-<random>.tmp`` beside ``path`` (the pid tells a crashed writer's leftovers)."""
    return path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"


def _remove_leftovers(path: Path) -> None:
    """Delete temporary files of ``path`` left by a writer that died mid-write (its pid is gone)."""
    for p in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = p.name[len(path.name) + 2:].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                p.unlink()
        except OSError:
            pass  # alive under another user: not ours to touch


def _umask() -> int:
    """This process's umask, read without changing it where Linux shows it (``/proc/self/status``)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text()
        return int(next(l for l in status.splitlines() if l.startswith("Umask:")).split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def usual_permissions(path: str | os.PathLike) -> None:
    """Give a file that a library wrote (``safetensors.torch.save_file`` creates 0600 files) the
    usual permissions of a result file, 0666 minus the umask (e.g. 0644), as every write here has."""
    os.chmod(path, 0o666 & ~_umask())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.
    The file gets the usual permissions (0666 minus the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            f.flush()
            fault(f"write:{path.name}")  # the fault tests crash here, with half a temporary file
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _remove_leftovers(path)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _finite(obj: Any) -> Any:
    """``obj`` with every NaN / infinity replaced by None (JSON has no such numbers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def dumps(obj: Any, **kw) -> str:
    """Strict JSON text: a non-finite number becomes ``null``."""
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False, **kw)
    except ValueError:
        return json.dumps(_finite(obj), ensure_ascii=False, allow_nan=False, **kw)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, dumps(obj, indent=2, sort_keys=False) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> Path:
    """Atomically write a whole jsonl file (one JSON object per line)."""
    text = "".join(dumps(r) + "\n" for r in records)
    return atomic_write_text(path, text)


def atomic_save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict | None = None) -> Path:
    """``safetensors.torch.save_file`` made atomic (temporary file + rename)."""
    from safetensors.torch import save

    return atomic_write_bytes(path, save(tensors, metadata=metadata))


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one record as it is produced (flushed + fsynced, so a crash loses at most this line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _drop_cut_off_tail(path)
    with open(path, "a", encoding="utf-8") as f:
        f.write(dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _drop_cut_off_tail(path: Path) -> None:
    """Remove a last line that a killed append left without its newline, so that the next record
    starts a line of its own (otherwise the cut-off line would stop being the last one, which
    :func:`iter_jsonl` tolerates, and every later read would fail on it)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)  # 0 when the file is one cut-off line


def deepest_line(text: str) -> tuple[int, int]:
    """``(depth, line)``: the deepest nesting of ``[``/``{`` in a JSON (or TOML, flow YAML) text,
    outside strings, and the 1-based line where it is first reached."""
    depth = deepest = 0
    line = at = 1
    quote, escaped = None, False
    for ch in text:
        if ch == "\n":
            line += 1
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest, at = depth, line
        elif ch in "]}":
            depth -= 1
    return deepest, at


def too_deep(path: str | os.PathLike, text: str, line: int | None = None, *, depth_line=None) -> DataError:
    """The one line for a value nested deeper than a parser can follow (Python's recursion limit,
    ``sys.getrecursionlimit()``, 1,000 by default, bounds the JSON, YAML and TOML parsers): bad
    input, not a bug. ``line``: the line ``text`` starts on (a jsonl line); ``depth_line``: a
    ``(depth, line)`` the caller found itself (YAML block nesting has no brackets)."""
    import sys

    depth, at = depth_line or deepest_line(text)
    return DataError(f"nested {depth:,} levels deep, more than can be read (the parser's limit is about "
                     f"{sys.getrecursionlimit():,}; a data or config file nests a few levels)",
                     path=str(path), line=(line or 1) + at - 1)


def parse_json(text: str, path: str | os.PathLike, line: int | None = None, **kw) -> Any:
    """``json.loads(text, **kw)``; a value nested too deep is one :func:`too_deep` line naming ``path``
    and the line (``line``: where ``text`` starts). Syntax errors raise ``json.JSONDecodeError``."""
    try:
        return json.loads(text, **kw)
    except RecursionError:
        raise too_deep(path, text, line) from None


def iter_jsonl(path: str | os.PathLike, *, tolerate_truncated_tail: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)``; a malformed line raises a one-line :class:`DataError`.

    ``tolerate_truncated_tail`` skips a broken *last* line (a run killed mid-append) instead of failing.
    """
    path = Path(path)
    lines = read_text(path).split("\n")
    last = max((i for i, l in enumerate(lines) if l.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = parse_json(line, path, i + 1)
        except json.JSONDecodeError as e:
            if tolerate_truncated_tail and i == last:
                return
            raise DataError(f"malformed JSON ({e.msg} at column {e.colno})", path=str(path), line=i + 1) from None
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=str(path), line=i + 1)
        yield i + 1, obj


def read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of a file; missing, a directory, unreadable or not UTF-8 -> one line."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError("file not found", path=str(path)) from None
    except IsADirectoryError:
        raise DataError("is a directory, not a file", path=str(path)) from None
    except PermissionError:
        raise DataError("no permission to read it", path=str(path)) from None
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason} at byte {e.start})", path=str(path)) from None
    except OSError as e:
        raise DataError(f"cannot read it ({e.strerror or e})", path=str(path)) from None


_JSON_TYPES = {dict: "a JSON object", list: "a JSON list"}


def read_json(path: str | os.PathLike, expect: type | None = None) -> Any:
    """Parse a JSON file; ``expect=dict`` (or ``list``) also checks the top-level type."""
    path = Path(path)
    text = read_text(path)
    try:
        obj = parse_json(text, path)
    except json.JSONDecodeError as e:
        raise DataError(f"malformed JSON ({e.msg})", path=str(path), line=e.lineno) from None
    if expect is not None and not isinstance(obj, expect):
        got = "null" if obj is None else type(obj).__name__
        raise DataError(f"expected {_JSON_TYPES.get(expect, expect.__name__)}, got {got}", path=str(path))
    return obj


def inside(base: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Resolve ``path`` and refuse it unless it lies inside ``base`` (never write outside the output dir)."""
    base_r, p = Path(base).resolve(), Path(path).resolve()
    if p != base_r and base_r not in p.parents:
        raise DataError(f"refusing to write outside the output directory {base_r}", path=str(p))
    return p


def _lock_holder(fd: int) -> str:
    """The pid holding a ``flock`` on the file or folder open as ``fd``, from ``/proc/locks`` (Linux:
    ``<n>: FLOCK ADVISORY WRITE <pid> <major>:<minor>:<inode> ...``, major and minor in hex; see
    proc(5)), or ``?`` where that cannot be told."""
    st = os.fstat(fd)
    me = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == me:
                return parts[4]
    return "?"


def _take_lock(directory: Path) -> tuple[int, Path | None]:
    """``flock`` ``directory`` for this process: the folder itself (nothing is written into it) or,
    on a file system that cannot lock a folder (NFS emulates ``flock`` with byte-range locks, which
    need a file open for writing), the file ``<directory>/.lume.lock``, returned to be removed at
    the end. Returns the locked fd; raises :class:`LumeError` when another process holds the lock."""
    import fcntl

    def refuse(fd: int):
        holder = _lock_holder(fd)
        os.close(fd)
        return LumeError(f"another lume process (pid {holder}) is writing into this folder; wait for it "
                         "to finish or choose another output folder", path=str(directory))

    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd, None
    except BlockingIOError:
        raise refuse(fd) from None
    except OSError:
        os.close(fd)
    lock_file = directory / ".lume.lock"
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise refuse(fd) from None
        try:  # the holder before us removed the file as we opened it: lock the one now there
            if os.stat(lock_file).st_ino == os.fstat(fd).st_ino:
                return fd, lock_file
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def output_lock(directory: str | os.PathLike):
    """Hold a lock on ``directory`` while writing into it; a second process that asks for the same
    folder gets a one-line refusal at once instead of interleaving its files with ours.

    - The lock is an OS ``flock`` on the folder itself: no lock file is left among the results (two
      runs of the same command give identical folders). It is released when the process ends in any
      way (a ``kill -9`` included), so a crash never leaves a stale lock behind. The refusal names
      the holder's pid (from ``/proc/locks``).
    - Under a launcher (``torchrun`` / ``accelerate launch``: :func:`lumebench.launcher.launch`) only
      the main process (rank 0) takes the lock: it alone writes, and the other processes of the same
      command must not be refused by it. They neither take nor wait for it.
    - A folder the lock had to create is removed again when nothing was written into it (an input
      error found after the checks at the border).
    """
    from lumebench.launcher import launch

    directory = Path(directory)
    if not launch().main:
        yield
        return
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl  # noqa: F401
    except ImportError:  # not POSIX: no lock
        yield
        return
    fd, lock_file = _take_lock(directory)
    try:
        try:
            yield
        finally:
            if lock_file is not None:  # the fallback file: gone while we still hold it
                with contextlib.suppress(OSError):
                    lock_file.unlink()
            # a folder this lock created and nothing else wrote into (an error before any result):
            # leave no trace of it
            if created and not any(directory.iterdir()):
                with contextlib.suppress(OSError):
                    directory.rmdir()
    finally:
        os.close(fd)
