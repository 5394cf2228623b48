"""The README's multi-process commands as users type them: the ``lume`` CLI itself under
``torchrun --standalone --nproc_per_node 2 --no-python lume ...`` (and ``accelerate launch``), 2 CPU
processes (gloo), compared with the same command in one process (issue 29).

``tests/test_distributed.py`` drives the library through its own worker script; here nothing but
the command line is used, so the output-folder lock, the argument checks and the printing of every
command run as they do for a user. The model is the random (seeded) tiny Llama of
``tests/dist_worker.py`` saved as a model directory, the data the generator's benchmark with
shortened sc rows written as files (2 documents per task and split, 2 + 2 MIA documents). Each run
is tiny (one epoch of 3 steps, 8 new tokens) so that a launch takes seconds.

Tolerances are those of ``tests/test_distributed.py`` (fp32; the two processes reduce gradients in
another order): training losses within 1e-5 relative, final weights within 1e-5; generations and
every score identical.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import dist_worker as worker
from lumebench.cli import main
from lumebench.io import write_jsonl
from test_distributed import assert_same_training

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LUME = BIN / "lume"
TINY_UNLEARN = ["--epochs", "1", "--set", "preset=tiny", "--set", "batch_size=7", "--max-new-tokens", "8"]


def _env(tmp: Path) -> dict:
    return {**os.environ, "LUME_QUIET": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "LUME_CACHE": str(tmp / "cache"), "PYTHONPATH": str(REPO / "src")}


def torchrun(tmp: Path, *argv: str, expect_rc: int = 0) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 --no-python lume ARGV`` (the README's launch)."""
    proc = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "--no-python",
                           str(LUME), *argv], cwd=tmp, env=_env(tmp), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == expect_rc, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "another lume process" not in proc.stderr, proc.stderr[-3000:]
    if expect_rc == 0:  # (a failed worker makes torchrun itself print a traceback)
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    from lumebench.data.generate import generate_benchmark

    base = tmp_path_factory.mktemp("launch")
    bench = worker.short_benchmark(generate_benchmark(base / "generated", docs_per_task=2, seed=0))
    data = base / "data"
    write_jsonl(data / "forget.jsonl", [r.to_official() for r in bench.forget])
    write_jsonl(data / "retain.jsonl", [r.to_official() for r in bench.retain])
    for name, docs in (("member", bench.mia_members), ("nonmember", bench.mia_nonmembers)):
        write_jsonl(data / "mia" / f"{name}.jsonl", [{"id": d.id, "document": d.document} for d in docs])
    target = worker.build_target(bench, base / "target")
    return {"base": base, "data": str(data), "target": str(target), "n_rows": len(bench.rows)}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lume_eval_under_torchrun_equals_one_process(setup, one_thread, capsys):
    base = setup["base"]
    argv = ["eval", "--model", setup["target"], "--data", setup["data"], "--max-new-tokens", "8"]
    assert main([*argv, "--out", str(base / "eval-1")]) == 0
    capsys.readouterr()
    proc = torchrun(base, *argv, "--out", str(base / "eval-2"))
    assert proc.stdout.count("results written to") == 1  # the main process prints, once
    one, two = base / "eval-1", base / "eval-2"
    g1, g2 = _jsonl(one / "generations.jsonl"), _jsonl(two / "generations.jsonl")
    assert len(g2) == setup["n_rows"] and g1 == g2  # every row once, in order, the same text and scores
    m1, m2 = _jsonl(one / "mia.jsonl"), _jsonl(two / "mia.jsonl")
    assert len(m2) == 4 and [m["id"] for m in m1] == [m["id"] for m in m2]
    for a, b in zip(m1, m2):
        assert abs(a["nll"] - b["nll"]) <= 1e-5 * abs(a["nll"])
    r1, r2 = (json.loads((d / "results.json").read_text()) for d in (one, two))
    for key in ("forget-set", "retain-set", "aggregated-terms", "harmonic-mean-task-aggregate", "mia_loss_acc"):
        assert r1[key] == r2[key], key
    assert sorted(p.name for p in two.iterdir()) == ["generations.jsonl", "mia.jsonl", "results.json"]


def test_lume_unlearn_under_torchrun_equals_one_process(setup, one_thread, capsys):
    base = setup["base"]
    argv = ["unlearn", "--method", "ga", "--target", setup["target"], "--data", setup["data"], *TINY_UNLEARN]
    assert main([*argv, "--out", str(base / "ga-1")]) == 0
    capsys.readouterr()
    torchrun(base, *argv, "--out", str(base / "ga-2"))
    one, two = base / "ga-1", base / "ga-2"
    state = json.loads((two / "unlearn.json").read_text())
    assert state["status"] == "finished" and state["processes"] == 2
    assert assert_same_training(one, two) >= 0
    c1, c2 = (_jsonl(d / "curve.jsonl") for d in (one, two))
    assert [c["step"] for c in c2] == [0, 3]
    assert [c["results"]["forget-set"] for c in c1] == [c["results"]["forget-set"] for c in c2]
    assert [c["results"]["mia_loss_acc"] for c in c1] == [c["results"]["mia_loss_acc"] for c in c2]


