"""Crash at every stage, resume, and get exactly what an uninterrupted run gets.

Each test runs a stage (``tests/fault_driver.py``) in a subprocess that dies at a named point
(``LUME_FAULT=<point>``: ``os._exit(137)``, what ``kill -9`` leaves: no ``finally``, no flush), then
runs the same stage again in this process and compares every result with an uninterrupted run made
here: model weights byte for byte, every score, every generation. The points cover each stage of
``finetune``, ``eval``, ``unlearn`` and ``run``, a crash in the middle of writing a file (the NPO
reference cache, a checkpoint, ``results.json``, ``unlearn.json``), a corrupt cache found on resume,
and a crash between saving the fine-tuned model and writing ``target.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fault_driver as drv
from lumebench.io import iter_jsonl

DRIVER = Path(drv.__file__)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def data(base) -> str:
    return str(drv.make_data(base))


@pytest.fixture(scope="module")
def target(base, data) -> str:
    """The uninterrupted fine-tune (also the target the other stages start from)."""
    out = base / "target"
    drv.finetune(data, str(out))
    return str(out)


def crash(stage: str, *args: str, point: str, skip: int = 0, cache: Path | None = None) -> None:
    """Run ``stage`` in a subprocess that dies at ``point`` (after passing it ``skip`` times)."""
    env = {**os.environ, "LUME_FAULT": point, "LUME_FAULT_SKIP": str(skip), "LUME_QUIET": "1",
           "OMP_NUM_THREADS": "1", **({"LUME_CACHE": str(cache)} if cache else {})}
    res = subprocess.run([sys.executable, str(DRIVER), stage, *args], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 137, f"the stage did not reach {point}: rc {res.returncode}\n{res.stderr[-2000:]}"


def _weights(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(d).glob("*.safetensors"))}


def _survived(reliability_log, point: str, ok: bool) -> None:
    reliability_log["faults"].append({"point": point, "survived": ok})


def _same(reliability_log, point: str, got, want) -> None:
    _survived(reliability_log, point, got == want)
    assert got == want


# ------------------------------------------------------------------------------------- finetune

def _target_numbers(d: Path) -> dict:
    info = json.loads((Path(d) / "target.json").read_text())
    return {"weights": _weights(d), **{k: info[k] for k in ("memorisation", "steps", "epochs", "status", "key",
                                                            "curve")}}


@pytest.mark.parametrize("point,skip", [("write:trainer_state.json", 1),  # mid-training, inside a checkpoint write
                                        ("finetune:after-model-save", 0)])  # model saved, no target.json yet
def test_finetune_resumes_after_a_crash(point, skip, base, data, target, tmp_path, reliability_log):
    out = tmp_path / "target"
    crash("finetune", data, str(out), point=point, skip=skip)
    assert not (out / "target.json").exists()
    assert (out / "train" / "checkpoint").is_dir()  # what the resume starts from
    drv.finetune(data, str(out))
    _same(reliability_log, f"finetune {point}", _target_numbers(out), _target_numbers(Path(target)))
    assert not (out / "train" / "checkpoint").exists()  # removed only once target.json exists


# ------------------------------------------------------------------------------------- eval

@pytest.fixture(scope="module")
def eval_baseline(base, data, target) -> Path:
    out = base / "eval"
    assert drv.evaluate(target, data, str(out)) == 0
    return out


def _eval_numbers(d: Path) -> dict:
    res = json.loads((d / "results.json").read_text())
    return {"results": {k: v for k, v in res.items() if k != "meta"},
            "generations": (d / "generations.jsonl").read_text(), "mia": (d / "mia.jsonl").read_text()}


@pytest.mark.parametrize("point", ["eval:after-generation", "eval:after-mia", "write:results.json"])
def test_eval_resumes_after_a_crash(point, data, target, eval_baseline, tmp_path, reliability_log):
    out = tmp_path / "eval"
    crash("eval", target, data, str(out), point=point)
    assert drv.evaluate(target, data, str(out)) == 0
    _same(reliability_log, point, _eval_numbers(out), _eval_numbers(eval_baseline))
    assert not list(out.glob(".*.tmp"))  # the dead writer's half-written temporary file is cleared


def test_eval_rerun_over_a_hostile_results_json_recomputes_it(data, target, eval_baseline, tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "results.json").write_text("[]")
    assert drv.evaluate(target, data, str(out)) == 0
    assert _eval_numbers(out) == _eval_numbers(eval_baseline)


# ------------------------------------------------------------------------------------- unlearn

@pytest.fixture(scope="module")
def unlearn_baseline(base, data, target) -> Path:
    out = base / "npo"
    drv.unlearn(target, data, str(out))
    return out


def _unlearn_numbers(d: Path) -> dict:
    info = json.loads((d / "unlearn.json").read_text())
    curve = [{k: v for k, v in rec.items()} for _, rec in iter_jsonl(d / "curve.jsonl")]
    return {"weights": _weights(d / "model"), "curve": sorted(curve, key=lambda r: r["step"]),
            "final": info["final"], "status": info["status"], "steps": info["steps"],
            "reference": _reference(d / "reference_nll_forget")}


def _reference(folder: Path) -> tuple[str, list[float]]:
    """The reference cache step's key and values (not the file's bytes: the header's key order varies
    by process)."""
    from safetensors import safe_open

    with safe_open(str(folder / "nll.safetensors"), framework="pt") as f:
        return json.loads((folder / "done.json").read_text())["key"], f.get_tensor("nll").tolist()


@pytest.mark.parametrize("point,skip", [
    ("write:nll.safetensors", 0),                    # a crash while the NPO reference cache is written
    ("unlearn:after-eval", 0),                       # epoch-0 evaluation in the curve, no training yet
    ("unlearn:after-eval", 1),                       # epoch-1 evaluation in the curve, before its checkpoint
    ("write:unlearn.json", 1),                       # while the final unlearn.json is written
])
def test_unlearn_resumes_after_a_crash(point, skip, data, target, unlearn_baseline, tmp_path, reliability_log):
    out = tmp_path / "npo"
    crash("unlearn", target, data, str(out), point=point, skip=skip)
    if point == "write:nll.safetensors":
        cache = out / "reference_nll_forget"
        # the temporary file only: no cache file, no completion marker
        assert not (cache / "nll.safetensors").exists() and not (cache / "done.json").exists()
    drv.unlearn(target, data, str(out))
    _same(reliability_log, f"unlearn {point}#{skip}", _unlearn_numbers(out), _unlearn_numbers(unlearn_baseline))


def test_unlearn_recomputes_a_corrupt_reference_cache(data, target, unlearn_baseline, tmp_path, reliability_log):
    out = tmp_path / "npo"
    crash("unlearn", target, data, str(out), point="unlearn:after-eval")
    cache = out / "reference_nll_forget" / "nll.safetensors"
    assert (cache.parent / "done.json").exists()
    cache.write_bytes(cache.read_bytes()[:40])  # damaged on disk, its step marked done
    drv.unlearn(target, data, str(out))
    _same(reliability_log, "unlearn corrupt reference cache", _unlearn_numbers(out),
          _unlearn_numbers(unlearn_baseline))


# ------------------------------------------------------------------------------------- run

@pytest.fixture(scope="module")
def run_baseline(base, data) -> Path:
    cfg = drv.write_run_config(data, base / "run.yaml")
    assert drv.run(str(cfg), str(base / "runs")) == 0
    return base / "runs" / "faults"


def _run_numbers(run_dir: Path) -> dict:
    board = json.loads((run_dir / "leaderboard.json").read_text())
    curves = {str(p.relative_to(run_dir)): [rec["results"] for _, rec in iter_jsonl(p)]
              for p in sorted(run_dir.glob("methods/*/seed*/curve.jsonl"))}
    return {"leaderboard": board, "curves": curves, "report": (run_dir / "report.html").is_file()}


@pytest.mark.parametrize("point", ["run:after-method"])  # ga finished, npo not started
def test_run_resumes_after_a_crash(point, base, data, run_baseline, tmp_path, reliability_log):
    cfg = drv.write_run_config(data, tmp_path / "run.yaml")
    crash("run", str(cfg), str(tmp_path / "runs"), point=point)
    assert drv.run(str(cfg), str(tmp_path / "runs")) == 0
    _same(reliability_log, f"run {point}", _run_numbers(tmp_path / "runs" / "faults"), _run_numbers(run_baseline))


def test_a_real_kill_9_during_unlearning(data, target, unlearn_baseline, tmp_path, reliability_log):
    """The same, with a real SIGKILL from outside: sent as soon as the epoch-1 evaluation is in the
    curve, so it lands during the checkpoint write or the second epoch."""
    import signal
    import time

    out = tmp_path / "npo"
    env = {**os.environ, "LUME_QUIET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(DRIVER), "unlearn", target, data, str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    curve = out / "curve.jsonl"
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if curve.exists() and len(curve.read_text().splitlines()) >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert json.loads((out / "unlearn.json").read_text())["status"] == "running"
    drv.unlearn(target, data, str(out))
    _same(reliability_log, "unlearn SIGKILL after epoch 1", _unlearn_numbers(out), _unlearn_numbers(unlearn_baseline))
