"""Loaders on the real LUME files in ../shared/lume-data, and the online sources when offline."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter

import pytest

from lumebench.cli import main
from lumebench.data.loaders import load_benchmark, load_mia, load_rows
from lumebench.data.records import Benchmark, Row
from lumebench.errors import DataError, LumeError


@pytest.fixture(scope="module")
def official(lume_data) -> Benchmark:
    return load_benchmark(lume_data / "official")


def test_official_counts(official):
    assert (len(official.forget), len(official.retain)) == (2732, 2734)
    assert (len(official.doc_ids("forget")), len(official.doc_ids("retain"))) == (866, 867)
    for split, expected in (("forget", (243, 250, 373)), ("retain", (246, 250, 371))):
        counts = Counter(d.task for d in official.documents(split))
        assert (counts["Task1"], counts["Task2"], counts["Task3"]) == expected
    assert not official.has_mia()  # official/ alone holds no MIA files


def test_every_task2_document_has_qa0_to_qa4_and_others_one_qa(official):
    kinds: dict[str, list[str]] = {}
    tasks: dict[str, str] = {}
    for r in official.rows:
        kinds.setdefault(r.doc_id, []).append(f"{r.kind}{r.n}")
        tasks[r.doc_id] = r.task
    for doc, ks in kinds.items():
        expected = ["sc1", "qa0", "qa1", "qa2", "qa3", "qa4"] if tasks[doc] == "Task2" else ["sc1", "qa0"]
        assert sorted(ks) == sorted(expected), doc


def test_id_grammar_per_task(official):
    t1 = official.select(task="Task1")[0]
    assert t1.doc_id.startswith('"') and t1.doc_id.endswith('"') and len(t1.doc_id) == 38
    t2 = official.select(task="Task2")[0]
    assert len(t2.doc_id) == 36 and '"' not in t2.doc_id
    assert all(r.doc_id.isdigit() for r in official.select(task="Task3"))
    assert all(r.split == "forget" for r in official.forget) and all(r.split == "retain" for r in official.retain)


def test_root_directory_loads_official_layout_and_mia(lume_data):
    bench = load_benchmark(lume_data)
    assert (len(bench.forget), len(bench.retain)) == (2732, 2734)
    assert (len(bench.mia_members), len(bench.mia_nonmembers)) == (150, 150)
    assert all(isinstance(d.id, str) and d.id.isdigit() for d in bench.mia_members + bench.mia_nonmembers)


def test_documents_are_sc_input_space_output_and_match_mia_members(lume_data, official):
    docs = {d.doc_id: d for d in official.documents()}
    sc1 = {r.doc_id: r for r in official.select(kind="sc")}
    assert len(docs) == 866 + 867
    for doc_id in list(docs)[:50]:
        assert docs[doc_id].text == sc1[doc_id].input + " " + sc1[doc_id].output
    members, nonmembers = load_mia(lume_data / "mia")
    forget_t3 = {d.doc_id: d.text for d in official.documents("forget", "Task3")}
    assert all(forget_t3[m.id] == m.document for m in members)  # members are forget Task3 documents
    assert not {n.id for n in nonmembers} & set(docs)          # non-members are outside the benchmark


def test_semeval_parquet_splits(lume_data):
    train = load_benchmark(lume_data / "semeval", which=("train",))
    val = load_benchmark(lume_data / "semeval", which=("validation",))
    both = load_benchmark(lume_data / "semeval")
    assert (len(train.forget), len(val.forget), len(train.retain), len(val.retain)) == (1112, 254, 1136, 278)
    assert (len(both.forget), len(both.retain)) == (1112 + 254, 1136 + 278)
    # the SemEval rows are the official rows
    official = {r.id: r for r in load_benchmark(lume_data / "official").rows}
    for r in both.rows[:200]:
        assert official[r.id] == r


def test_load_rows_one_file(lume_data):
    rows = load_rows(lume_data / "official" / "forget.jsonl", "forget")
    assert len(rows) == 2732 and isinstance(rows[0], Row) and rows[0].split == "forget"
    with pytest.raises(LumeError, match="unknown split"):
        load_rows(lume_data / "official" / "forget.jsonl", "test")


def test_fingerprint_stable_order_independent_and_content_sensitive(lume_data, official):
    again = load_benchmark(lume_data / "official")
    assert official.fingerprint() == again.fingerprint()
    shuffled = Benchmark(list(reversed(official.forget)), official.retain)
    assert shuffled.fingerprint() == official.fingerprint()
    r = official.forget[0]
    changed = Row(r.id, r.doc_id, r.kind, r.n, r.task, r.split, r.input, r.output + "!")
    assert Benchmark([changed] + official.forget[1:], official.retain).fingerprint() != official.fingerprint()
    assert load_benchmark(lume_data).fingerprint() != official.fingerprint()  # MIA documents count too


def test_single_jsonl_with_split_field(lume_data, tmp_path):
    rows = [json.loads(l) for l in (lume_data / "official" / "forget.jsonl").read_text().splitlines()[:4]]
    rows += [json.loads(l) for l in (lume_data / "official" / "retain.jsonl").read_text().splitlines()[:4]]
    for i, r in enumerate(rows):
        r["split"] = "forget" if i < 4 else "retain"
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = load_benchmark(path)
    assert (len(bench.forget), len(bench.retain)) == (4, 4)
    del rows[5]["split"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"mixed.jsonl:6, field 'split'"):
        load_benchmark(path)


def test_mia_ids_may_be_int_and_extra_fields_are_ignored(tmp_path):
    (tmp_path / "member.jsonl").write_text('{"id": 12, "document": "a b c", "extra": {"x": 1}}\n')
    (tmp_path / "nonmember.jsonl").write_text('{"id": "13", "document": "d e", "source": "wiki"}\n')
    members, nonmembers = load_mia(tmp_path)
    assert members[0].id == "12" and members[0].document == "a b c" and nonmembers[0].id == "13"


def test_unknown_path_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_benchmark(str(tmp_path / "nothing-here"))
    with pytest.raises(DataError, match="no LUME data here"):
        load_benchmark(tmp_path)


# ------------------------------------------------------------------------- online sources, offline
def test_hub_offline_fails_fast_with_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LUME_CACHE", str(tmp_path))
    t0 = time.perf_counter()
    with pytest.raises(LumeError, match="Hugging Face hub is unreachable.*local directory"):
        load_benchmark("hf:llmunlearningsemeval2025organization/semeval25-unlearning-dataset-public")
    assert time.perf_counter() - t0 < 10
    assert main(["data", "validate", "semeval"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the Hugging Face hub is unreachable") and "\n" not in err


def test_github_unreachable_fails_fast_with_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LUME_CACHE", str(tmp_path))
    monkeypatch.setenv("LUME_GITHUB_RAW", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setenv("LUME_NET_TIMEOUT", "3")
    t0 = time.perf_counter()
    with pytest.raises(LumeError, match="GitHub is unreachable.*forget.jsonl.*local directory"):
        load_benchmark("github:amazon-science/lume-llm-unlearning")
    assert time.perf_counter() - t0 < 10
    assert main(["data", "validate", "lume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: GitHub is unreachable") and "\n" not in err
    monkeypatch.setenv("LUME_OFFLINE", "1")
    with pytest.raises(LumeError, match="offline"):
        load_benchmark("lume")


def test_github_source_uses_the_cache_without_network(lume_data, tmp_path, monkeypatch):
    monkeypatch.setenv("LUME_CACHE", str(tmp_path))
    monkeypatch.setenv("LUME_OFFLINE", "1")
    cached = tmp_path / "github" / "amazon-science" / "lume-llm-unlearning" / "main"
    cached.mkdir(parents=True)
    for name in ("forget.jsonl", "retain.jsonl"):
        shutil.copy(lume_data / "official" / name, cached / name)
    bench = load_benchmark("lume")
    assert (len(bench.forget), len(bench.retain)) == (2732, 2734) and bench.source == "lume"


def test_sources_are_registry_entries_and_generated_ids_load(tmp_path, monkeypatch):
    from lumebench.data.loaders import load_benchmark
    from lumebench.registry import SOURCES

    assert {"file", "generated", "hub", "jsonl", "parquet"} <= set(SOURCES.names())
    monkeypatch.setenv("LUME_CACHE", str(tmp_path))
    bench = load_benchmark("generated:1:3")
    assert (tmp_path / "generated" / "1docs-seed3" / "forget.jsonl").is_file()
    assert bench.source == "generated:1:3" and bench.has_mia() and {r.split for r in bench.rows} == {"forget", "retain"}
    assert load_benchmark("generated:1:3").fingerprint() == bench.fingerprint()
    with pytest.raises(LumeError, match="generated:DOCS"):
        load_benchmark("generated:x")
