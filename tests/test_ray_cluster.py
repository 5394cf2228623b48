"""`lume run` and `lume sweep` on a real Ray cluster (``--cluster ray:ADDRESS``).

One cluster per module: a head node (``ray start --head --num-cpus 1``) and a second node process
(``ray start --address ... --num-cpus 1``) on this machine, each in its own process group, stopped at
teardown. The same mini run config runs on the local pool and on the cluster (identical leaderboards,
cell for cell), then again on the cluster while the second node is killed mid-run (the retry resumes:
same leaderboard); a mini sweep on Ray Tune selects what the local sweep selects and scores no test
row during selection. The node-kill test goes last: the cluster has one node after it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from lumebench.cli import main  # noqa: E402

RUN = """
name: mini
data: {source: generated, docs_per_task: 2, seed: 0}
target:
  model: tiny
  finetune: {epochs: 6, min_steps: 0, pretrain_docs: 0}
methods:
  - {name: ga, overrides: {epochs: 2, lr: 3.0e-3}}
  - {name: npo, overrides: {epochs: 2, beta: 1.0, lr: 3.0e-3}}
# a subset makes the first run of each seed evaluate the target (2 runs at once: one on each node)
eval: {max_new_tokens: 8, mmlu: false, every: epoch, subset: 2}
seeds: [0, 1]
threads: 1
workers: 1
"""
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_node(args: list[str], log: Path) -> subprocess.Popen:
    """A `ray start --block` node in its own process group; returns once Ray says it started."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", "--num-cpus", "1",
                          "--dashboard-agent-listen-port", str(_free_port()), *args],
                         stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    t0 = time.time()
    while "Ray runtime started" not in log.read_text():
        assert p.poll() is None and time.time() - t0 < 120, log.read_text()[-2000:]
        time.sleep(0.3)
    return p


def _stop_node(p: subprocess.Popen) -> None:
    """Stop the node's process group (the node we started: its pid is the group id)."""
    for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 5)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """The two nodes (started in the background while ``runs`` makes the local run) and the local
    pool's run of the config in a runs folder whose target cache every test shares."""
    tmp = tmp_path_factory.mktemp("ray")
    # Ray 2.60 turns token authentication on for a head node when ~/.ray/auth_token exists (left by
    # any local `ray.init()`); this throw-away cluster, its nodes and drivers go without
    auth_before = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    temp_dir = tempfile.mkdtemp(prefix="lr", dir="/tmp")  # short: Ray's socket paths have a length limit
    common = ["--temp-dir", temp_dir, "--object-store-memory", str(100 * 2**20)]
    nodes: list[subprocess.Popen] = []
    started: dict = {}

    def start() -> None:
        try:
            nodes.append(_start_node(["--head", "--port", str(_free_port()), "--include-dashboard", "false",
                                      "--ray-client-server-port", str(_free_port()),
                                      "--dashboard-port", str(_free_port()), *common], tmp / "head.log"))
            started["address"] = next(line.split("--address='")[1].split("'")[0]
                                      for line in (tmp / "head.log").read_text().splitlines() if "--address='" in line)
            nodes.append(_start_node(["--address", started["address"], *common], tmp / "node2.log"))
        except BaseException as e:  # noqa: BLE001 - raised in the test's thread below
            started["error"] = e

    thread = threading.Thread(target=start)
    thread.start()
    try:
        cfg = tmp / "mini.yaml"
        cfg.write_text(RUN, encoding="utf-8")
        runs = tmp / "runs"
        assert main(["run", str(cfg), "--runs-dir", str(runs), "--name", "local", "--cluster", "local"]) == 0
        thread.join()
        if "error" in started:
            raise started["error"]
        yield {"address": started["address"], "node2": nodes[1], "tmp": tmp, "cfg": cfg, "runs": runs}
    finally:
        thread.join()
        for p in reversed(nodes):
            _stop_node(p)
        shutil.rmtree(temp_dir, ignore_errors=True)
        if auth_before is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = auth_before