def test_lume_unlearn_under_accelerate_launch_equals_one_process(setup, one_thread, capsys):
    """``accelerate launch --multi_gpu --num_processes 2`` starts 2 real processes on a CPU machine
    (through torchrun; the process group is gloo without CUDA). ``--cpu`` would pick Accelerate's
    single-process launcher instead (``accelerate/commands/launch.py``: ``launch_command`` takes the
    multi-GPU path only ``if args.multi_gpu and not args.cpu``)."""
    base = setup["base"]
    argv = ["unlearn", "--method", "npo", "--target", setup["target"], "--data", setup["data"], "--no-mia",
            *TINY_UNLEARN]
    assert main([*argv, "--out", str(base / "npo-1")]) == 0
    capsys.readouterr()
    proc = subprocess.run([str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                           "--main_process_port", str(_free_port()), "-m", "lumebench", *argv,
                           "--out", str(base / "npo-2")],
                          cwd=base, env=_env(base), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = json.loads((base / "npo-2" / "unlearn.json").read_text())
    assert state["status"] == "finished" and state["processes"] == 2
    assert_same_training(base / "npo-1", base / "npo-2")


def test_lume_finetune_under_torchrun_equals_one_process(setup, one_thread, capsys):
    """One epoch does not memorise: both exit 1 (the target is written and measured all the same)."""
    base = setup["base"]
    argv = ["finetune", "--model", setup["target"], "--data", setup["data"], "--epochs", "1",
            "--batch-size", "7", "--eval-from", "1", "--eval-every", "1"]
    assert main([*argv, "--out", str(base / "ft-1")]) == 1
    capsys.readouterr()
    proc = torchrun(base, *argv, "--out", str(base / "ft-2"), expect_rc=1)
    assert proc.stdout.count("target written to") == 1
    one, two = base / "ft-1", base / "ft-2"
    t1, t2 = (json.loads((d / "target.json").read_text()) for d in (one, two))
    assert t1["memorisation"] == t2["memorisation"] and t1["steps"] == t2["steps"] == 6
    assert_same_training(one, two, model_dir=".")


def test_a_mini_lume_run_under_torchrun_equals_one_process(setup, one_thread, capsys):
    base = setup["base"]
    cfg = base / "mini.json"
    cfg.write_text(json.dumps({
        "name": "mini", "data": {"source": setup["data"]},
        "target": {"model": setup["target"], "memorise": False},
        "methods": [{"name": "ga", "overrides": {"preset": "tiny", "epochs": 1, "batch_size": 7}}],
        "eval": {"mmlu": False, "max_new_tokens": 8}, "seeds": [0], "threads": 1}))
    assert main(["run", str(cfg), "--runs-dir", str(base / "runs-1")]) == 0
    capsys.readouterr()
    torchrun(base, "run", str(cfg), "--runs-dir", str(base / "runs-2"))
    one, two = base / "runs-1" / "mini", base / "runs-2" / "mini"
    assert json.loads((two / "run.json").read_text())["processes"] == 2
    m1, m2 = one / "methods" / "ga" / "seed0", two / "methods" / "ga" / "seed0"
    assert assert_same_training(m1, m2) >= 0
    c1, c2 = _jsonl(m1 / "curve.jsonl"), _jsonl(m2 / "curve.jsonl")
    assert [c["step"] for c in c2] == [0, 3]  # each evaluation once
    assert [c["results"] for c in c1] == [c["results"] for c in c2]
    l1, l2 = (json.loads((d / "leaderboard.json").read_text()) for d in (one, two))
    assert json.dumps(l1, sort_keys=True).count('"ga"') == json.dumps(l2, sort_keys=True).count('"ga"') >= 1
    assert (two / "report.html").is_file()


def test_only_the_main_process_takes_the_output_lock(tmp_path, monkeypatch):
    """Rank 1 of a launch neither takes, waits for nor is refused by the folder lock (its main process
    holds it), and creates nothing; rank 0 of a launch is refused as a single process would be."""
    from lumebench.errors import LumeError
    from lumebench.io import output_lock

    out = tmp_path / "out"
    with output_lock(out):  # the main process of the launch (one process: no launcher variables)
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
        monkeypatch.setenv("MASTER_PORT", "29500")
        monkeypatch.setenv("RANK", "1")
        with output_lock(out):
            pass
        with output_lock(tmp_path / "new"):
            pass
        assert not (tmp_path / "new").exists()
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(LumeError, match="another lume process"):
            with output_lock(out):
                pass
    assert not out.exists()  # created by the lock, nothing written: removed, no lock file left behind
