"""The `lume run` configuration: the embedded default, the shipped examples, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lumebench.cli import main
from lumebench.errors import LumeError
from lumebench.pipeline.config import RunConfig, default_config, default_dict, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_default_yaml_is_the_embedded_default():
    assert load_config(CONFIGS / "default.yaml").to_dict() == default_config().to_dict()
    assert load_config(None).to_dict() == default_config().to_dict()
    cfg = default_config()
    assert [m.name for m in cfg.methods] == ["ga", "gd", "kl", "npo", "npo_rt"]
    assert cfg.target.model == "tiny" and cfg.data.source == "generated"
    assert cfg.eval.mmlu_limit is not None  # the default run measures a partial MMLU on purpose
    assert cfg.seeds == [0, 1, 2] and cfg.eval.mmlu_at == "ends"  # 3 seeds: mean ± std, a finding
    assert cfg.threads == 1 and cfg.workers is None  # method runs on cores / threads processes


@pytest.mark.parametrize("name", ["default.yaml", "default-10epochs.yaml", "default-attacks.yaml", "official-smollm2.yaml", "olmo7b-8gpu.yaml", "olmo1b-8gpu.yaml"])
def test_shipped_configs_parse_and_name_registered_methods(name):
    cfg = load_config(CONFIGS / name)  # methods and their overrides are checked at load
    assert isinstance(cfg, RunConfig) and cfg.methods


def test_toml_and_json_configs(tmp_path):
    toml = tmp_path / "x.toml"
    toml.write_text('name = "t"\nseeds = [1, 2]\n[data]\ndocs_per_task = 2\n'
                    '[[methods]]\nname = "npo"\noverrides = {beta = 0.5}\n', encoding="utf-8")
    cfg = load_config(toml)
    assert cfg.name == "t" and cfg.seeds == [1, 2] and cfg.data.docs_per_task == 2
    assert cfg.methods[0].name == "npo" and cfg.methods[0].overrides == {"beta": 0.5}
    assert cfg.eval.every == default_config().eval.every == 16  # unspecified -> the default file's
    js = tmp_path / "x.json"
    js.write_text(json.dumps({**default_dict(), "name": "j", "eval": {"every": 3}}), encoding="utf-8")
    assert load_config(js).eval.every == 3
    # a config without `methods` runs the default method set
    assert [m.name for m in cfg.methods] == ["npo"]
    js.write_text(json.dumps({"name": "k"}), encoding="utf-8")
    assert [m.name for m in load_config(js).methods] == [m["name"] for m in default_dict()["methods"]]


@pytest.mark.parametrize("text, where, words", [
    ("name: x\nmethods:\n  - name: ga\n  - name: npo\n    overrides: 3\n", ":5", "methods[1].overrides"),
    ("name: x\ndata:\n  docs_per_tsk: 3\n", ":3", "data.docs_per_tsk"),
    ("name: x\nseeds: [0, 0]\n", ":2", "seeds"),
    ("name: x\nmethods:\n  - name: ga\n  - name: ga\n", ":4", "listed twice"),
    ("name: ../escape\n", ":1", "folder"),
    ("name: x\neval:\n  every: 0\n", ":3", "eval.every"),
    ("name: x\neval:\n  mmlu_at: sometimes\n", ":3", "eval.mmlu_at"),
    ("name: x\nseeds: [0,\n", ":3", "cannot parse"),
    ("name: x\nmethods: []\n", ":2", "no methods"),
])
def test_config_errors_name_file_line_and_field(tmp_path, text, where, words):
    p = tmp_path / "bad.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(LumeError) as e:
        load_config(p)
    msg = str(e.value)
    assert f"{p}{where}" in msg and words in msg and "\n" not in msg


@pytest.mark.parametrize("override, field, words", [
    ("bta: 0.5", "methods[4].overrides.bta", "unknown setting"),       # a typo of NPO's beta
    ("beta: x", "methods[4].overrides.beta", "number"),                # the method's Hparams type
    ("beta: 0", "methods[4].overrides.beta", "beta"),                  # its range
    ("lr: -1", "methods[4].overrides.lr", "lr"),                       # a trainer setting's range
])
def test_fifth_method_override_typo_fails_at_load_within_a_second(tmp_path, override, field, words):
    """Every method's overrides are typed (its Hparams, the trainer settings) and checked when the
    config loads, not when the method starts after fine-tuning and four other methods."""
    import time

    p = tmp_path / "typo.yaml"
    lines = ["name: typo", "methods:"]
    lines += [f"  - {{name: {m}, overrides: {{epochs: 1}}}}" for m in ("ga", "gd", "kl", "npo_rt")]
    lines += ["  - name: npo", "    overrides:", "      epochs: 1", f"      {override}"]
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    t0 = time.perf_counter()
    with pytest.raises(LumeError) as e:
        load_config(p)
    assert time.perf_counter() - t0 < 1.0
    msg = str(e.value)
    assert f"{p}:10" in msg and f"'{field}'" in msg and words in msg and "\n" not in msg, msg


def test_unknown_method_is_one_line_cli_error(tmp_path, capsys):
    p = tmp_path / "m.yaml"
    p.write_text("name: m\nmethods:\n  - name: ga\n  - name: nope\n", encoding="utf-8")
    assert main(["run", str(p), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and f"{p}:4" in err and "'nope'" in err and "npo" in err
    assert not (tmp_path / "runs").exists()  # nothing written before the config is valid


def test_name_override_cannot_leave_the_runs_dir(tmp_path, capsys):
    assert main(["run", "--name", "../outside", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "--name '../outside'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "outside").exists()


def test_print_config_round_trips(tmp_path, capsys):
    assert main(["run", "--print-config", "--name", "other"]) == 0
    out = capsys.readouterr().out
    p = tmp_path / "resolved.yaml"
    p.write_text(out, encoding="utf-8")
    cfg = load_config(p)
    assert cfg.name == "other"
    cfg.name = "default"
    assert cfg.to_dict() == default_config().to_dict()


def test_official_smollm2_config_reads_the_official_data(lume_data, tmp_path, monkeypatch):
    from lumebench.pipeline.data import prepare_data

    monkeypatch.chdir(CONFIGS.parent)  # relative data paths are relative to where `lume run` runs
    cfg = load_config(CONFIGS / "official-smollm2.yaml")
    assert Path(cfg.data.source).resolve() == (lume_data / "official").resolve()
    bench = prepare_data(cfg.data, tmp_path / "cache")
    assert (len(bench.forget), len(bench.retain)) == (2732, 2734)
    assert (len(bench.mia_members), len(bench.mia_nonmembers)) == (150, 150)
    assert not (tmp_path / "cache").exists()  # nothing generated or copied


def test_smollm2_science_config_runs_every_method_with_three_seeds():
    from lumebench.pipeline.unlearn_config import resolve_config
    from lumebench.registry import METHODS

    path = "configs/smollm2-science.yaml"
    cfg = load_config(path)
    assert cfg.target.model == "smollm2-135m" and len(cfg.seeds) >= 3
    assert {m.name for m in cfg.methods} == set(METHODS.names())  # every registered method
    from lumebench.models.registry import spec_or_default

    family = spec_or_default(cfg.target.model).unlearn_preset
    assert family == "smollm2"
    rmu = {}
    winners = ("ails_ntua", "sha256", "atyaephyra", "zjuklab")
    for m in cfg.methods:
        method, cfg_m = resolve_config(m.name, m.overrides, family=family)
        assert cfg_m.lora == (m.name in ("atyaephyra", "zjuklab")), m.name
        assert (cfg_m.preset == "original") == (m.name in winners), m.name
        if m.name not in winners:
            assert cfg_m.train.epochs == 5, m.name
        if m.name == "rmu":
            rmu[m.key] = (method.hp.steering_coef, method.hp.alpha, method.hp.update, cfg_m.train.lr,
                            cfg_m.train.batch_size)
    # the three RMU rows of the README's table: the recipe, c 150 at lr 5e-4, and RMU's SmolLM2 defaults
    assert rmu == {"rmu-recipe": (6.5, 1200.0, r"mlp\.down_proj", 5e-5, 4),
                   "rmu-c150": (150.0, 100.0, "mlp", 5e-4, 4),
                   "rmu": (150.0, 100.0, "mlp", 5e-3, 4)}


def test_smollm2_science_config_runs_each_winner_at_its_original_budget():
    """The SemEval winners run as their sources published them (preset 'original'), at the teams'
    budget per forget example: epochs, examples per optimizer step, lr schedule (issue 24)."""
    from lumebench.pipeline.unlearn_config import resolve_config

    cfg = load_config("configs/smollm2-science.yaml")
    got = {}
    for m in cfg.methods:
        if m.name in ("ails_ntua", "sha256", "atyaephyra", "zjuklab"):
            method, c = resolve_config(m.name, m.overrides, family="smollm2")
            t = c.train
            got[m.name] = (t.epochs, t.batch_size * t.grad_accum, t.lr, t.lr_schedule, t.warmup_ratio,
                           tuple(t.adam_betas), t.max_grad_norm, t.weight_decay)
            hp = method.hp
            if m.name == "ails_ntua":  # batch 1 in the source's order, a new schedule per chunk of 32
                assert (hp.sequential, hp.restart_per_chunk, hp.chunk_size, hp.retain_ratio) == (True, True, 32, 7)
            if m.name == "atyaephyra":  # per-token NPO, forget and retain in one batch, q/v LoRA r=alpha=5
                assert (hp.npo_reduction, hp.kl_form, hp.mixed_batches) == ("token", "token", True)
                assert (c.lora_r, c.lora_alpha, c.lora_targets) == (5, 5, ["q_proj", "v_proj"])
            if m.name == "sha256":  # MLPs of layers 0-5, the epoch-0 baseline rule capped at 2.3
                assert (hp.update, hp.alpha_rule, hp.alpha_max, hp.mixed_batches) == (r"\.mlp\.", "epoch_baseline",
                                                                                     2.3, True)
            if m.name == "zjuklab":  # the two runs' weights and batches, TIES on the LoRA factors at 0.8
                assert (hp.npo_weight_0, hp.kl_weight_0, hp.nll_weight_0) == (0.4, 0.4, 0.2)
                assert (hp.npo_weight_1, hp.kl_weight_1, hp.nll_weight_1) == (0.3, 0.3, 0.4)
                assert (hp.batch_size_0, hp.batch_size_1, hp.density, hp.ties_on) == (4, 8, 0.8, "factors")
                assert (c.lora_r, c.lora_alpha, c.lora_dropout) == (32, 32, 0.05)
    hf = (0.9, 0.999)  # the HF Trainer's / torch Adam's betas
    assert got == {
        "ails_ntua": (7, 1, 1e-5, "linear", 0.0, hf, 1.0, 0.0),      # configs/sequential_args.json
        "sha256": (8, 120, 1.5e-5, "linear", 0.0, hf, 1.0, 0.0),      # unlearn.py l. 298-301
        "atyaephyra": (20, 4, 1e-4, "constant", 0.0, hf, None, 0.0),  # src/unlearn.py, plain Adam
        "zjuklab": (5, 32, 1e-4, "linear", 0.2, hf, 1.0, 0.01),       # the runs' own batches: 4 and 8
    }
