"""The held-out text the tiny base reads before it memorises a benchmark (``lumebench.data.heldout``):
none of it is in the benchmark or its MIA sets (the non-members must stay unseen), it is
deterministic, and a target built with it has read it (its loss on held-out text is lower than a
target's built without it)."""

from __future__ import annotations

import pytest

from lumebench.data.generate import generate_benchmark
from lumebench.data.heldout import heldout_corpus
from lumebench.data.loaders import load_benchmark


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return load_benchmark(generate_benchmark(tmp_path_factory.mktemp("held") / "d", docs_per_task=6, seed=0))


def _norm(t: str) -> str:
    return " ".join(t.split())


def test_heldout_text_is_never_a_benchmark_or_mia_document(bench):
    corpus = heldout_corpus(bench, 300, seed=0)
    assert len(corpus) == 300 and len(set(corpus)) == 300
    docs = {_norm(r.input + " " + r.output) for r in bench.rows if r.kind == "sc"}
    docs |= {_norm(d.document) for d in (*bench.mia_members, *bench.mia_nonmembers)}
    # the PII answers (SSNs, phones, emails, addresses) of the benchmark's biographies
    answers = {r.output for r in bench.rows if r.kind == "qa" and r.task == "Task2" and len(r.output) > 8}
    for text in corpus:
        t = _norm(text)
        assert t not in docs
        assert not any(t[:60] in d or d[:60] in t for d in docs)
        assert not any(a in t for a in answers), [a for a in answers if a in t]
    kinds = [("Task1-like" if "." in t and len(t.split()) > 80 else "other") for t in corpus]
    assert kinds.count("Task1-like") > 50  # stories and Wikipedia summaries, not only short biographies


def test_heldout_text_is_deterministic_and_follows_the_seed(bench):
    assert heldout_corpus(bench, 60, seed=0) == heldout_corpus(bench, 60, seed=0)
    assert heldout_corpus(bench, 60, seed=1) != heldout_corpus(bench, 60, seed=0)
    assert heldout_corpus(bench, 0) == []


def test_pretrain_settings_are_checked_by_name():
    from lumebench.errors import LumeError
    from lumebench.pipeline.target_config import check_settings

    assert check_settings({"pretrain_docs": 600, "pretrain_epochs": 2}) == {"pretrain_docs": 600, "pretrain_epochs": 2}
    with pytest.raises(LumeError) as e:
        check_settings({"pretrain_docs": -1})
    assert e.value.field == "pretrain_docs"
    with pytest.raises(LumeError) as e:
        check_settings({"pretrain_epochs": 0})
    assert e.value.field == "pretrain_epochs"


def test_replay_batches_mix_a_rotating_slice_of_held_out_text_into_every_epoch():
    from lumebench.train.batches import EpochBatches, ReplayBatches

    examples = [[1] * (i % 5 + 1) for i in range(20)]
    pool = [[100 + i] * 3 for i in range(10)]
    rb = ReplayBatches(examples, 4, 0, seed=3, replay=pool, per_epoch=4)
    assert len(rb) == 6  # (20 + 4) / 4
    seen = []
    for epoch in range(3):
        ids = [row[0] for b in rb(epoch) for row in b["input_ids"].tolist()]
        replayed = sorted(i for i in ids if i >= 100)
        assert sorted(i for i in ids if i < 100) == sorted(e[0] for e in examples)  # every example, every epoch
        seen.append(replayed)
    assert seen == [[100, 101, 102, 103], [104, 105, 106, 107], [100, 101, 108, 109]]  # in turn, wrapping round
    assert [b["input_ids"].tolist() for b in rb(1)] == [b["input_ids"].tolist() for b in rb(1)]
    plain = EpochBatches(examples, 4, 0, seed=3)
    none = ReplayBatches(examples, 4, 0, seed=3, replay=pool, per_epoch=0)
    assert [b["input_ids"].tolist() for b in none(2)] == [b["input_ids"].tolist() for b in plain(2)]
