"""The robustness attacks (issue 25) on the memorised tiny target of tests/test_unlearn.py (its
fixtures: the same cached target when both files run in one session).

- relearning on T brings V back after GA, more than the same fine-tuning teaches a model that never
  saw V (the learning control, a target built without V's documents);
- 4-bit (NF4) and 8-bit quantisation map an unlearning update smaller than the quantisation step back
  onto the target's weights exactly, and keep a large one;
- the paraphrase probes are never read by fine-tuning or unlearning (asserted on the data);
- the logit lens finds every memorised QA answer at the last layer;
- ``lume attack --help`` lists the four attacks; a mini ``lume run`` with an ``attacks:`` section writes
  the robustness columns and the relearning plot.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lumebench.attacks.common import AttackEval
from lumebench.cli import main as lume
from lumebench.pipeline.eval_settings import EvalSettings
from lumebench.pipeline.unlearn_config import unlearning_lr
from conftest import TINY

EV = AttackEval(max_new_tokens=32)


@pytest.fixture(scope="module")
def ga_model(target, bench, tmp_path_factory) -> str:
    """GA for 5 epochs (15 steps at the tiny preset's lr 1e-3): forget knowledge and regurgitation
    down, not the whole model destroyed (10 epochs take every score to 0, and nothing is left to
    relearn from)."""
    from lumebench.pipeline.unlearn import unlearn

    out = tmp_path_factory.mktemp("attack-ga")
    r = unlearn(target, bench, "ga", out, overrides={"epochs": 5, "eval_every": "end"},
                eval=EvalSettings(max_new_tokens=32, mia=False))
    assert r["status"] == "finished"
    return str(out / "model")


# ----------------------------------------------------------------------------------- relearn

def test_relearn_on_T_recovers_V_after_ga_more_than_the_same_finetuning_teaches_a_model_that_never_saw_V(
        ga_model, target, bench, tmp_path_factory, one_thread):
    from lumebench.attacks.relearn import RelearnConfig, relearn, split_documents
    from lumebench.pipeline.target import FinetuneConfig, build_target

    cfg = RelearnConfig(steps=[1, 5, 20], modes=["full", "lora"], seed=0)
    split = split_documents(bench, cfg.train_fraction, cfg.seed)
    # the retrain control: the target's recipe on the benchmark without V's documents
    keep = [d for d in bench.doc_ids("forget") if d not in split["V"]] + bench.doc_ids("retain")
    ft = FinetuneConfig.for_base("tiny", {"epochs": 40, "min_steps": 0, "eval_from": 40, "tiny": TINY,
                                          "mixed_precision": "no"})
    retrain = build_target("tiny", bench.subset(keep), ft, cache_dir=tmp_path_factory.mktemp("retrain"))
    out = tmp_path_factory.mktemp("relearn")
    res = relearn(ga_model, target, bench, out, cfg, EV, retrain=str(retrain), lr_of=unlearning_lr)

    # the split: by document, per task, seeded and recorded; T and V partition the forget documents
    sp = res["split"]
    assert set(sp["T"]).isdisjoint(sp["V"]) and set(sp["T"]) | set(sp["V"]) == set(bench.doc_ids("forget"))
    for task in ("Task1", "Task2", "Task3"):
        docs = {r.doc_id for r in bench.forget if r.task == task}
        assert docs & set(sp["T"]) and docs & set(sp["V"])
    assert split_documents(bench, 0.5, 0) == split and split_documents(bench, 0.5, 1) != split
    assert res["lr"] == {"full": 1e-3, "lora": 1e-2}  # the tiny family's unlearning lr (x10 under LoRA)

    full = res["modes"]["full"]
    assert [p["k"] for p in full["points"]] == [0, 1, 5, 20]
    assert res["v_target"]["regurgitation"] > 0.9 and res["v_unlearned"]["regurgitation"] < 0.2
    rec = {p["k"]: p["recovery"]["regurgitation"]["value"] for p in full["points"]}
    gain = {p["k"]: p["gain"]["regurgitation"]["value"] for p in full["control_retrain"]}
    assert rec[0] == 0.0 and gain[0] == 0.0
    # relearning: 20 steps on T bring back a clear share of V's text (measured 0.50) ...
    assert rec[20] > 0.3, rec
    # ... far more than the same 20 steps teach a model that never saw V (measured -0.05): relearning, not learning
    assert rec[20] > gain[20] + 0.25, (rec, gain)
    # the target control: fine-tuning on T keeps most of what the target knows of V
    tgt = {p["k"]: p for p in full["control_target"]}
    assert tgt[0]["regurgitation"] == res["v_target"]["regurgitation"] and tgt[20]["regurgitation"] > 0.7
    # LoRA ran the same protocol (its numbers are reported, not judged here)
    assert [p["k"] for p in res["modes"]["lora"]["points"]] == [0, 1, 5, 20]
    assert (out / "relearn.json").is_file() and (out / "unlearned-full" / "points.jsonl").is_file()
    # a step: the same call again reuses it (no curve recomputed)
    marker = (out / "done.json").read_text()
    assert relearn(ga_model, target, bench, out, cfg, EV, retrain=str(retrain), lr_of=unlearning_lr) == res
    assert (out / "done.json").read_text() == marker


def test_benign_relearn_on_retain_documents_measures_every_forget_document(ga_model, target, bench, tmp_path,
                                                                           one_thread):
    """Benign relearning (Hu et al. 2024): fine-tuning on retain documents only (never a forget fact)
    and measuring every forget document; the target control and the recovery ratio as for T/V."""
    from lumebench.attacks.relearn import RelearnConfig, benign_split, relearn

    cfg = RelearnConfig(steps=[5, 20], modes=["full"], seed=0, on="retain")
    res = relearn(ga_model, target, bench, tmp_path / "benign", cfg, EV, lr_of=unlearning_lr)
    sp = res["split"]
    assert sp["on"] == "retain" and "benign relearning" in res["protocol"]
    assert set(sp["V"]) == set(bench.doc_ids("forget")) and set(sp["T"]) <= set(bench.doc_ids("retain"))
    want = benign_split(bench, 0.5, 0)
    assert set(sp["T"]).isdisjoint(bench.doc_ids("forget")) and {k: sp[k] for k in want} == want
    assert res["split"]["n_V_rows"] == len(bench.forget)
    pts = {p["k"]: p for p in res["modes"]["full"]["points"]}
    assert sorted(pts) == [0, 5, 20]
    assert res["v_target"]["regurgitation"] > 0.9 and pts[0]["regurgitation"] < 0.2  # GA forgot V
    for p in pts.values():  # a ratio in the scale of what unlearning removed
        v = p["recovery"]["regurgitation"]["value"]
        assert v is not None and -1.0 <= v <= 1.5
    # after GA, 20 steps on retain documents alone bring back a clear share of every forget document
    # (measured: knowledge 0.55, regurgitation 0.45 of what GA removed; 0.36 / 0.15 after 5 steps)
    rec20 = pts[20]["recovery"]
    assert rec20["knowledge"]["value"] > 0.3 and rec20["regurgitation"]["value"] > 0.3, rec20


def test_relearn_recovery_ratio_is_null_with_a_reason_when_unlearning_moved_nothing():
    from lumebench.attacks.common import recovery

    assert recovery(0.5, 0.25, 0.75) == {"value": 0.5, "reason": None}
    nothing = recovery(0.9, 1.0, 1.0)
    assert nothing["value"] is None and "did not change" in nothing["reason"]
    assert recovery(None, 0.0, 1.0)["value"] is None


# ----------------------------------------------------------------------------------- quantize

def _on_grid_and_updates(w: torch.Tensor, scheme: str):
    """(w on the scheme's grid, a small update that keeps every block's scale and stays below half the
    smallest gap of the grid, a large update of several steps)."""
    from lumebench.attacks.quantize import NF4_VALUES, int8_rtn, nf4_blockwise, quant_step

    g = torch.Generator().manual_seed(0)
    q = (int8_rtn if scheme == "int8" else nf4_blockwise)(w)
    if scheme == "int8":
        unit = quant_step(q, "int8")  # one int8 step (absmax / 127) per row
        small = 0.4 * unit
        scale_pos = q.abs() == q.abs().amax(dim=-1, keepdim=True)
    else:
        flat = q.reshape(-1, 64)
        absmax = flat.abs().amax(dim=1, keepdim=True)
        min_gap = min(b - a for a, b in zip(NF4_VALUES, NF4_VALUES[1:]))
        small = (0.4 * min_gap * absmax).expand(-1, 64).reshape(q.shape)
        scale_pos = (flat.abs() == absmax).reshape(q.shape)
        unit = quant_step(q, "nf4")
    sign = torch.where(torch.rand(q.shape, generator=g) < 0.5, -1.0, 1.0)
    small_update = torch.where(scale_pos, torch.zeros_like(q), sign * small)  # the block scales stay
    large_update = torch.where(scale_pos, torch.zeros_like(q), sign * 3.0 * unit)
    return q, small_update, large_update


@pytest.mark.parametrize("scheme", ["nf4", "int8"])
def test_quantization_rounds_away_an_update_smaller_than_the_step_and_keeps_a_large_one(target, scheme):
    from lumebench.attacks.quantize import int8_rtn, nf4_blockwise, quant_step, quantized_linears
    from lumebench.models import load_model

    quant = int8_rtn if scheme == "int8" else nf4_blockwise
    model, _ = load_model(target, dtype="float32")
    layers = quantized_linears(model)
    assert layers and all("lm_head" not in n for n, _ in layers)
    for name, mod in layers:
        q, small, large = _on_grid_and_updates(mod.weight.detach(), scheme)
        assert torch.equal(quant(q), q)  # the target on the grid stays itself
        unlearned = q + small
        assert small.abs().max() > 0 and not torch.equal(unlearned, q)
        # the small unlearning update is undone exactly: quantised, the unlearned weights are the target's
        assert torch.equal(quant(unlearned), q), name
        # a large one survives: the quantised weights are within half a step of the unlearned ones and far from the target's
        big = q + large
        qb = quant(big)
        step = quant_step(big, scheme)
        assert ((qb - big).abs() <= 0.5 * step + 1e-7).all(), name
        moved = large != 0
        assert ((qb - q).abs()[moved] >= 2.0 * quant_step(q, scheme)[moved]).all(), name


def test_quantize_attack_reports_the_change_per_term_and_the_scheme(ga_model, target, bench, tmp_path):
    from lumebench.attacks.quantize import QuantizeConfig, quantize

    res = quantize(ga_model, bench, tmp_path / "q", QuantizeConfig(schemes=["int8", "nf4"], mia=False), EV)
    before = res["unquantized"]
    assert set(res["schemes"]) == {"int8", "nf4"}
    for scheme, entry in res["schemes"].items():
        info = entry["scheme"]
        assert info["backend"] == "lumebench" and info["scheme"] == scheme and info["n_linear"] > 0
        assert "NF4" in info["describe"] if scheme == "nf4" else "int8" in info["describe"]
        for k, v in before.items():  # the change of every term is after − before
            if v is not None and entry["scores"][k] is not None:
                assert entry["delta"][k] == pytest.approx(entry["scores"][k] - v)
        assert "forget_Task2_knowledge" in entry["delta"] and "retain_regurgitation" in entry["delta"]
    # the target keeps its memorisation under 8 bits (the quantisation itself does not destroy the model)
    tq = quantize(target, bench, tmp_path / "t", QuantizeConfig(schemes=["int8"], mia=False), EV)
    assert tq["schemes"]["int8"]["scores"]["forget_knowledge"] >= 0.9


def test_quantize_lumebench_schemes_agree_with_torchao_where_it_is_installed():
    pytest.importorskip("torchao")
    from lumebench.attacks.quantize import _torchao_fn, int8_rtn, nf4_blockwise, quant_step

    w = torch.randn(96, 128, generator=torch.Generator().manual_seed(0)) * 0.05
    # int8: torchao divides by 127.5 (range -128..127): at most one step apart
    assert ((int8_rtn(w) - _torchao_fn("int8")(w)).abs() <= quant_step(w, "int8") + 1e-7).all()
    # nf4: torchao double-quantises the block scales: within one NF4 gap
    assert ((nf4_blockwise(w) - _torchao_fn("nf4")(w)).abs() <= quant_step(w, "nf4")).all()


def test_quantize_lumebench_schemes_are_bitsandbytes_own_where_it_is_installed():
    pytest.importorskip("bitsandbytes")
    from lumebench.attacks.quantize import _bnb_fn, int8_rtn, nf4_blockwise

    w = torch.randn(96, 128, generator=torch.Generator().manual_seed(0)) * 0.05
    assert torch.equal(nf4_blockwise(w), _bnb_fn("nf4")(w))  # QLoRA's NF4, blocks of 64: bit for bit
    assert torch.allclose(int8_rtn(w), _bnb_fn("int8")(w), rtol=0, atol=1e-7)  # float rounding only


# ----------------------------------------------------------------------------------- paraphrase

def test_paraphrase_rows_are_never_read_by_finetuning_or_unlearning(tmp_path):
    from lumebench.data.generate import generate_benchmark
    from lumebench.data.loaders import load_benchmark
    from lumebench.data.paraphrase import FILE, load_paraphrase
    from lumebench.methods.data import tokenize_rows
    from lumebench.models.tiny import build_tokenizer
    from lumebench.pipeline.target import benchmark_texts, training_examples

    plain = generate_benchmark(tmp_path / "plain", docs_per_task=2, seed=3)
    para = generate_benchmark(tmp_path / "para", docs_per_task=2, seed=3, paraphrase=True)
    # the generator's own files are byte-identical with and without the probes
    for f in ("forget.jsonl", "retain.jsonl", "mia/member.jsonl", "mia/nonmember.jsonl"):
        assert (plain / f).read_bytes() == (para / f).read_bytes()
    assert not (plain / FILE).exists()
    bench = load_benchmark(para)
    probes = load_paraphrase(para / FILE, bench)
    # two probes (held-out question, fill-in) for every QA fact of both splits, on the fact's document
    qa = [r for r in bench.rows if r.kind == "qa"]
    assert len(probes.rows) == 2 * len(qa)
    assert {probes.kind(r) for r in probes.rows} == {"paraphrase", "fill-in"}
    answers = {(r.split, r.doc_id, r.output) for r in qa}
    assert all((p.split, p.doc_id, p.output) in answers for p in probes.rows)
    # Task2's five PII questions get their own held-out templates
    t2 = [p.input for p in probes.rows if p.task == "Task2" and probes.kind(p) == "paraphrase"]
    assert any(t.startswith("When was ") for t in t2) and any(t.startswith("Where does ") for t in t2)
    # what fine-tuning reads (every document and QA pair) and unlearning reads (every row) ...
    tok = build_tokenizer(benchmark_texts(bench), 512)
    read_texts = benchmark_texts(bench) + [r.input + " " + r.output for r in bench.rows]
    trained = {tuple(e) for e in training_examples(tok, bench, 1024)}
    unlearned_on = {tuple(e.ids) for e in tokenize_rows(bench.forget + bench.retain, tok, max_length=1024)}
    for p in probes.rows:
        # ... never holds a probe's prompt, as text or as the tokens of a training example's start
        assert all(p.input not in t for t in read_texts), p.input
        ids = tuple(tok(p.input)["input_ids"])
        assert not any(e[:len(ids)] == ids for e in trained | unlearned_on), p.input


def test_paraphrase_attack_scores_probes_beside_the_official_questions(target, bench, tmp_path):
    from lumebench.attacks.paraphrase import paraphrase
    from lumebench.data.paraphrase import paraphrase_rows

    probes = paraphrase_rows(bench)
    res = paraphrase(target, bench, tmp_path, probes, EV)
    n_qa = {s: sum(r.kind == "qa" and r.split == s for r in bench.rows) for s in ("forget", "retain")}
    for split in ("forget", "retain"):
        assert res["probes"][split]["n"] == 2 * n_qa[split] and res["official"][split]["n"] == n_qa[split]
        assert res["official"][split]["knowledge"] == 1.0  # the target answers its trained questions
        for probe in ("knowledge", "paraphrase", "fill-in"):
            assert 0.0 <= res["probes"][split][probe] <= 1.0
        assert res["gap"][split] == pytest.approx(res["probes"][split]["knowledge"] - 1.0)
    gens = [json.loads(x) for x in (tmp_path / "eval" / "probes" / "generations.jsonl").read_text().splitlines()]
    assert {g["input"] for g in gens} == {p.input for p in probes.rows}


# ----------------------------------------------------------------------------------- logit lens

def test_logit_lens_finds_every_memorised_answer_at_the_last_layer(target, bench, tmp_path):
    from lumebench.attacks.common import score_rows
    from lumebench.attacks.logit_lens import logit_lens
    from lumebench.attacks.common import load

    res = logit_lens(target, bench, tmp_path / "lens")
    rows = {json.loads(x)["id"]: json.loads(x) for x in (tmp_path / "lens" / "rows.jsonl").read_text().splitlines()}
    qa = [r for r in bench.forget if r.kind == "qa"]
    assert res["n_rows"] == len(qa) == len(rows) and res["n_layers"] == TINY["num_layers"]
    model, tok = load(target)
    score_rows(model, tok, qa, EV, tmp_path / "eval")
    gens = [json.loads(x) for x in (tmp_path / "eval" / "generations.jsonl").read_text().splitlines()]
    memorised = [g["id"] for g in gens if g["exact_match"] == 1.0]
    assert len(memorised) == len(qa)  # the target knows every forget QA row
    for rid in memorised:
        last = rows[rid]["layers"][-1]
        # the last layer's lens is the model's output: the gold first token is its top token
        assert last["rank"] == 0 and rows[rid]["output_rank"] == 0 and last["prob"] > 0.5, rows[rid]
        assert rows[rid]["recoverable"] and not rows[rid]["hidden"]
    assert res["recoverable"] == 1.0 and res["at_output"] == 1.0 and res["hidden"] == 0.0


def test_logit_lens_cli_on_the_unlearned_model_and_its_folder_is_refused(ga_model, short_bench_dir, tmp_path, capsys):
    out = tmp_path / "lens"
    assert lume(["attack", "logit-lens", "--model", ga_model, "--data", str(short_bench_dir), "--out", str(out)]) == 0
    res = json.loads((out / "logit_lens.json").read_text())
    assert 0.0 <= res["hidden"] <= res["recoverable"] <= 1.0 and res["at_output"] < 1.0  # GA removed some answers
    capsys.readouterr()
    # an attack never writes into the unlearned run's folder
    inside = Path(ga_model).parent / "attack"
    assert lume(["attack", "logit-lens", "--model", ga_model, "--data", str(short_bench_dir), "--out", str(inside)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--out" in err and len(err.splitlines()) == 1 and not inside.exists()


# ----------------------------------------------------------------------------------- CLI and lume run

def test_lume_attack_help_lists_the_four_attacks_relearn_quantize_paraphrase_logit_lens(capsys):
    from lumebench.attacks import commands, quantize, relearn

    with pytest.raises(SystemExit):
        lume(["attack", "--help"])
    text = capsys.readouterr().out
    for name in ("relearn", "quantize", "paraphrase", "logit-lens"):
        assert name in text
    # the CLI's choices (kept there so --help loads no torch) are the attacks' own
    assert commands.MODES == relearn.MODES and commands.SCHEMES == quantize.SCHEMES
    assert commands.BACKENDS == quantize.BACKENDS


MINI_ATTACKS = """
name: mini-attacks
data: {source: generated, docs_per_task: 2, seed: 0}
target:
  model: tiny
  finetune: {epochs: 3, min_steps: 0, pretrain_docs: 0,
             tiny: {hidden_size: 64, num_layers: 2, num_heads: 4, intermediate_size: 128, vocab_size: 512}}
methods:
  - {name: ga, overrides: {epochs: 1}}
eval: {max_new_tokens: 16, mmlu: false, every: end}
seeds: [0]
threads: 1
workers: 1
attacks:
  relearn: {steps: [1, 2], modes: [full]}
  quantize: {schemes: [nf4], mia: false}
  paraphrase: {}
  logit_lens: {}
"""


def test_mini_lume_run_with_attacks_writes_robustness_columns_relearn_plot_and_quantiz_paraphrase_logit_lens(
        tmp_path, capsys):
    from lumebench.report.robustness import COLUMNS

    cfg = tmp_path / "mini.yaml"
    cfg.write_text(MINI_ATTACKS, encoding="utf-8")
    runs = tmp_path / "runs"
    assert lume(["run", str(cfg), "--runs-dir", str(runs)]) == 0
    run = runs / "mini-attacks"
    board = json.loads((run / "leaderboard.json").read_text())
    keys = [c["key"] for c in board["columns"]]
    assert all(k in keys for k, _ in COLUMNS)
    ga = next(r for r in board["rows"] if r["label"] == "ga")
    assert ga["metrics"]["rob_quant_kno"]["n"] == 1 and ga["metrics"]["rob_lens"]["n"] == 1
    assert ga["metrics"]["rob_para_kno"]["n"] == 1
    md = (run / "leaderboard.md").read_text()
    assert "relearn kno rec@k" in md and "Robustness (docs/attacks.md): relearn:" in md and "k = 2" in md
    assert (run / "plots" / "relearn.png").stat().st_size > 1000
    assert "Robustness" in (run / "report.html").read_text()
    for a in ("relearn", "quantize", "paraphrase", "logit_lens"):
        assert (run / "attacks" / "ga" / "seed0" / a / f"{a}.json").is_file()
    # nothing of the attacks in the method's folder; the controls shared in attacks/controls
    assert not any("attack" in p.name or p.name in ("relearn", "logit_lens") for p in (run / "methods").rglob("*"))
    assert (run / "attacks" / "controls" / "relearn" / "target-full" / "done.json").is_file()
    # the default config is untouched by the section: a run without it records no attacks key
    assert "attacks" in json.loads((run / "config.json").read_text())
