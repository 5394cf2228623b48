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
