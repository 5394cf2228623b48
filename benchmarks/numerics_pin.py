"""What the pinned numerics cost, and which MKL modes change the bits: paired timings of the tiny
target's training steps under each numerics setting, in fresh processes (the settings must be in
the environment before torch loads), interleaved A B C A B C ... so that a drift of the machine's
speed hits every setting alike.

    python benchmarks/numerics_pin.py [--rounds 3] [--steps 30] [--out docs/results/numerics-cost.json]

Each child trains the default tiny model (hidden 192, 2.6M parameters; batch 8 x 150 tokens) for
``--steps`` AdamW steps on one thread after 3 warm-up steps and reports the CPU seconds of those
steps (process time: less sensitive than wall time to other processes on a shared machine) and a
digest of the final weights. Settings:

- pinned: lumebench's default (ATen AVX2, MKL_CBWR=AVX2,STRICT, oneDNN AVX2)
- native: ``LUME_NATIVE_KERNELS=1`` (the CPU's own ATen kernels, MKL AUTO)
- compatible: the pin with ``MKL_CBWR=COMPATIBLE`` (Intel's cross-vendor mode)

The ratio of each setting's median CPU time to native's is the cost of the pin.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import hashlib, json, sys, time
import lumebench, torch
from lumebench.models.tiny import TinyConfig, build_model, build_tokenizer
from lumebench.numerics import numerics_record
torch.set_num_threads(1)
steps = int(sys.argv[1])
tok = build_tokenizer(["the quick brown fox jumps over the lazy dog %d" % i for i in range(200)], 4096)
model = build_model(tok, TinyConfig(hidden_size=192, intermediate_size=512, seed=0))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
g = torch.Generator().manual_seed(0)
x = torch.randint(0, len(tok), (8, 150), generator=g)
def step():
    loss = model(input_ids=x, labels=x).loss
    loss.backward(); opt.step(); opt.zero_grad()
for _ in range(3):
    step()
t0, w0 = time.process_time(), time.perf_counter()
for _ in range(steps):
    step()
cpu, wall = time.process_time() - t0, time.perf_counter() - w0
h = hashlib.sha256()
for name, p in sorted(model.state_dict().items()):
    h.update(name.encode()); h.update(p.detach().numpy().tobytes())
rec = numerics_record()
print(json.dumps({"cpu_s": cpu, "wall_s": wall, "digest": h.hexdigest()[:16], "mode": rec["mode"],
                  "aten": rec.get("aten_capability"), "mkl_cnr": rec.get("mkl_cnr"), "cpu": rec["cpu"].get("model")}))
"""

SETTINGS = {
    "pinned": {},
    "native": {"LUME_NATIVE_KERNELS": "1"},
    "compatible": {"MKL_CBWR": "COMPATIBLE"},
}
CLEAR = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "LUME_NATIVE_KERNELS", "OMP_NUM_THREADS")


def child(setting: str, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CLEAR}
    env.update(SETTINGS[setting])
    out = subprocess.run([sys.executable, "-c", CHILD, str(steps)], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {s: [] for s in SETTINGS}
    for r in range(args.rounds):
        for s in SETTINGS:
            runs[s].append(child(s, args.steps))
            print(f"round {r + 1}: {s:10s} {runs[s][-1]['cpu_s']:.2f} CPU-s  weights {runs[s][-1]['digest']}",
                  file=sys.stderr)
    base = statistics.median(x["cpu_s"] for x in runs["native"])
    table = {}
    for s, xs in runs.items():
        cpu = [x["cpu_s"] for x in xs]
        table[s] = {"median_cpu_s": round(statistics.median(cpu), 3), "min_cpu_s": round(min(cpu), 3),
                    "max_cpu_s": round(max(cpu), 3), "ratio_to_native": round(statistics.median(cpu) / base, 3),
                    "digests": sorted({x["digest"] for x in xs}), "aten": xs[0]["aten"], "mkl_cnr": xs[0]["mkl_cnr"]}
    result = {"command": "python benchmarks/numerics_pin.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"), "cpu": runs["native"][0]["cpu"], "rounds": args.rounds,
              "steps": args.steps, "tokens_per_step": 8 * 150, "settings": table}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
