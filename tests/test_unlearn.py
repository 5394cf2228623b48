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
from lumebench.data.records import Benchmark
from lumebench.eval.evaluate import EvalConfig
from lumebench.io import iter_jsonl
from lumebench.methods import unlearn as unlearn_mod
from lumebench.methods.unlearn import unlearn
from lumebench.registry import METHODS

EVAL = EvalConfig(max_new_tokens=48)
TINY = {"hidden_size": 128, "num_layers": 2, "num_heads": 4, "intermediate_size": 256,
        "vocab_size": 1024, "max_position": 512}


def _short(row, n=20):
    if row.kind != "sc":
        return row
    return dataclasses.replace(row, input=" ".join(row.input.split()[-n:]), output=" ".join(row.output.split()[:n]))


@pytest.fixture(scope="session")
def bench_dir(tmp_path_factory) -> Path:
    from lumebench.data.generate import generate_benchmark

    return generate_benchmark(tmp_path_factory.getbasetemp() / "unlearn-data", docs_per_task=2, seed=0)


@pytest.fixture(scope="session")
def bench(bench_dir) -> Benchmark:
    from lumebench.data.loaders import load_benchmark

    b = load_benchmark(bench_dir)
    return Benchmark([_short(r) for r in b.forget], [_short(r) for r in b.retain], b.mia_members,
                     b.mia_nonmembers, "generated-short")


@pytest.fixture(scope="session")
def target(bench, tmp_path_factory, one_thread) -> str:
    from lumebench.train.finetune import FinetuneConfig, build_target

    cfg = FinetuneConfig(epochs=40, min_steps=0, eval_from=40, tiny=TINY, mixed_precision="no")
    path = build_target("tiny", bench, cfg, cache_dir=tmp_path_factory.getbasetemp() / "unlearn-targets")
    info = json.loads((path / "target.json").read_text())
    mem = info["memorisation"]
    assert mem["forget_regurgitation"] > 0.9 and mem["retain_regurgitation"] > 0.9, mem
    return str(path)


@pytest.fixture(scope="session")
def full_runs(target, bench, tmp_path_factory) -> dict[str, dict]:
    """GA, GD and NPO+retain with the tiny preset (10 epochs), evaluated before and after every epoch."""
    base = tmp_path_factory.getbasetemp() / "unlearn-runs"
    return {m: unlearn(target, bench, m, base / m, eval_cfg=EVAL) for m in ("ga", "gd", "npo_rt")}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


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
    again = unlearn(r["target"]["spec"], bench, "gd", out, eval_cfg=EVAL)
    assert again == r
    assert len((out / "curve.jsonl").read_text().splitlines()) == n_lines


@pytest.mark.parametrize("method", ["kl", "npo", "npo_kl", "simnpo"])
def test_other_methods_run_to_completion(method, target, bench, tmp_path):
    r = unlearn(target, bench, method, tmp_path, eval_cfg=EVAL, overrides={"epochs": 3})
    assert r["status"] == "finished" and r["steps"] == 3 * r["steps_per_epoch"]
    assert [c["epoch"] for c in r["curve"]] == [0.0, 1.0, 2.0, 3.0]
    assert r["final"]["forget_regurgitation"] < r["curve"][0]["forget_regurgitation"]
    if method.startswith("npo"):
        assert (tmp_path / "reference_nll_forget.safetensors").exists()
    assert r["hyperparameters"] == dataclasses.asdict(METHODS.get(method).Hparams())


def test_lora_unlearning_saves_the_adapter_and_the_merged_model(target, bench, tmp_path):
    r = unlearn(target, bench, "npo_kl", tmp_path, lora=True, overrides={"epochs": 1, "lora_r": 4}, eval_cfg=EVAL)
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
    real = unlearn_mod._evaluate
    calls = []

    def flaky(model, tok, b, cfg, out_dir):
        calls.append(out_dir.name)
        if len(calls) == 3:  # dies while evaluating after epoch 2 (epoch 1 is checkpointed)
            raise KeyboardInterrupt
        return real(model, tok, b, cfg, out_dir)

    monkeypatch.setattr(unlearn_mod, "_evaluate", flaky)
    over = {"epochs": 3}
    with pytest.raises(KeyboardInterrupt):
        unlearn(target, bench, "ga", tmp_path / "a", eval_cfg=EVAL, overrides=over)
    assert json.loads((tmp_path / "a" / "unlearn.json").read_text())["status"] == "running"
    calls.clear()
    resumed = unlearn(target, bench, "ga", tmp_path / "a", eval_cfg=EVAL, overrides=over)
    spe = resumed["steps_per_epoch"]
    assert calls == [f"step_{2 * spe:06d}", f"step_{3 * spe:06d}"]  # step 0 and epoch 1 were kept
    monkeypatch.setattr(unlearn_mod, "_evaluate", real)
    fresh = unlearn(target, bench, "ga", tmp_path / "b", eval_cfg=EVAL, overrides=over)
    assert resumed["status"] == fresh["status"] == "finished"
    wa, wb = _weights(tmp_path / "a" / "model"), _weights(tmp_path / "b" / "model")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [c["forget_regurgitation"] for c in resumed["curve"]] == [c["forget_regurgitation"] for c in fresh["curve"]]


def test_divergence_keeps_the_last_good_state_and_the_scores_so_far(target, bench, tmp_path):
    # lr 1e6: the first steps are tiny (warm-up), then the weights blow up and the loss turns NaN.
    # eval_every=1 makes every step a checkpoint, so the last good state is a trained one.
    r = unlearn(target, bench, "ga", tmp_path, eval_cfg=EVAL, overrides={"lr": 1e6, "epochs": 3, "eval_every": 1})
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
