#!/usr/bin/env bash
# Issue 28's GPU evidence in one call (prepared to fit 9 minutes on one H100; NOT run yet: no GPU was
# lent while it was written). On a machine with a CUDA torch in the environment (README "GPU install"):
#
#     bash benchmarks/gpu_speed.sh                       # writes docs/results/gpu-speed/gpu_speed.json
#
# What it runs: benchmarks/eval_speed.py --device cuda --dtype bfloat16 on the three SmolLM2
# workloads ((a) raw, 30 rows; (b) memorised, 12 rows; (c) after gradient ascent, 12 rows; each with
# 25 + 25 MIA documents) and MMLU 5-shot (4 subjects x 25 questions), each side by side with the
# official protocol in the same process. The fast engine runs in bf16 exactly (one row per forward:
# lumebench/eval/batch1.py) with parallel rows (PARALLEL_ROWS, default auto = 4 worker processes
# sharing the weights by CUDA IPC). eval_speed.py checks that every per-row score, every MIA AUC and
# every MMLU prediction is identical (exit status 1 if not) and records tokens/s and the parent's peak
# torch GPU memory; this script adds the peak GPU memory of all processes together (nvidia-smi, the
# workers' CUDA contexts included) and the exit status.
#
# Settings (environment): PY (python, default .venv/bin/python), PARALLEL_ROWS (auto | N | 1),
# LIMIT_S (seconds for eval_speed.py, default 510: the targets of (b) and (c) are built first, once,
# cached under CACHE), ROWS (rows of (a), default 30), OUT (the JSON).
# A run cut short by LIMIT_S keeps the workloads it finished (eval_speed.py writes after each).
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PARALLEL_ROWS=${PARALLEL_ROWS:-auto}
LIMIT_S=${LIMIT_S:-510}
ROWS=${ROWS:-30}
CACHE=${CACHE:-runs/.cache/eval_speed}
OUT=${OUT:-docs/results/gpu-speed/gpu_speed.json}
mkdir -p "$(dirname "$OUT")"
TMP=$(mktemp -d)

"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)" || {
    echo "error: no CUDA device visible to $PY (see README 'GPU install')" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$TMP/gpu.txt" 2>/dev/null || true
# GPU memory used by every process, every 0.5 s
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$TMP/mem.log" 2>/dev/null &
SMI=$!
trap 'kill $SMI 2>/dev/null; rm -rf "$TMP"' EXIT

timeout "$LIMIT_S" "$PY" benchmarks/eval_speed.py --device cuda --dtype bfloat16 --workloads a,b,c \
    --rows "$ROWS" --mia-docs 25 --mmlu-subjects 4 --mmlu-limit 25 --parallel-rows "$PARALLEL_ROWS" \
    --cache "$CACHE" --json "$TMP/eval_speed.json" 2>&1 | tee "$TMP/log.txt"
RC=${PIPESTATUS[0]}
kill $SMI 2>/dev/null

"$PY" - "$TMP" "$OUT" "$RC" "$PARALLEL_ROWS" <<'EOF'
import json, sys
from pathlib import Path

import lumebench  # noqa: F401
from lumebench.io import atomic_write_json

tmp, out, rc, parallel = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
report = json.loads((tmp / "eval_speed.json").read_text()) if (tmp / "eval_speed.json").exists() else {}
mem = [int(x) for x in (tmp / "mem.log").read_text().split() if x.strip().isdigit()] if (tmp / "mem.log").exists() else []
report["gpu_speed"] = {
    "command": "bash benchmarks/gpu_speed.sh", "parallel_rows": parallel, "exit_status": rc,
    "finished": rc == 0, "cut_short_by_time_limit": rc == 124,
    "gpu": (tmp / "gpu.txt").read_text().strip() if (tmp / "gpu.txt").exists() else None,
    "peak_gpu_mib_all_processes": max(mem) if mem else None,
}
summary = {}
for w, r in report.get("workloads", {}).items():
    summary[w] = {"rows": r["rows"], "end_to_end_ratio": r["total"]["ratio"],
                  "generation_ratio": r["generation"]["ratio"],
                  "tokens_per_s": {"official": r["official"]["tokens_per_s"], "fast": r["fast"]["tokens_per_s"]},
                  "identical": r["identical_row_scores"] and r["identical_mia_auc"]}
if "mmlu" in report:
    summary["mmlu"] = {"ratio": report["mmlu"]["ratio"], "identical": report["mmlu"]["identical_predictions"]}
report["gpu_speed"]["summary"] = summary
atomic_write_json(out, report)
print(json.dumps(report["gpu_speed"], indent=1))
print(f"written to {out}")
EOF
exit "$RC"
