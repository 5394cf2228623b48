"""A ``lume run`` folder: where each method run lies (:func:`method_dir`), and the run's saved config
(``config.json`` / ``config.yaml``) with what a resumed run may change (:func:`save_config`)."""

from __future__ import annotations

import json
from pathlib import Path

from lumebench import distributed
from lumebench.errors import LumeError
from lumebench.io import atomic_write_json, atomic_write_text, read_json
from lumebench.pipeline.config import RunConfig, to_yaml
from lumebench.progress import log


def method_dir(run_dir: Path, label: str, seed: int) -> Path:
    return run_dir / "methods" / label / f"seed{seed}"


def _diff(old: dict, new: dict, prefix: str = "") -> str | None:
    """The first field (dotted) where two config dicts differ."""
    for k in list(old) + [k for k in new if k not in old]:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            d = _diff(a, b, f"{prefix}{k}.")
            if d:
                return d
        elif a != b:
            return f"{prefix}{k} (was {json.dumps(a)}, now {json.dumps(b)})"
    return None


#: config fields that do not change any result (a resumed run may set them differently); ``attacks``:
#: each attack is a keyed step of its own (changed settings of a finished attack are refused there);
#: ``cluster``: where the runs run
NOT_RESULTS = ("threads", "workers", "attacks", "cluster")
#: config lists a resumed run may extend or shorten: every method run is its own keyed step
#: (``done.json``), so adding a method row or a seed leaves the finished runs valid; a row already
#: in the folder must keep its settings
GROWS = ("methods", "seeds")


def _changed_row(old: list, new: list) -> str | None:
    """The first method row (by label) that both configs have with different settings."""
    before = {m.get("label") or m.get("name"): m for m in old if isinstance(m, dict)}
    for m in new:
        was = before.get(m.get("label") or m.get("name"))
        if was is not None and was != m:
            return f"method {m.get('label') or m.get('name')!r}: {_diff(was, m)}"
    return None


def save_config(run_dir: Path, cfg: RunConfig) -> None:
    """Save the resolved config, or check it against the folder's: a rerun may change ``threads`` and
    ``workers``, add or drop method rows and seeds, but not change a result-bearing setting."""
    new = json.loads(json.dumps(cfg.to_dict()))
    path = run_dir / "config.json"
    if path.exists():
        old = read_json(path, expect=dict)
        d = (_diff({k: v for k, v in old.items() if k not in NOT_RESULTS + GROWS},
                   {k: v for k, v in new.items() if k not in NOT_RESULTS + GROWS})
             or _changed_row(old.get("methods") or [], new["methods"]))
        if d:
            raise LumeError(f"this run folder was made with a different config: {d}; "
                            f"use another --name (or delete the folder) to start afresh", path=str(run_dir))
        if all(old.get(k) == new[k] for k in GROWS) and old.get("attacks") == new.get("attacks"):
            return
        log.info("the config adds or drops method rows or seeds; the finished method runs are kept")
    if distributed.is_main():
        atomic_write_json(path, new)
        atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))
