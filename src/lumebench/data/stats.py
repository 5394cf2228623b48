"""Shape of a benchmark: per split and task, documents, rows and word-length percentiles.

Word length = ``len(text.split())``. Percentiles interpolate linearly between ranks (numpy's
default), so they are exact on small sets too.
"""

from __future__ import annotations

from lumebench.data.records import SPLITS, TASKS, Benchmark

PERCENTILES = (10, 50, 90)
LENGTH_COLUMNS = ("sc_in", "sc_out", "qa_out")  # sc inputs, sc outputs, qa outputs (gold answers)


def percentile(values: list[int], q: float) -> float:
    """The q-th percentile (0–100) with linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _words(texts) -> list[int]:
    return [len(t.split()) for t in texts]


def benchmark_stats(bench: Benchmark) -> list[dict]:
    """One record per (split, task) present: documents, rows, and p10/p50/p90 word lengths."""
    out = []
    for split in SPLITS:
        for task in TASKS:
            rows = bench.select(split=split, task=task)
            if not rows:
                continue
            sc = [r for r in rows if r.kind == "sc"]
            qa = [r for r in rows if r.kind == "qa"]
            lengths = {"sc_in": _words(r.input for r in sc), "sc_out": _words(r.output for r in sc),
                       "qa_out": _words(r.output for r in qa)}
            rec = {"split": split, "task": task, "documents": len({r.doc_id for r in rows}),
                   "rows": len(rows)}
            for col in LENGTH_COLUMNS:
                rec[col] = {f"p{q}": round(percentile(lengths[col], q), 1) for q in PERCENTILES}
            out.append(rec)
    return out


def format_table(stats: list[dict], title: str = "") -> str:
    """An aligned text table; length cells read ``p10/p50/p90`` in words."""
    header = ["split", "task", "docs", "rows"] + [f"{c} p10/p50/p90" for c in LENGTH_COLUMNS]

    def cell(p: dict) -> str:
        return "/".join(f"{v:g}" for v in p.values())

    body = [[s["split"], s["task"], f"{s['documents']:,}", f"{s['rows']:,}"]
            + [cell(s[c]) for c in LENGTH_COLUMNS] for s in stats]
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    right = {2, 3}

    def line(r: list[str]) -> str:
        return "  ".join(v.rjust(w) if i in right else v.ljust(w)
                         for i, (v, w) in enumerate(zip(r, widths))).rstrip()

    lines = ([title] if title else []) + [line(header), line(["-" * w for w in widths])]
    lines += [line(r) for r in body]
    return "\n".join(lines)
