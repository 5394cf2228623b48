"""Paraphrased and reformulated probes (``lume attack paraphrase``): the forget facts asked with
held-out question templates and as fill-in-the-blank statements, which neither the target's
fine-tuning nor unlearning ever read (:mod:`lumebench.data.paraphrase`).

An unlearning that suppresses the trained prompts only leaves the fact reachable through another
wording (RWKU, Jin et al. 2024, arXiv 2406.10890, probes a forgotten fact with fill-in-the-blank,
question-answer and adversarial prompts; TOFU, Maini et al. 2024, arXiv 2401.06121, scores paraphrased
and perturbed answers). The attack evaluates the model on the probes with the evaluation engine
(QA exact match, as the official knowledge score) and reports per split and probe type the
knowledge on the probes beside the knowledge on the official questions of the same facts. The retain
probes say whether the model can answer a reworded question at all: a low forget score means little
where the retain probes are low too.
"""

from __future__ import annotations

from pathlib import Path

from lumebench.attacks.common import AttackEval, bench_of, identity, load, step_key, write_result
from lumebench.data.paraphrase import PROBES, Probes, paraphrase_rows
from lumebench.data.records import SPLITS, Benchmark
from lumebench.io import iter_jsonl
from lumebench.step import Step


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _knowledge(path: Path, kind_of=None) -> dict:
    """Knowledge (mean exact match of QA rows) per split (and per probe type) from ``generations.jsonl``."""
    out: dict = {}
    recs = [rec for _, rec in iter_jsonl(path)]
    for split in SPLITS:
        mine = [r for r in recs if r["split"] == split and r["kind"] == "qa"]
        if not mine:
            continue
        block = {"knowledge": _mean([float(r["exact_match"]) for r in mine]), "n": len(mine)}
        if kind_of is not None:
            for probe in PROBES:
                sel = [float(r["exact_match"]) for r in mine if kind_of(split, r["id"]) == probe]
                block[probe] = _mean(sel)
        out[split] = block
    return out


def paraphrase(model_spec, benchmark: Benchmark, out, probes: Probes | None = None,
               ev: AttackEval | None = None) -> dict:
    """Evaluate ``model_spec`` on the probes (default: the generated ones of ``benchmark``'s facts)
    and on the official QA rows of the same documents, into ``out`` (``paraphrase.json``). A step."""
    from lumebench.eval.batching import eval_mode
    from lumebench.eval.evaluate import evaluate

    ev = ev or AttackEval()
    out = Path(out)
    probes = probes if probes is not None else paraphrase_rows(benchmark)
    docs = {r.doc_id for r in probes.rows}
    official = [r for r in benchmark.rows if r.kind == "qa" and r.doc_id in docs]
    key = step_key("paraphrase", model=identity(model_spec), data=benchmark.fingerprint(),
                   probes=sorted((r.split, r.id, r.input, r.output, probes.kind(r)) for r in probes.rows),
                   eval=ev.to_dict())

    def compute() -> dict:
        model, tok = load(model_spec)
        with eval_mode(model):
            evaluate(model, tok, bench_of(probes.rows, "paraphrase probes"), ev.config(), out_dir=out / "eval" / "probes")
            evaluate(model, tok, bench_of(official, "official questions"), ev.config(), out_dir=out / "eval" / "official")
        kinds = {(r.split, r.id): probes.kind(r) for r in probes.rows}
        got = _knowledge(out / "eval" / "probes" / "generations.jsonl", lambda s, i: kinds.get((s, i)))
        ref = _knowledge(out / "eval" / "official" / "generations.jsonl")
        result = {"attack": "paraphrase", "protocol": "held-out templates and fill-in probes (RWKU, TOFU)",
                  "probes_source": probes.source, "eval": ev.to_dict(), "probes": got, "official": ref,
                  "gap": {s: (None if got.get(s, {}).get("knowledge") is None or ref.get(s, {}).get("knowledge") is None
                              else got[s]["knowledge"] - ref[s]["knowledge"]) for s in SPLITS}}
        write_result(out, "paraphrase", result)
        return result

    return Step(out, key, what="paraphrase attack").run(compute)["result"]
