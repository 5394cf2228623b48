"""``lume compare RUN_A RUN_B``: for two runs of the same config, which numbers differ and which
provenance fields differ, so that a difference between two machines can be explained.

The numbers are every method run's final evaluation (the 12 terms, task aggregate, MIA, MMLU,
final score) and the target's evaluation before unlearning, matched by (method label, target
build, seed). The provenance is ``run.json``'s record (versions, machine and its numerics: CPU
model and ISA, ATen kernels, MKL mode, threads, GPU) and the target's ``target.json``; timings and
dates are left out (they always differ).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lumebench.errors import LumeError
from lumebench.io import read_json
from lumebench.provenance import flatten
from lumebench.report.results import collect, summary

#: provenance fields that differ between any two runs and explain nothing
NOISE = ("started_at", "finished_at", "timings_last_invocation", "wall_s", "train_wall_s", "cpu_s", "tokens_per_s",
         "torch_threads_used", "seconds", "target", "path")


def _numbers(run_dir: Path) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for r in collect(run_dir):
        where = f"{r.label} {r.seed_label}"
        if r.before is not None:
            for k, v in summary(r.before).items():
                out[f"target {r.build + ':' if r.build else ''}{r.seed} before unlearning / {k}"] = v
        if r.final is not None:
            for k, v in summary(r.final).items():
                out[f"{where} / {k}"] = v
    return out


def _provenance(run_dir: Path) -> dict[str, Any]:
    prov: dict[str, Any] = {}
    for f in sorted(run_dir.rglob("run.json")):
        if ".cache" in f.parts:
            continue
        rel = f.parent.relative_to(run_dir).as_posix()
        rec = read_json(f, expect=dict)
        for k, v in flatten(rec).items():
            if not any(part in NOISE for part in k.split(".")) and not k.startswith("methods."):
                prov[f"{rel + '/' if rel != '.' else ''}{k}"] = v
    return prov


def compare(a: str | Path, b: str | Path) -> dict:
    """``{"numbers": [(key, a, b)], "provenance": [(key, a, b)], "only_a": [...], "only_b": [...]}``."""
    a, b = Path(a), Path(b)
    for p in (a, b):
        if not p.is_dir():
            raise LumeError("run folder not found", path=str(p))
    na, nb = _numbers(a), _numbers(b)
    pa, pb = _provenance(a), _provenance(b)
    numbers = [(k, na[k], nb[k]) for k in na if k in nb and na[k] != nb[k]]
    prov = [(k, pa.get(k), pb.get(k)) for k in sorted(set(pa) | set(pb)) if pa.get(k) != pb.get(k)]
    return {"numbers": numbers, "provenance": prov, "compared": len(set(na) & set(nb)),
            "only_a": sorted(set(na) - set(nb)), "only_b": sorted(set(nb) - set(na))}


def explain(diff: dict) -> list[str]:
    """A reading of the provenance differences: what decides bits, in words."""
    keys = {k.split("/")[-1] for k, _, _ in diff["provenance"]}
    out = []
    if any(k.endswith("numerics.aten_capability") for k in keys):
        out.append("ATen ran other CPU kernels (numerics.aten_capability): softmax, attention and norms round "
                   "differently; lumebench pins AVX2 unless --native-kernels")
    if any(k.endswith("numerics.mode") or k.endswith("numerics.portable") for k in keys):
        out.append("one run used the pinned, portable numerics and the other did not (numerics.mode)")
    if any(".mkl" in k or "MKL_CBWR" in k for k in keys):
        out.append("MKL ran another code path or version (numerics.mkl*): matrix products round differently")
    if any("threads" in k for k in keys):
        out.append("another thread count: float sums can depend on it")
    if any(k.startswith("versions.") or ".versions." in k for k in keys):
        out.append("other library versions (versions.*)")
    if any("gpu" in k or "gpus" in k for k in keys):
        out.append("another GPU or GPU library: GPU bits are specific to the device and its libraries")
    if any("config" in k or "data_fingerprint" in k for k in keys):
        out.append("the runs' configs or data differ: they are not runs of the same benchmark")
    return out


def format_diff(diff: dict, a: str, b: str, limit: int = 40) -> str:
    lines = []
    n = diff["numbers"]
    if not n and not diff["only_a"] and not diff["only_b"]:
        lines.append(f"numbers: all {diff['compared']} identical")
    else:
        lines.append(f"numbers: {len(n)} of {diff['compared']} differ (A = {a}, B = {b})")
        for k, x, y in n[:limit]:
            lines.append(f"  {k}: {x} -> {y}")
        if len(n) > limit:
            lines.append(f"  ... and {len(n) - limit} more")
        for side, keys in (("A", diff["only_a"]), ("B", diff["only_b"])):
            if keys:
                lines.append(f"  only in {side}: {len(keys)} numbers (e.g. {keys[0]})")
    p = diff["provenance"]
    lines.append(f"provenance: {'identical' if not p else f'{len(p)} fields differ'}")
    for k, x, y in p[:limit]:
        lines.append(f"  {k}: {x} -> {y}")
    reasons = explain(diff)
    if reasons and (n or diff["only_a"] or diff["only_b"]):
        lines.append("likely why: " + "; ".join(reasons))
    return "\n".join(lines) + "\n"
