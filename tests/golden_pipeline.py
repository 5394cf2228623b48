"""The golden reproducibility pipeline: a short, fixed run of every numerical stage, printed as
digests (``python tests/golden_pipeline.py``; ``tests/test_golden.py`` runs it in a fresh process).

Generated data (1 document per task and split) -> the tiny model (a smaller shape than the default,
2 layers, hidden 64) memorising it for 6 epochs -> gradient ascent for 4 steps -> one evaluation
(generation, MIA). Every stage is a real lumebench stage through its public function; what comes out
is the sha256 of the target's and the unlearned model's weights and of the evaluation's scores. Under
the pinned numerics (``lumebench.numerics``) these are the same on every x86 CPU with AVX2, which is
what ``tests/golden.json`` holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import lumebench  # noqa: F401  (first: pins the numerics before torch loads)

TINY = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128, "vocab_size": 512,
        "max_position": 512}


def weights_digest(folder: Path) -> str:
    from safetensors.torch import load_file

    h = hashlib.sha256()
    weights = load_file(str(folder / "model.safetensors"))
    for name in sorted(weights):
        h.update(name.encode())
        h.update(weights[name].float().numpy().tobytes())
    return h.hexdigest()


def run(root: Path) -> dict:
    import torch

    from lumebench.data.generate import generate_benchmark
    from lumebench.data.loaders import load_benchmark
    from lumebench.pipeline.eval_settings import EvalSettings
    from lumebench.numerics import numerics_record
    from lumebench.pipeline.target import FinetuneConfig, build_target
    from lumebench.pipeline.unlearn import unlearn

    torch.set_num_threads(int(os.environ.get("LUME_GOLDEN_THREADS", "1")))
    bench = load_benchmark(generate_benchmark(root / "data", docs_per_task=1, seed=0))
    cfg = FinetuneConfig.for_base("tiny", {"epochs": 6, "min_steps": 0, "eval_from": 6, "tiny": TINY,
                                            "mixed_precision": "no", "pretrain_docs": 6, "pretrain_epochs": 1})
    target = build_target("tiny", bench, cfg, cache_dir=root / "targets")
    out = root / "ga"
    unlearn(str(target), bench, "ga", out, overrides={"max_steps": 4, "batch_size": 4, "lr": 1e-3,
                                                      "eval_every": "end"},
            eval=EvalSettings(max_new_tokens=16))
    curve = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]
    scores = json.dumps([c.get("results") for c in curve], sort_keys=True)
    num = numerics_record()
    return {"data": bench.fingerprint(), "target_weights": weights_digest(Path(target)),
            "unlearned_weights": weights_digest(out / "model"), "scores": hashlib.sha256(scores.encode()).hexdigest(),
            "final": {k: v for k, v in (curve[-1].get("results") or {}).items()
                      if k in ("mia_loss_acc", "harmonic-mean-task-aggregate")},
            "numerics": {"mode": num["mode"], "aten_capability": num.get("aten_capability"),
                         "portable": num.get("portable")}}


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        result = run(Path(d))
    text = json.dumps(result, indent=1, sort_keys=True)
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text + "\n")
    print(text)
