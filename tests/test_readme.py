"""The README as a user reads it (issue 26): at most 250 lines, its first two commands the set-up-and-run
command and the test command (CI runs the second; ``benchmarks/fresh_clone.py`` times the first), and
every block of "One command per job" runs as written, in order, in one folder, through the installed
``lume`` (the parity block is the one exception: it needs a checkpoint and the official side
environment, and ``tests/test_official_parity.py`` runs that very command on a tiny target)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"^```bash\n(.*?)^```$", re.M | re.S)


def job_blocks() -> list[str]:
    start = README.index("## One command per job")
    end = README.index("\n## ", start + 1)
    return BLOCK.findall(README[start:end])


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = README.splitlines()
    assert len(lines) <= 250, len(lines)
    blocks = BLOCK.findall(README)
    assert blocks[0].strip() == "./install.sh && .venv/bin/lume run"
    assert blocks[1].strip() == ".venv/bin/python -m pytest -q"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == blocks[1].strip()


def test_readme_links_resolve():
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target


def test_every_job_example_of_the_readme_runs_as_written(tmp_path):
    blocks = job_blocks()
    parity = [b for b in blocks if b.startswith("lume parity")]
    runnable = [b for b in blocks if not b.startswith("lume parity")]
    assert len(parity) == 1 and len(runnable) >= 7
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "LUME_QUIET": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    for block in runnable:
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"README block failed:\n{block}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    # what the blocks wrote holds real results
    assert (tmp_path / "data" / "forget.jsonl").is_file()
    target = json.loads((tmp_path / "target" / "target.json").read_text())
    assert target["target_met"] and target["memorisation"]["forget_regurgitation"] >= 0.3
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert 0.0 <= res["aggregate-score"] <= 1.0 and res["mia_loss_acc"] is not None
    for run in ("unlearned", "aty"):
        assert (tmp_path / run / "done.json").is_file() and (tmp_path / run / "model").is_dir()
    relearned = json.loads((tmp_path / "attacks" / "relearn" / "relearn.json").read_text())
    assert [p["k"] for p in relearned["modes"]["full"]["points"]] == [0, 1, 5] and relearned["split"]["V"]
    assert "nf4" in json.loads((tmp_path / "attacks" / "quantize" / "quantize.json").read_text())["schemes"]
    assert 0.0 <= json.loads((tmp_path / "attacks" / "lens" / "logit_lens.json").read_text())["recoverable"] <= 1.0
    board = json.loads((tmp_path / "runs" / "mini" / "leaderboard.json").read_text())
    assert {r["label"] for r in board["rows"]} >= {"ga", "npo"}
    assert board == json.loads((tmp_path / "runs" / "mini-again" / "leaderboard.json").read_text())
    assert (tmp_path / "runs" / "mini" / "report.html").is_file()
    assert json.loads((tmp_path / "runs" / "npo-beta" / "selected.json").read_text())
    two = json.loads((tmp_path / "eval2" / "results.json").read_text())
    assert two["mia_loss_acc"] is None
