"""The one cached-step primitive: every resumable stage of the pipeline is a :class:`Step`.

    step = Step(folder, key={"base": "tiny", "data": fingerprint, "config": settings})
    result = step.run(lambda: compute_into(folder))   # computed once; reused on every rerun

A step is

- **an output folder** (what the stage writes lives there);
- **a key**: the JSON-able description of everything its output depends on (stored as a
  fingerprint);
- **compute-or-reuse**: :meth:`Step.run` returns the stored result when the folder's marker holds
  the same key, and otherwise calls ``compute`` (which may itself resume from partial work it left
  in the folder, e.g. the training loop's checkpoint or the evaluations already in ``curve.jsonl``);
- **an atomic completion marker**: ``<folder>/done.json`` (temp file + rename), written by the main
  process once ``compute`` returned, holding the key, the result and the wall/CPU seconds spent.

Used by data generation (:mod:`.data`), target building (:mod:`.target`), unlearning
(:mod:`.unlearn`, one step per method folder, reused by ``lume run``; ZJUKLAB's two parts and their
merge), the reference-NLL cache (:mod:`lumebench.methods.reference_cache`) and the sweep's trials. An
interrupted stage has no marker, so a rerun computes it again (resuming what it can); a marker for
another key is refused by default (``on_other_key="error"``: the folder holds other work) or
recomputed (``"redo"``: a cache whose entry is stale).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lumebench import distributed
from lumebench.errors import LumeError
from lumebench.io import atomic_write_json, read_json
from lumebench.progress import log
from lumebench.provenance import fingerprint

MARKER = "done.json"


@dataclass
class Step:
    """A resumable unit of work (see the module docstring). ``what``: a name for log lines."""

    folder: Path
    key: Any
    what: str = "step"

    def __post_init__(self):
        self.folder = Path(self.folder)

    @property
    def marker(self) -> Path:
        return self.folder / MARKER

    @property
    def fingerprint(self) -> str:
        """The key's hash, with the numerics it is computed under (:func:`lumebench.numerics.cache_tag`):
        a result computed with one machine's native kernels is never reused as a portable one."""
        from lumebench.numerics import cache_tag

        return fingerprint({"key": self.key, "numerics": cache_tag()})

    def record(self) -> dict | None:
        """The marker's content (key, result, timings), or None when the step never completed."""
        if not self.marker.is_file():
            return None
        rec = read_json(self.marker, expect=dict)
        if not isinstance(rec.get("key"), str) or "result" not in rec:
            raise LumeError("not a completion marker of lumebench (no key/result)", path=str(self.marker))
        return rec

    def done(self) -> dict | None:
        """The stored record when the step completed with this key, else None."""
        rec = self.record()
        return rec if rec is not None and rec["key"] == self.fingerprint else None

    def discard(self) -> None:
        """Forget a completion whose output turned out damaged (remove the marker), so that the step
        is computed again. Every process may call it (the removal tolerates a marker already gone)."""
        self.marker.unlink(missing_ok=True)

    def complete(self, result: Any, *, wall_s: float = 0.0, cpu_s: float = 0.0, resumed: bool = False) -> dict:
        """Write the marker (the main process; no barrier, so a step the main process runs alone may
        complete too) and return its content."""
        rec = {"key": self.fingerprint, "what": self.what, "result": result,
               "wall_s": round(wall_s, 1), "cpu_s": round(cpu_s, 1), "resumed": resumed,
               "completed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if distributed.is_main():
            atomic_write_json(self.marker, rec)
        return rec

    def run(self, compute: Callable[[], Any], *, on_other_key: str = "error") -> dict:
        """Compute-or-reuse: the marker's record when it holds this key, else ``compute()``'s result
        recorded in a new marker. Returns the record (its ``result`` is what ``compute`` returned)."""
        rec = self.done()
        if rec is not None:
            log.info("%s: already done in %s, reused", self.what, self.folder)
            return rec
        old = self.record()
        if old is not None and on_other_key == "error":
            raise LumeError(f"this folder holds a finished {self.what} with other inputs; use another "
                            "output folder or delete it", path=str(self.folder))
        resumed = self.folder.is_dir() and any(self.folder.iterdir())
        if old is not None:
            self.discard()
        self.folder.mkdir(parents=True, exist_ok=True)
        t0, c0 = time.time(), time.process_time()
        result = compute()
        return self.complete(result, wall_s=time.time() - t0, cpu_s=time.process_time() - c0, resumed=resumed)