@pytest.fixture(scope="module")
def runs(ray_cluster):
    return ray_cluster["cfg"], ray_cluster["runs"]


def _board(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "leaderboard.json").read_text())["rows"]


def _curves(run_dir: Path) -> dict:
    return {str(p.relative_to(run_dir)): [(r["step"], r["results"]) for r in map(json.loads, p.read_text().splitlines())]
            for p in sorted(run_dir.glob("methods/*/seed*/curve.jsonl"))}


def test_lume_run_on_a_ray_cluster_gives_the_local_pools_leaderboard(ray_cluster, runs, capsys):
    cfg, runs_dir = runs
    assert main(["run", str(cfg), "--runs-dir", str(runs_dir), "--name", "onray",
                 "--cluster", f"ray:{ray_cluster['address']}"]) == 0
    local, onray = runs_dir / "local", runs_dir / "onray"
    assert [r["label"] for r in _board(onray)] == ["target (before unlearning)", "ga", "npo"]
    assert _board(onray) == _board(local)  # every cell, unrounded
    assert _curves(onray) == _curves(local) and len(_curves(local)) == 4
    # one progress line per run, naming the node it ran on
    lines = [m.groups() for m in re.finditer(r"\] (\S+) done on (.+?) in \d+ s", capsys.readouterr().err)]
    assert sorted(run for run, _ in lines) == ["onray/ga/seed0", "onray/ga/seed1", "onray/npo/seed0", "onray/npo/seed1"]
    # the ga runs of seeds 0 and 1 went first (they evaluate the target), one on each node
    assert {run for run, _ in lines[:2]} == {"onray/ga/seed0", "onray/ga/seed1"}
    assert len({node for _, node in lines[:2]}) == 2


