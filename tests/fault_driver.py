"""The stages the fault tests crash and resume (``tests/test_faults.py``), small enough to run in
seconds: a generated benchmark (1 document per task and split, sentence-completion rows cut to 12
words), a 1-layer tiny model, short generations.

Run as ``python tests/fault_driver.py STAGE ARGS...`` in a subprocess with ``LUME_FAULT=<point>`` (it
dies there with exit status 137, as after ``kill -9``); the tests then resume the same stage
in-process and compare with an uninterrupted run. One torch thread everywhere, so that the numbers
of a subprocess and of the test process are bit-identical.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "vocab_size": 512,
        "max_position": 256}
FINETUNE = {"epochs": 3, "min_steps": 0, "eval_from": 3, "eval_every": 3, "batch_size": 8, "tiny": TINY,
            "mixed_precision": "no", "checkpoint_interval_s": 0.0}
UNLEARN = {"epochs": 2}
RUN_YAML = """\
name: faults
data: {{source: {data}}}
target: {{model: tiny, finetune: {finetune}}}
methods:
  - {{name: ga, overrides: {{epochs: 1}}}}
  - {{name: npo, overrides: {{epochs: 1}}}}
eval: {{max_new_tokens: 8, mmlu: false}}
threads: 1
"""


def make_data(out: Path) -> Path:
    """The generated benchmark with short sentence-completion rows, in the official layout."""
    from lumebench.data.generate import generate_benchmark
    from lumebench.data.loaders import load_benchmark
    from lumebench.io import write_jsonl

    src = generate_benchmark(out / "generated", docs_per_task=1, seed=0)
    b = load_benchmark(src)

    def short(r):
        if r.kind != "sc":
            return r
        return dataclasses.replace(r, input=" ".join(r.input.split()[-12:]), output=" ".join(r.output.split()[:12]))

    d = out / "data"
    write_jsonl(d / "forget.jsonl", [short(r).to_official() for r in b.forget])
    write_jsonl(d / "retain.jsonl", [short(r).to_official() for r in b.retain])
    for name in ("member", "nonmember"):
        docs = b.mia_members if name == "member" else b.mia_nonmembers
        write_jsonl(d / "mia" / f"{name}.jsonl", [{"id": x.id, "document": " ".join(x.document.split()[:40])}
                                                  for x in docs])
    return d


def finetune(data: str, out: str) -> dict:
    from lumebench.data.loaders import load_benchmark
    from lumebench.pipeline.target import FinetuneConfig, finetune as ft

    return ft("tiny", load_benchmark(data), FinetuneConfig.for_base("tiny", FINETUNE), out)


def unlearn(target: str, data: str, out: str, method: str = "npo") -> dict:
    from lumebench.data.loaders import load_benchmark
    from lumebench.pipeline.eval_settings import EvalSettings
    from lumebench.pipeline.unlearn import unlearn as ul

    return ul(target, load_benchmark(data), method, out, overrides=dict(UNLEARN),
              eval=EvalSettings(max_new_tokens=8))


def evaluate(model: str, data: str, out: str) -> int:
    from lumebench.cli import main

    return main(["eval", "--model", model, "--data", data, "--out", out, "--max-new-tokens", "8"])


def write_run_config(data: str, path: Path) -> Path:
    import json

    path.write_text(RUN_YAML.format(data=data, finetune=json.dumps(FINETUNE)))
    return path


def run(config: str, runs_dir: str) -> int:
    from lumebench.cli import main

    return main(["run", config, "--runs-dir", runs_dir])


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    stage, *args = sys.argv[1:]
    result = {"finetune": finetune, "unlearn": unlearn, "eval": evaluate, "run": run}[stage](*args)
    sys.exit(result if isinstance(result, int) else 0)
