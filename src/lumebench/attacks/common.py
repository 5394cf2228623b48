"""What every attack shares: loading the models attacked, their identity in a step's key, scoring rows
with the evaluation engine, the recovery ratio, and the attack's own output folder.

    out = attack_folder(args.out, models=[unlearned, target])   # never inside a model's folder
    scores = score_rows(model, tok, rows, eval_cfg, out / "eval" / "unlearned")
    ratio = recovery(attacked, unlearned, target)                # {"value": ..., "reason": ...}
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from lumebench.data.records import SPLITS, TASKS, Benchmark, Row
from lumebench.errors import LumeError
from lumebench.io import atomic_write_json, read_json
from lumebench.provenance import fingerprint

#: the knowledge (QA exact match) and regurgitation (sc ROUGE-L recall) of a set of rows
MEASURES = ("knowledge", "regurgitation")


@dataclass
class AttackEval:
    """How an attack evaluates (the engine of ``lume eval``; MIA and MMLU are not part of an attack's
    numbers unless it says so).

    max_new_tokens: generation budget per prompt (256 as the official script; early exits keep the
        scores exact).
    engine: ``fast`` or ``reference``.
    batch_size: ``auto`` or a number (fast engine).
    """

    max_new_tokens: int = 256
    engine: str = "fast"
    batch_size: int | str = "auto"

    def config(self, **extra):
        from lumebench.eval.evaluate import EvalConfig

        kw = {"engine": self.engine, "max_new_tokens": self.max_new_tokens, "batch_size": self.batch_size,
              "mia": False, "mmlu": None}
        return EvalConfig(**{**kw, **extra})

    def to_dict(self) -> dict:
        return asdict(self)


def load(spec) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a model spec (a directory, registry name or hub id), in float32 as
    every unlearning evaluation; a ``(model, tokenizer)`` pair passes through."""
    if isinstance(spec, (tuple, list)):
        return spec[0], spec[1]
    from lumebench import checks
    from lumebench.models import load_model

    with checks.naming("--model"):
        return load_model(str(spec), dtype="float32")


def identity(spec) -> Any:
    """What identifies a model in an attack's key: for a folder its path and the size and time of
    each file (a rewritten model is another model), plus the run record it holds; else the spec; an
    in-memory model by its weights' digest."""
    if isinstance(spec, (tuple, list)):
        from lumebench.eval.evaluate import model_digest

        return {"in_memory": model_digest(spec[0])}
    p = Path(str(spec)).expanduser()
    if not p.exists():
        return {"name": str(spec)}
    p = p.resolve()
    files = [p] if p.is_file() else sorted(f for f in p.iterdir() if f.is_file())
    return {"path": str(p), "files": [(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in files]}


def attack_folder(out, *, models: Sequence[Any] = ()) -> Path:
    """``out`` checked as an output folder that lies outside every attacked model's folder: an
    attack never writes into the unlearned run's (or the target's) folder."""
    from lumebench import checks

    path = checks.output_dir(out, "--out")
    r = path.resolve()
    for spec in models:
        if isinstance(spec, (tuple, list)):
            continue
        m = Path(str(spec)).expanduser()
        if not m.exists():
            continue
        m = m.resolve()
        folder = m if m.is_dir() else m.parent
        # the model folder itself, and the run folder a model/ sits in (unlearn.json beside it)
        run = folder.parent if (folder.parent / "unlearn.json").exists() else folder
        for guarded in {folder, run}:
            if r == guarded or guarded in r.parents:
                raise LumeError(f"the attack's output folder lies inside the attacked model's folder {guarded}; "
                                f"an attack writes only into a folder of its own", field="--out", path=str(path))
    return path


def bench_of(rows: Sequence[Row], source: str = "attack") -> Benchmark:
    """A benchmark of some rows (either split), to hand to the evaluation engine."""
    return Benchmark([r for r in rows if r.split == "forget"], [r for r in rows if r.split == "retain"],
                     source=source)


def scores_of(results: dict) -> dict:
    """``{split: {"knowledge", "regurgitation", "tasks": {task: {...}}}}`` of an evaluation's results
    (the splits with rows; ``None`` where a kind has no rows)."""
    out: dict = {}
    for split in SPLITS:
        block = results.get(f"{split}-set")
        if not isinstance(block, dict):
            continue
        out[split] = {"knowledge": block.get("overall-knowledge-score"),
                      "regurgitation": block.get("overall-regurgitation-score"),
                      "tasks": {t: {"knowledge": block[t].get("knowledge-score"),
                                    "regurgitation": block[t].get("regurgitation-score")}
                                for t in TASKS if isinstance(block.get(t), dict)}}
    return out


def score_rows(model, tokenizer, rows: Sequence[Row], cfg: AttackEval, out_dir: Path | None) -> dict:
    """The evaluation engine on ``rows`` (its files in ``out_dir``, reused on a rerun with the same
    model and rows): :func:`scores_of` of the results."""
    from lumebench.eval.batching import eval_mode
    from lumebench.eval.evaluate import evaluate

    with eval_mode(model):
        res = evaluate(model, tokenizer, bench_of(rows), cfg.config(), out_dir=out_dir)
    return scores_of(res)


def recovery(attacked: float | None, unlearned: float | None, target: float | None) -> dict:
    """The recovery ratio ``(attacked − unlearned) / (target − unlearned)`` (Deeb & Roger 2024,
    arXiv 2410.08827, §3: the share of the unlearning that the attack undoes): 0 = nothing came back,
    1 = back to the target. ``{"value": None, "reason": ...}`` when it is undefined: a score is
    missing, or unlearning moved nothing (target = unlearned)."""
    if attacked is None or unlearned is None or target is None:
        return {"value": None, "reason": "a score is missing (no rows of this kind)"}
    gap = target - unlearned
    if abs(gap) < 1e-9:
        return {"value": None, "reason": f"unlearning did not change this score (target = unlearned = "
                                         f"{target:.3f}): nothing to recover"}
    value = (attacked - unlearned) / gap
    return {"value": value if math.isfinite(value) else None, "reason": None}


def delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def step_key(attack: str, **parts) -> dict:
    """An attack step's key (the step adds the numerics it runs under)."""
    return {"attack": attack, "format": 1, **parts}


def write_result(out: Path, name: str, result: dict) -> Path:
    """``out/<name>.json`` (atomically), with a fingerprint of its content."""
    return atomic_write_json(out / f"{name}.json", {**result, "result_fingerprint": fingerprint(result)})


def read_result(out: Path, name: str) -> dict | None:
    p = Path(out) / f"{name}.json"
    return read_json(p, expect=dict) if p.is_file() else None
