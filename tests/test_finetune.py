"""Memorisation fine-tuning: target.json, the content-keyed cache, determinism, the CLI."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
import torch

from lumebench.cli import main
from lumebench.data.loaders import load_benchmark
from lumebench.data.records import SPLITS, TASKS, Benchmark
from lumebench.io import write_jsonl
from lumebench.models import load_model
from lumebench.step import Step
from lumebench.pipeline.target import (FinetuneConfig, build_target, finetune, target_key,
                                      target_met, training_examples)

SMALL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "vocab_size": 512}
CFG = {"epochs": 2, "min_steps": 0, "eval_from": 2, "batch_size": 8, "tiny": SMALL}  # settings by name


@pytest.fixture(scope="module")
def bench(lume_data) -> Benchmark:
    """One document per task and split of the official data (9 rows a split) + 2 + 2 MIA documents."""
    full = load_benchmark(lume_data / "official", mia=lume_data / "mia")
    keep = [next(r.doc_id for r in full.split(s) if r.task == t) for s in SPLITS for t in TASKS]
    b = full.subset(keep)
    return Benchmark(b.forget, b.retain, full.mia_members[:2], full.mia_nonmembers[:2], "official-subset")


def test_training_examples_cover_every_document_and_qa_pair(bench):
    from lumebench.models.tiny import build_tokenizer
    from lumebench.pipeline.target import benchmark_texts

    tok = build_tokenizer(benchmark_texts(bench), 512)
    ex = training_examples(tok, bench, 1024)
    assert len(bench.documents()) == 6 and len(bench.qa_pairs()) >= 6
    assert len(ex) == len(bench.documents()) + len(bench.qa_pairs())
    assert all(e[-1] == tok.eos_token_id for e in ex)
    qa = bench.qa_pairs()[0]
    assert tok.decode(ex[6][:-1]) == qa.input + " " + qa.output


def test_build_target_writes_target_json_and_is_cached(bench, tmp_path):
    t = time.perf_counter()
    path = build_target("tiny", bench, CFG, tmp_path)
    first_s = time.perf_counter() - t
    info = json.loads((path / "target.json").read_text())
    assert Step(path, None).record()["key"] == info["key"]  # the step's marker: done with this key
    assert info["base"] == "tiny" and info["data_fingerprint"] == bench.fingerprint()
    assert info["hyperparameters"]["lr"] == 5e-3  # the tiny default, resolved and recorded
    assert info["seed"] == 0 and "torch" in info["meta"]["versions"]
    assert set(info["memorisation"]) == {"forget_regurgitation", "forget_knowledge", "retain_regurgitation",
                                         "retain_knowledge", "mia_auc"}
    assert all(0.0 <= v <= 1.0 for v in info["memorisation"].values())
    assert info["epochs"] == 2 and info["steps"] == 6 and info["status"] == "completed"
    assert not (path / "train" / "checkpoint").exists() and (path / "train" / "train_log.jsonl").is_file()
    assert json.loads((path / "train" / "trainer_state.json").read_text())["step"] == 6
    # a normal model directory that the rest of lumebench loads
    model, tok = load_model(str(path))
    assert model.config.hidden_size == 32 and tok.pad_token == tok.eos_token

    mtime = (path / "target.json").stat().st_mtime_ns
    t = time.perf_counter()
    assert build_target("tiny", bench, CFG, tmp_path) == path
    assert time.perf_counter() - t < min(1.0, first_s / 3)
    assert (path / "target.json").stat().st_mtime_ns == mtime  # not rebuilt

    # deterministic from the seed: a rebuild elsewhere gives the same weights
    other = build_target("tiny", bench, CFG, tmp_path / "again")
    again, _ = load_model(str(other))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))


def test_cache_key_follows_data_and_hyperparameters(bench):
    key = target_key("tiny", bench, CFG)
    assert target_key("tiny", bench, dict(CFG)) == key
    assert target_key("tiny", bench, {**CFG, "lr": 5e-3}) == key  # the resolved default
    assert target_key("tiny", bench, {**CFG, "lr": 1e-3}) != key
    assert target_key("tiny", bench, {**CFG, "seed": 1}) != key
    assert target_key("smollm2-135m", bench, CFG) != key
    r = bench.forget[-1]
    changed = Benchmark(bench.forget[:-1] + [dataclasses.replace(r, output=r.output + "!")], bench.retain,
                        bench.mia_members, bench.mia_nonmembers)
    assert target_key("tiny", changed, CFG) != key
    fewer = Benchmark(bench.forget, bench.retain, bench.mia_members[:1], bench.mia_nonmembers)
    assert target_key("tiny", fewer, CFG) != key


def test_target_met_needs_both_splits_and_mia():
    good = {"forget_regurgitation": 0.95, "forget_knowledge": 0.92, "retain_regurgitation": 0.91,
            "retain_knowledge": 1.0, "mia_auc": 0.97}
    cfg = FinetuneConfig.for_base("tiny")
    assert target_met(good, cfg)
    assert not target_met({**good, "retain_knowledge": 0.89}, cfg)
    assert not target_met({**good, "mia_auc": 0.6}, cfg)
    assert target_met({**good, "mia_auc": None}, cfg)  # no MIA documents: not part of the target
    assert target_met({**good, "mia_auc": 0.6}, dataclasses.replace(cfg, target_mia_auc=None))


def test_early_stop_off_trains_every_epoch_and_still_reports_the_target_met(bench, tmp_path):
    """A target every check meets (thresholds 0): early_stop stops at the first check; without it
    every epoch trains and the target is still reported met (`lume finetune --no-early-stop` used
    to raise the thresholds to infinity and so always reported "NOT met", exit 1)."""
    easy = {**CFG, "epochs": 3, "eval_from": 1, "eval_every": 1, "target_regurgitation": 0.0,
            "target_knowledge": 0.0, "target_mia_auc": None}
    stopped = finetune("tiny", bench, FinetuneConfig.for_base("tiny", easy), tmp_path / "a")
    full = finetune("tiny", bench, FinetuneConfig.for_base("tiny", {**easy, "early_stop": False}), tmp_path / "b")
    assert stopped["target_met"] and stopped["epochs"] == 1
    assert full["target_met"] and full["epochs"] == 3
    assert target_key("tiny", bench, {**easy, "early_stop": True}) == target_key("tiny", bench, easy)
    assert target_key("tiny", bench, {**easy, "early_stop": False}) != target_key("tiny", bench, easy)


def test_lume_finetune_cli(bench, tmp_path, capsys):
    data = tmp_path / "data"
    write_jsonl(data / "forget.jsonl", [r.to_official() for r in bench.forget])
    write_jsonl(data / "retain.jsonl", [r.to_official() for r in bench.retain])
    # a base given as a local model directory (here a small untrained tiny model)
    from lumebench.models.tiny import TinyConfig, build_model, build_tokenizer
    from lumebench.pipeline.target import benchmark_texts

    tok = build_tokenizer(benchmark_texts(bench), 512)
    base = tmp_path / "base"
    build_model(tok, TinyConfig(**SMALL)).save_pretrained(base)
    tok.save_pretrained(base)
    out = tmp_path / "target"
    # one epoch cannot memorise: exit status 1, target.json still written
    code = main(["finetune", "--model", str(base), "--data", str(data), "--out", str(out), "--epochs", "1",
                 "--lr", "1e-3", "--batch-size", "4"])
    assert code == 1
    info = json.loads((out / "target.json").read_text())
    assert info["base"] == str(base) and info["steps"] == 5  # 20 examples in batches of 4
    assert info["hyperparameters"]["epochs"] == 1 and info["hyperparameters"]["batch_size"] == 4
    assert info["memorisation"]["mia_auc"] is None  # this data directory has no MIA documents
    assert "memorisation: forget regurgitation" in capsys.readouterr().out
    assert main(["finetune", "--model", "nope", "--data", str(data), "--out", str(tmp_path / "x")]) == 2
    assert "known models: olmo-1b, olmo-7b, smollm2-135m, tiny" in capsys.readouterr().err


def test_lume_finetune_again_into_the_same_dir_returns_the_finished_target(bench, tmp_path):
    out = tmp_path / "target"
    first = finetune("tiny", bench, CFG, out)
    log_mtime = (out / "train" / "train_log.jsonl").stat().st_mtime_ns
    t = time.perf_counter()
    again = finetune("tiny", bench, CFG, out)
    assert time.perf_counter() - t < 1.0
    assert again["key"] == first["key"] and again["steps"] == first["steps"]
    assert (out / "train" / "train_log.jsonl").stat().st_mtime_ns == log_mtime  # not retrained
    # other hyperparameters in the same directory do train (into a fresh run)
    changed = finetune("tiny", bench, {**CFG, "epochs": 3, "eval_from": 3}, out, resume=False)
    assert changed["key"] != first["key"] and changed["epochs"] == 3
