"""End-to-end unlearning on a real memorised tiny target (built once per session, ~25 s on 2 cores).

The benchmark is the offline generator's (2 documents per task and split, Task1 stories, Task2 PII
biographies, Task3 Wikipedia biographies, MIA members / non-members) with the sentence-completion
prompts shortened to their last 20 words and the continuations to 20 words, so that the tiny model
memorises it in a few hundred steps; every official score cell (split x task x kind) is present.
The target is built by the fine-tuning module (``build_target``), scored by the evaluation engine.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from lumebench.cli import main as lume
from lumebench.pipeline.eval_settings import EvalSettings
from lumebench.io import iter_jsonl
from lumebench.pipeline import evaluator as evaluator_mod
from lumebench.pipeline.unlearn import unlearn
from lumebench.registry import METHODS

EVAL = EvalSettings(max_new_tokens=48)


@pytest.fixture(scope="session")
def full_runs(target, bench, tmp_path_factory) -> dict[str, dict]:
    """GA, GD and NPO+retain with the tiny preset (10 epochs), evaluated before and after every epoch."""
    base = tmp_path_factory.getbasetemp() / "unlearn-runs"
    return {m: unlearn(target, bench, m, base / m, eval=EVAL) for m in ("ga", "gd", "npo_rt")}


@pytest.fixture(scope="session")
def seed_runs(full_runs, target, bench, tmp_path_factory) -> dict[str, list[dict]]:
    """GA, GD and NPO+retain at seeds 0, 1, 2 (seed 0 is ``full_runs``; seeds 1, 2 evaluate only before
    and after, to keep CI short: the training does not depend on the evaluation schedule)."""
    base = tmp_path_factory.getbasetemp() / "unlearn-seeds"
    return {m: [full_runs[m]] + [unlearn(target, bench, m, base / m / f"seed{s}", eval=EVAL,
                                         overrides={"seed": s, "eval_every": "end"}) for s in (1, 2)]
            for m in ("ga", "gd", "npo_rt")}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def test_evaluating_only_at_the_end_gives_the_same_model_and_final_numbers(full_runs, target, bench, tmp_path,
                                                                           tmp_path_factory):
    """``eval_every="end"`` (the science config's setting) changes the curve, not the training: the
    batches are drawn by (seed, step) and an evaluation draws no random numbers."""
    every_epoch = full_runs["ga"]
    end = unlearn(target, bench, "ga", tmp_path / "end", eval=EVAL, overrides={"eval_every": "end"})
    assert [c["step"] for c in end["curve"]] == [0, every_epoch["curve"][-1]["step"]]
    assert len(every_epoch["curve"]) == 11 and end["steps"] == every_epoch["steps"]
    assert end["final"] == every_epoch["final"]
    a = _weights(tmp_path_factory.getbasetemp() / "unlearn-runs" / "ga" / "model")
    b = _weights(tmp_path / "end" / "model")
    assert a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_paper_findings_ga_destroys_retain_gd_and_npo_rt_keep_it(full_runs):
    ga, gd, npo_rt = (full_runs[m] for m in ("ga", "gd", "npo_rt"))
    for r in (ga, gd, npo_rt):
        assert r["status"] == "finished" and r["config"]["preset"] == "tiny" and r["epochs"] == 10
        before = r["curve"][0]
        assert before["step"] == 0 and before["forget_regurgitation"] > 0.9 and before["retain_regurgitation"] > 0.9
        assert [c["epoch"] for c in r["curve"]] == [float(e) for e in range(11)]
        # every method removes the forget set: regurgitation near 0 (the same forget level for all three)
        assert r["final"]["forget_regurgitation"] < 0.1
        assert r["final"]["forget_knowledge"] < before["forget_knowledge"]
    # GA takes the retain set down with it ...
    assert ga["final"]["retain_regurgitation"] < 0.1
    assert ga["final"]["retain_knowledge"] < 0.2
    # ... while GD and NPO + retain NLL keep retain clearly higher at the same forget level
    for r in (gd, npo_rt):
        assert r["final"]["retain_regurgitation"] > ga["final"]["retain_regurgitation"] + 0.2, r["final"]


def test_unlearn_writes_curve_model_and_record(full_runs, bench):
    r = full_runs["gd"]
    out = Path(r["final_model"]).parent
    curve = [rec for _, rec in iter_jsonl(out / "curve.jsonl")]
    assert [c["step"] for c in curve] == [c["step"] for c in r["curve"]]
    assert all(isinstance(c["results"]["forget-set"], dict) for c in curve)  # official keys kept
    assert (out / "eval" / "step_000000" / "generations.jsonl").exists()
    assert r["data_fingerprint"] == bench.fingerprint() and r["seed"] == 0
    assert r["hyperparameters"] == {"alpha": 1.0} and r["versions"]["torch"]
    assert (Path(r["final_model"]) / "model.safetensors").exists()
    assert (Path(r["final_model"]) / "tokenizer.json").exists()
    # rerunning the same call returns the finished result without training or evaluating again
    n_lines = len(curve)
    again = unlearn(r["target"]["spec"], bench, "gd", out, eval=EVAL)
    assert again == r
    assert len((out / "curve.jsonl").read_text().splitlines()) == n_lines


@pytest.mark.parametrize("method", ["kl", "npo", "npo_kl", "simnpo"])
def test_other_methods_run_to_completion(method, target, bench, tmp_path):
    r = unlearn(target, bench, method, tmp_path, eval=EVAL, overrides={"epochs": 3})
    assert r["status"] == "finished" and r["steps"] == 3 * r["steps_per_epoch"]
    assert [c["epoch"] for c in r["curve"]] == [0.0, 1.0, 2.0, 3.0]
    assert r["final"]["forget_regurgitation"] < r["curve"][0]["forget_regurgitation"]
    if method.startswith("npo"):
        assert (tmp_path / "reference_nll_forget" / "nll.safetensors").exists()
        assert (tmp_path / "reference_nll_forget" / "done.json").exists()
    assert r["hyperparameters"] == dataclasses.asdict(METHODS.get(method).Hparams())


def test_lora_unlearning_saves_the_adapter_and_the_merged_model(target, bench, tmp_path):
    r = unlearn(target, bench, "npo_kl", tmp_path, lora=True, overrides={"epochs": 1, "lora_r": 4}, eval=EVAL)
    assert r["status"] == "finished" and r["config"]["lora"] and r["config"]["lr"] == pytest.approx(1e-2)
    adapter = _weights(tmp_path / "adapter")
    assert adapter and all("lora_" in k for k in adapter)
    # the merged model (what is evaluated and submitted) is a plain checkpoint: base + B·A·scale
    merged, base = _weights(tmp_path / "model"), _weights(Path(target))
    assert Path(r["final_model"]) == tmp_path / "model" and set(merged) == set(base)
    changed = [k for k in base if not torch.equal(base[k], merged[k])]
    assert changed and all(any(k.startswith(a.split(".lora_")[0].removeprefix("base_model.model.")) for a in adapter)
                           for k in changed)
    # LoRA starts as a zero update: the evaluation before unlearning equals the target's
    assert r["curve"][0]["forget_regurgitation"] > 0.9


def test_interrupted_run_resumes_without_redoing_evaluations(target, bench, tmp_path, monkeypatch):
    real = evaluator_mod.evaluate_model
    calls = []

    def flaky(model, tok, b, cfg, out_dir):
        calls.append(out_dir.name)
        if len(calls) == 3:  # dies while evaluating after epoch 2 (epoch 1 is checkpointed)
            raise KeyboardInterrupt
        return real(model, tok, b, cfg, out_dir)

    monkeypatch.setattr(evaluator_mod, "evaluate_model", flaky)
    over = {"epochs": 3}
    with pytest.raises(KeyboardInterrupt):
        unlearn(target, bench, "ga", tmp_path / "a", eval=EVAL, overrides=over)
    assert json.loads((tmp_path / "a" / "unlearn.json").read_text())["status"] == "running"
    calls.clear()
    resumed = unlearn(target, bench, "ga", tmp_path / "a", eval=EVAL, overrides=over)
    spe = resumed["steps_per_epoch"]
    assert calls == [f"step_{2 * spe:06d}", f"step_{3 * spe:06d}"]  # step 0 and epoch 1 were kept
    monkeypatch.setattr(evaluator_mod, "evaluate_model", real)
    fresh = unlearn(target, bench, "ga", tmp_path / "b", eval=EVAL, overrides=over)
    assert resumed["status"] == fresh["status"] == "finished"
    wa, wb = _weights(tmp_path / "a" / "model"), _weights(tmp_path / "b" / "model")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [c["forget_regurgitation"] for c in resumed["curve"]] == [c["forget_regurgitation"] for c in fresh["curve"]]


def test_divergence_keeps_the_last_good_state_and_the_scores_so_far(target, bench, tmp_path):
    # lr 1e6: the first steps are tiny (warm-up), then the weights blow up and the loss turns NaN.
    # eval_every=1 makes every step a checkpoint, so the last good state is a trained one.
    r = unlearn(target, bench, "ga", tmp_path, eval=EVAL, overrides={"lr": 1e6, "epochs": 3, "eval_every": 1})
    assert r["status"].startswith("diverged at step ")
    bad = int(r["status"].rsplit(" ", 1)[1])
    assert r["last_good_step"] == bad - 1 >= 1
    assert [c["step"] for c in r["curve"]] == list(range(bad))
    assert r["final"]["step"] == r["last_good_step"]
    saved = _weights(tmp_path / "model")
    assert all(torch.isfinite(t).all() for t in saved.values())
    ckpt = _weights(tmp_path / "train" / "checkpoint")
    assert all(torch.equal(saved[k], ckpt[k]) for k in ckpt if k in saved)


def test_cli_unlearn_and_methods(target, bench_dir, tmp_path, capsys):
    assert lume(["methods"]) == 0
    listed = capsys.readouterr().out
    assert "npo " in listed and "beta=0.1" in listed and "preset tiny" in listed
    assert lume(["unlearn", "--method", "npo", "--target", target, "--data", str(bench_dir),
                 "--out", str(tmp_path / "x"), "--set", "gamma=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "beta=0.1" in err
    args = ["unlearn", "--method", "npo", "--target", target, "--data", str(bench_dir), "--out",
            str(tmp_path / "run"), "--set", "beta=0.5", "--epochs", "1", "--eval-subset", "3",
            "--max-new-tokens", "16", "--layers", "1", "--params", "mlp"]
    assert lume(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["status"] == "finished"
    rec = json.loads((tmp_path / "run" / "unlearn.json").read_text())
    assert rec["hyperparameters"] == {"beta": 0.5} and rec["config"]["layers"] == "1"
    assert rec["trainable"] == "layers 1, names matching 'mlp'" and rec["n_trainable_tensors"] == 3
    gens = (tmp_path / "run" / "eval" / "step_000000" / "generations.jsonl").read_text().splitlines()
    assert {json.loads(g)["split"] for g in gens} == {"forget", "retain"}
    assert len({json.loads(g)["id"] for g in gens}) < 40  # a subset: 3 documents per split


# ----------------------------------------------------------------------------- methods II (issue 12)

NEW_METHODS = ("ails_ntua", "zjuklab", "atyaephyra", "sha256", "idk_dpo", "undial", "task_vector", "rmu")


@pytest.mark.parametrize("method", NEW_METHODS)
def test_new_methods_run_through_lume_unlearn(method, target, short_bench_dir, tmp_path, capsys):
    """Each method through the CLI (2 epochs): finished, its recipe applied,
    and the forget set moved (regurgitation below the target's)."""
    out = tmp_path / method
    assert lume(["unlearn", "--method", method, "--target", target, "--data", str(short_bench_dir), "--out", str(out),
                 "--epochs", "2", "--max-new-tokens", "48"]) == 0
    printed = json.loads(capsys.readouterr().out)
    rec = json.loads((out / "unlearn.json").read_text())
    assert printed["status"] == rec["status"] == "finished"
    assert [c["epoch"] for c in rec["curve"]][0] == 0.0 and rec["curve"][-1]["epoch"] == 2.0
    cls = METHODS.get(method)
    defaults = dataclasses.asdict(cls.Hparams())
    tiny = {k: v for k, v in cls.preset_defaults.get("tiny", {}).items() if k in defaults}
    assert rec["hyperparameters"] == {**defaults, **tiny}
    cfg = rec["config"]
    if method in ("atyaephyra", "zjuklab"):
        assert cfg["lora"]  # LoRA is the recipe, under every preset
    if method == "atyaephyra":
        assert (cfg["lora_r"], cfg["lora_alpha"]) == (5, 5) and (out / "adapter" / "adapter_model.safetensors").exists()
    if method == "sha256":
        assert rec["trainable"] == "layers 0-1"  # 0-5 clipped to the 2-layer target
    if method == "zjuklab":
        parts = [json.loads((out / "parts" / f"part{k}" / "unlearn.json").read_text()) for k in (0, 1)]
        assert [p["hyperparameters"]["part"] for p in parts] == [0, 1] and all(p["config"]["lora"] for p in parts)
        assert (out / "model" / "model.safetensors").exists() and not (out / "parts" / "part0" / "curve.jsonl").exists()
        # the parts and the whole method are steps: each marked done, a rerun reuses the method's step
        assert all((d / "done.json").exists() for d in (out, out / "parts" / "part0", out / "parts" / "part1"))
        marker = (out / "done.json").read_text()
        assert lume(["unlearn", "--method", method, "--target", target, "--data", str(short_bench_dir),
                     "--out", str(out), "--epochs", "2", "--max-new-tokens", "48"]) == 0
        assert json.loads(capsys.readouterr().out) == printed and (out / "done.json").read_text() == marker
    assert rec["final"]["forget_regurgitation"] < rec["curve"][0]["forget_regurgitation"], rec["final"]
    # done: no training checkpoint (weights + optimizer state) is left, the loop's states are
    assert not list(out.glob("**/checkpoint*")), list(out.glob("**/checkpoint*"))
    states = sorted(p.relative_to(out).as_posix() for p in out.glob("**/trainer_state.json"))
    assert states == (["parts/part0/train/trainer_state.json", "parts/part1/train/trainer_state.json"]
                      if method == "zjuklab" else ["train/trainer_state.json"])


def test_ails_ntua_schedule_is_sequential_chunks_with_cyclic_retain(bench, tmp_path):
    from lumebench.methods.ails_ntua import ChunkSchedule
    from lumebench.methods.base import Example

    forget = [Example((1, 2, 3), 1, i) for i in range(70)]
    retain = [Example((4, 5, 6), 1, i) for i in range(30)]
    plan = ChunkSchedule(forget, retain, batch_size=4, retain_per_batch=28, chunk_size=32, epochs=3, pad_id=0, seed=0)
    assert [len(c) for c in plan.chunks] == [32, 32, 6] and plan.steps == [8, 8, 2]
    assert plan.per_epoch == 18 and plan.total == 54
    seen = [plan.batch(k)["forget"]["index"].tolist() for k in range(plan.total)]
    # chunk 0 three times, then chunk 1 three times, then chunk 2: sequential, each example `epochs` times
    first = sorted(i for b in seen[:24] for i in b)
    assert first == sorted(plan.chunks[0] * 3)
    assert sorted(i for b in seen for i in b) == sorted(list(range(70)) * 3)
    r = [plan.batch(k)["retain"]["index"].tolist() for k in range(3)]
    assert all(len(x) == 28 for x in r)  # retain:forget = 7
    flat = [i for x in r for i in x]
    assert flat[:30] == flat[30:60] or sorted(flat[:30]) == list(range(30))  # one cycle covers the retain set


def test_task_vector_with_alpha_zero_leaves_the_target(target, bench, tmp_path):
    r = unlearn(target, bench, "task_vector", tmp_path, eval=EVAL, overrides={"epochs": 1, "alpha": 0.0})
    w, w0 = _weights(tmp_path / "model"), _weights(Path(target))
    assert all(torch.equal(w[k], w0[k]) for k in w)  # θ0 − 0·(θ − θ0) = θ0 although θ was trained
    # θ was trained: every step ran with a non-zero lr and gradient (the loop's kept state says so)
    state = json.loads((tmp_path / "train" / "trainer_state.json").read_text())
    assert state["step"] == r["steps"] > 0 and len(state["history"]) == r["steps"]
    assert all(h["grad_norm"] > 0 for h in state["history"]) and any(h["lr"] > 0 for h in state["history"])
    assert r["final"]["forget_regurgitation"] == r["curve"][0]["forget_regurgitation"]


def test_new_methods_run_through_lume_run(target, tmp_path, short_bench_dir, capsys):
    """One `lume run` over every new method (1 epoch, 2 seeds): the leaderboard has a row each, mean ± std."""
    import yaml

    cfg = {"name": "winners", "data": {"source": str(short_bench_dir)}, "target": {"model": target, "memorise": False},
           "methods": [{"name": m, "overrides": {"epochs": 1}} for m in NEW_METHODS],
           "eval": {"max_new_tokens": 8, "mmlu": False, "subset": 3}, "seeds": [0, 1], "threads": 1}
    path = tmp_path / "winners.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert lume(["run", str(path), "--runs-dir", str(tmp_path / "runs")]) == 0
    board = json.loads((tmp_path / "runs" / "winners" / "leaderboard.json").read_text())
    rows = {r["label"]: r for r in board["rows"]}
    assert set(NEW_METHODS) <= set(rows)
    for m in NEW_METHODS:
        assert rows[m]["status"] == "finished" and rows[m]["seeds"] == [0, 1]
        assert rows[m]["metrics"]["task_aggregate"]["n"] == 2


def test_sweep_selects_on_validation_rows_only(target, short_bench_dir, tmp_path, capsys):
    """`lume sweep` twice on data that differ only in their *test* rows (answers garbled): the trial
    table and the selection are identical, so selection never read a test row; the test runs differ,
    and every generation of a trial is a validation row, every one of the test run a test row."""
    import shutil

    import yaml
    from test_run_mini import _mmlu_sample

    from lumebench.data.loaders import load_benchmark
    from lumebench.pipeline.sweep import split_validation

    bench = load_benchmark(short_bench_dir)
    val, test = split_validation(bench, 0.5, 0)
    val_ids, test_ids = {r.id for r in val.rows}, {r.id for r in test.rows}
    assert val_ids and test_ids and not val_ids & test_ids and val_ids | test_ids == {r.id for r in bench.rows}
    garbled = tmp_path / "garbled"
    shutil.copytree(short_bench_dir, garbled)
    for split in ("forget", "retain"):
        rows = [json.loads(x) for x in (garbled / f"{split}.jsonl").read_text().splitlines()]
        for r in rows:
            if r["id"] in test_ids:
                r["output"] = " ".join(reversed(r["output"].split())) + " zz"
        (garbled / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def run(data, runs, workers):
        cfg = {"name": "s", "method": "ga", "data": {"source": str(data)},
               "target": {"model": target, "memorise": False}, "fixed": {"epochs": 1},
               "params": {"lr": [1e-4, 3e-3]}, "seeds": [0], "workers": workers,
               "eval": {"max_new_tokens": 16, "mmlu_source": str(_mmlu_sample(tmp_path)), "mmlu_limit": 1}}
        path = tmp_path / f"{runs}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        assert lume(["sweep", str(path), "--runs-dir", str(tmp_path / runs)]) == 0
        out = tmp_path / runs / "s"
        return out, json.loads((out / "trials.json").read_text()), json.loads((out / "selected.json").read_text())

    a_dir, a_trials, a_sel = run(short_bench_dir, "a", 2)  # trials in 2 processes
    b_dir, b_trials, b_sel = run(garbled, "b", 1)
    printed = capsys.readouterr().out
    assert "| trial | lr | final_score (validation) |" in printed and "selected: trial" in printed
    assert len(a_trials) == 2 and all(t["score_mean"] is not None for t in a_trials)
    assert [t["scores"] for t in a_trials] == [t["scores"] for t in b_trials] and a_sel == b_sel
    sa, sb = (json.loads((d / "sweep.json").read_text()) for d in (a_dir, b_dir))
    assert sa["validation_fingerprint"] == sb["validation_fingerprint"] and sa["test_fingerprint"] != sb["test_fingerprint"]

    def ids(pattern, root):
        return {json.loads(x)["id"] for f in root.glob(pattern) for x in f.read_text().splitlines()}

    assert ids("trials/*/seed0/eval/*/generations.jsonl", a_dir) == val_ids
    assert ids("test/ga/seed0/eval/*/generations.jsonl", a_dir) == test_ids
    board = json.loads((a_dir / "test" / "leaderboard.json").read_text())
    assert [r["label"] for r in board["rows"]][1:] == ["ga"]


def test_paper_findings_hold_across_seeds(seed_runs):
    """The LUME paper's findings as numbers over 3 seeds: at a similar forget level, GA destroys the
    retain set, GD and NPO + retain NLL keep more of it by more than the seed spread, and no method
    forgets cleanly (each loses retain regurgitation beyond its spread)."""
    from lumebench.report.leaderboard import Stat, within_spread

    keys = ("forget_regurgitation", "retain_regurgitation", "retain_knowledge")
    st = {m: {k: Stat.of(r["final"][k] for r in rs) for k in keys} for m, rs in seed_runs.items()}
    for m, rs in seed_runs.items():
        assert [r["seed"] for r in rs] == [0, 1, 2] and all(r["status"] == "finished" for r in rs), m
        assert len({r["final"]["retain_regurgitation"] for r in rs}) > 1, m  # the seeds do differ
    before = seed_runs["ga"][0]["curve"][0]["retain_regurgitation"]
    for m in st:
        assert max(st[m]["forget_regurgitation"].values) < 0.15, (m, st[m])  # a similar forget level
        rr = st[m]["retain_regurgitation"]
        assert before - rr.mean > 2 * rr.std, (m, rr)  # no method forgets cleanly
    ga = st["ga"]["retain_regurgitation"]
    assert max(ga.values) < 0.1  # GA takes the retain set down with it, on every seed
    for m in ("gd", "npo_rt"):
        kept = st[m]["retain_regurgitation"]
        assert kept.mean - ga.mean > 0.2 and within_spread(kept, ga) is False, (m, kept, ga)


def test_mmlu_at_ends_gives_the_same_final_numbers_without_mmlu_in_between(target, bench, tmp_path):
    from test_run_mini import _mmlu_sample

    ecfg = dataclasses.replace(EVAL, mmlu=True, mmlu_source=str(_mmlu_sample(tmp_path)), mmlu_limit=1, max_new_tokens=16)
    over = {"epochs": 3}
    every = unlearn(target, bench, "gd", tmp_path / "every", eval=ecfg, overrides=over)
    ends = unlearn(target, bench, "gd", tmp_path / "ends", eval=ecfg, overrides={**over, "mmlu_at": "ends"})
    assert [c["step"] for c in ends["curve"]] == [c["step"] for c in every["curve"]]
    assert ends["final"] == every["final"] and ends["final"]["mmlu"] is not None
    assert ends["curve"][0] == every["curve"][0]  # before unlearning: everything
    between = ends["curve"][1:-1]
    assert between and all(c["mmlu"] is None and c["final_score"] is None for c in between)
    for a, b in zip(between, every["curve"][1:-1]):  # the rest of each evaluation is unchanged
        assert {k: v for k, v in a.items() if k not in ("mmlu", "final_score")} == \
               {k: v for k, v in b.items() if k not in ("mmlu", "final_score")}
    # a run that diverges before its last epoch evaluates its last good step again, with MMLU
    div = unlearn(target, bench, "ga", tmp_path / "div", eval=ecfg,
                  overrides={"lr": 1e6, "epochs": 3, "eval_every": 1, "mmlu_at": "ends"})
    assert div["status"].startswith("diverged at step ")
    assert div["final"]["step"] == div["last_good_step"] >= 1 and div["final"]["mmlu"] is not None
    assert [c["step"] for c in div["curve"]] == list(range(div["last_good_step"] + 1))
    with pytest.raises(Exception, match="mmlu_at"):
        unlearn(target, bench, "gd", tmp_path / "bad", eval=ecfg, overrides={"mmlu_at": "sometimes"})


def test_a_last_evaluation_chunk_shorter_than_eval_every_keeps_the_schedule_of_the_steps_that_run(
        target, bench, tmp_path):
    """5 steps evaluated every 2: chunks of 2, 2 and 1 step. The linear schedule spans the 5 steps
    that run (it reached 0 at a 6th step that never ran before the fix)."""
    import math

    steps = math.ceil(len(bench.forget) / 8)
    r = unlearn(target, bench, "ga", tmp_path, evaluate=False,
                overrides={"epochs": 1, "batch_size": 8, "eval_every": 2, "lr_schedule": "linear",
                           "warmup_ratio": 0.0, "lr": 1e-3})
    assert steps % 2 == 1 and r["status"] == "finished" and r["steps"] == steps
    # the finished run keeps the loop's state (not its weights and optimizer) beside its log
    assert not (tmp_path / "train" / "checkpoint").exists()
    state = json.loads((tmp_path / "train" / "trainer_state.json").read_text())
    assert state["total_steps"] == steps
    lrs = [h["lr"] for h in state["history"]]
    assert len(lrs) == steps
    assert lrs == pytest.approx([1e-3 * (1 - k / steps) for k in range(steps)])



def test_the_winners_against_the_baselines_across_seeds(seed_runs, target, bench, tmp_path_factory):
    """Where the SemEval-2025 winners stand on the tiny target, over the same 3 seeds: AILS-NTUA
    (1st) forgets as much as GA, GD and NPO + retain and keeps more of the retain set than any of
    them, beyond the seed spread; Atyaephyra keeps the retain set too but leaves more of the forget
    set than every baseline (measured: AILS-NTUA forget 0.08 ± 0.05, retain 0.94 ± 0.00 against
    GD's 0.33 ± 0.09 and NPO+RT's 0.62 ± 0.02; Atyaephyra forget 0.32 ± 0.09, retain 0.94)."""
    from lumebench.report.leaderboard import Stat, within_spread

    base = tmp_path_factory.getbasetemp() / "winners-seeds"
    keys = ("forget_regurgitation", "retain_regurgitation", "retain_knowledge")
    runs = {m: [unlearn(target, bench, m, base / m / f"seed{s}", eval=EVAL,
                        overrides={"seed": s, "eval_every": 10 ** 6}) for s in (0, 1, 2)]
            for m in ("ails_ntua", "atyaephyra")}
    st = {m: {k: Stat.of(r["final"][k] for r in rs) for k in keys} for m, rs in {**seed_runs, **runs}.items()}
    for m, rs in runs.items():
        assert [r["status"] for r in rs] == ["finished"] * 3, m
    ails = st["ails_ntua"]
    assert max(ails["forget_regurgitation"].values) < 0.15, ails  # the baselines' forget level
    for m in ("ga", "gd", "npo_rt"):
        kept, theirs = ails["retain_regurgitation"], st[m]["retain_regurgitation"]
        assert kept.mean - theirs.mean > 0.2 and within_spread(kept, theirs) is False, (m, kept, theirs)
        assert ails["retain_knowledge"].mean >= st[m]["retain_knowledge"].mean, m
    aty = st["atyaephyra"]
    assert aty["retain_regurgitation"].mean > 0.9
    for m in ("ga", "gd", "npo_rt"):
        left, theirs = aty["forget_regurgitation"], st[m]["forget_regurgitation"]
        assert left.mean - theirs.mean > 0.15 and within_spread(left, theirs) is False, (m, left, theirs)


# ----------------------------------------------------------------------------- the field since LUME (issue 24)

FIELD_METHODS = ("wga", "satimp", "ce_u")


@pytest.mark.parametrize("method", FIELD_METHODS)
def test_field_methods_run_through_lume_unlearn(method, target, short_bench_dir, tmp_path, capsys):
    """WGA, SatImp and CE-U through the CLI on the tiny target (tiny preset, 2 epochs): finished with
    their default hyperparameters, every weight trained (the sources' full fine-tuning), and the
    forget set moved (regurgitation below the target's)."""
    out = tmp_path / method
    assert lume(["unlearn", "--method", method, "--target", target, "--data", str(short_bench_dir), "--out", str(out),
                 "--epochs", "2", "--max-new-tokens", "48"]) == 0
    printed = json.loads(capsys.readouterr().out)
    rec = json.loads((out / "unlearn.json").read_text())
    assert printed["status"] == rec["status"] == "finished"
    assert rec["hyperparameters"] == dataclasses.asdict(METHODS.get(method).Hparams())
    assert rec["trainable"] == "all weights" and not rec["config"]["lora"]
    assert [c["epoch"] for c in rec["curve"]] == [0.0, 1.0, 2.0]
    assert rec["final"]["forget_regurgitation"] < rec["curve"][0]["forget_regurgitation"], rec["final"]