def test_a_run_folder_no_ray_node_can_see_is_one_error_line(ray_cluster, runs, tmp_path, capsys, monkeypatch):
    """The probe tasks run in the driver's working directory: a folder made here under a private
    name and removed before they look stands for a node without the shared filesystem."""
    from ray import cloudpickle

    from lumebench.pipeline import cluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the stand-in probe goes to the node as code
    real = cluster._probe

    def hidden(cwd, probe, token):
        return real(cwd, probe + ".not-shared", token)

    monkeypatch.setattr(cluster, "_probe", hidden)
    cfg, runs_dir = runs
    assert main(["run", str(cfg), "--runs-dir", str(runs_dir), "--name", "hidden",
                 "--cluster", f"ray:{ray_cluster['address']}"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and [x for x in err.splitlines() if x.startswith("error:")] == [err.strip().splitlines()[-1]]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: Ray node ") and "cannot see" in last
    assert "shared filesystem" in last and "docs/cluster.md" in last
    assert not list((runs_dir / "hidden").glob("methods/*/seed*/curve.jsonl"))  # no run started


def test_a_ray_tune_sweep_selects_as_the_local_sweep_on_validation_rows_only(ray_cluster, runs, capsys):
    import yaml

    from lumebench.data.loaders import load_benchmark
    from lumebench.pipeline.sweep import split_validation

    _, runs_dir = runs
    tmp = ray_cluster["tmp"]
    sweep = {"name": "s", "method": "ga", "data": {"source": "generated", "docs_per_task": 2, "seed": 0},
             "target": yaml.safe_load(RUN)["target"], "fixed": {"epochs": 1}, "params": {"lr": [3.0e-3, 1.0e-5]},
             "select_on": "retain_regurgitation",  # (no MMLU: no final score) what the tiny target keeps
             "seeds": [0], "workers": 1, "eval": {"max_new_tokens": 8, "mmlu": False, "every": "epoch"}}
    results = {}
    for where, cluster in (("local", "local"), ("tune", f"ray:{ray_cluster['address']}")):
        path = tmp / f"sweep-{where}.yaml"
        path.write_text(yaml.safe_dump({**sweep, "name": f"s-{where}"}))
        assert main(["sweep", str(path), "--runs-dir", str(runs_dir), "--cluster", cluster]) == 0
        out = runs_dir / f"s-{where}"
        results[where] = (out, json.loads((out / "trials.json").read_text()),
                          json.loads((out / "selected.json").read_text()))
    (a_dir, a_trials, a_sel), (b_dir, b_trials, b_sel) = results["local"], results["tune"]
    assert len(b_trials) == 2 and all(t["score_mean"] is not None for t in b_trials)
    assert [t["scores"] for t in b_trials] == [t["scores"] for t in a_trials] and b_sel == a_sel
    assert a_trials[0]["scores"] != a_trials[1]["scores"]  # a real choice: not the first trial by a tie
    assert (b_dir / "tune").is_dir()  # Ray Tune's experiment
    bench = load_benchmark(runs_dir / ".cache" / "data" / "generated-2docs-seed0")
    val, test = split_validation(bench, 0.5, 0)

    def ids(pattern: str) -> set[str]:
        return {json.loads(x)["id"] for f in b_dir.glob(pattern) for x in f.read_text().splitlines()}

    assert ids("trials/*/seed0/eval/*/generations.jsonl") == {r.id for r in val.rows}  # no test row
    assert ids("test/ga/seed0/eval/*/generations.jsonl") == {r.id for r in test.rows}
    assert _board(b_dir / "test") == _board(a_dir / "test")


def _task_on(node_group: int, runs_dir: Path) -> tuple[int, Path] | None:
    """(pid, run folder) of a method run executing on the node whose `ray start` process group is
    ``node_group`` (Ray names a task's worker process `ray::lume <run>/<method>/seed<k>`)."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, ppid, args = line.split(None, 2)
        if args.startswith("ray::lume "):
            try:
                if os.getpgid(int(ppid)) != node_group:
                    continue
            except ProcessLookupError:
                continue
            run, method, seed = args.split()[1].split("/")
            return int(pid), runs_dir / run / "methods" / method / seed
    return None


def test_killing_a_ray_node_mid_run_retries_and_resumes_the_same_leaderboard(ray_cluster, runs, tmp_path):
    cfg, runs_dir = runs
    node2 = ray_cluster["node2"]
    log = tmp_path / "run.log"
    p = subprocess.Popen([sys.executable, "-m", "lumebench", "run", str(cfg), "--runs-dir", str(runs_dir), "--name",
                          "killed", "--cluster", f"ray:{ray_cluster['address']}"], stdout=open(log, "w"),
                         stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    killed = None
    t0 = time.time()
    while p.poll() is None and killed is None and time.time() - t0 < 240:
        found = _task_on(node2.pid, runs_dir)
        if found:
            pid, folder = found
            curve = folder / "curve.jsonl"
            # after its first epoch's evaluation, before it is done: a checkpoint and a curve to resume
            if curve.exists() and len(curve.read_text().splitlines()) >= 2 and not (folder / "done.json").exists():
                os.killpg(node2.pid, signal.SIGKILL)  # the node: raylet and its agents
                os.kill(pid, signal.SIGKILL)           # and the task's worker process on it
                killed = folder
        time.sleep(0.1)
    assert p.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert killed is not None, "no run went to the second node"
    text = log.read_text()
    assert "retried" in text or "retries remaining" in text
    marker = json.loads((killed / "done.json").read_text())
    assert marker["resumed"] is True  # the retry found the killed run's folder and went on from it
    steps = [json.loads(x)["step"] for x in (killed / "curve.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and len(steps) == 3  # before + 2 epochs, none evaluated twice
    assert _board(runs_dir / "killed") == _board(runs_dir / "local")
    assert _curves(runs_dir / "killed") == _curves(runs_dir / "local")
