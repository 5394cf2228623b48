"""Property-based tests (hypothesis): the id grammar, the data loaders and the scorer on random input.

- Ids: every id built from the official grammar parses back into its parts, for its task only; any
  other text is refused with an :class:`IdError`, never another exception.
- Loaders: random valid rows written in the official layout load back unchanged; random records and
  random bytes give rows or one :class:`DataError`, never another exception.
- Scorer: the fast ROUGE equals ``rouge_score`` on random text; exact match is the official rule; the
  fast engine's early exits never stop a row whose score could still change.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lumebench.data.records import TASKS, IdError, parse_id
from lumebench.data.validate import Where, row_from_record
from lumebench.errors import DataError
from lumebench.eval import metrics

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

uuids = st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper())
doc_ids = {"Task1": uuids.map(lambda u: f'"{u}"'), "Task2": uuids,
           "Task3": st.integers(min_value=0, max_value=10**12).map(str)}
kinds = st.sampled_from(["sc", "qa"])
digits = st.integers(min_value=0, max_value=9)


@st.composite
def ids(draw, task=None):
    task = task or draw(st.sampled_from(TASKS))
    doc, kind, n = draw(doc_ids[task]), draw(kinds), draw(digits)
    return task, doc, kind, n


# ------------------------------------------------------------------------------------- id grammar

@SETTINGS
@given(ids())
def test_every_grammatical_id_parses_into_its_parts(parts):
    task, doc, kind, n = parts
    assert parse_id(f"{doc}{kind}{n}", task) == (doc, kind, n)


@SETTINGS
@given(ids(), st.sampled_from(TASKS))
def test_an_id_of_one_task_is_refused_for_another(parts, other):
    task, doc, kind, n = parts
    assume(other != task)
    with pytest.raises(IdError):
        parse_id(f"{doc}{kind}{n}", other)


@SETTINGS
@given(st.text(max_size=60), st.sampled_from(TASKS))
def test_any_text_parses_or_is_refused_with_an_id_error(text, task):
    try:
        doc, kind, n = parse_id(text, task)
    except IdError:
        return
    assert text == f"{doc}{kind}{n}" and kind in ("sc", "qa")


@SETTINGS
@given(ids(), st.text(min_size=1, max_size=3))
def test_anything_appended_or_prepended_breaks_the_id(parts, extra):
    task, doc, kind, n = parts
    row_id = f"{doc}{kind}{n}"
    for text in (row_id + extra, extra + row_id):
        try:
            parsed = parse_id(text, task)
        except IdError:
            continue
        # only another grammatical id may result (e.g. Task3 digits prepended to a numeric page id)
        assert text == "".join(map(str, parsed))


# ------------------------------------------------------------------------------------- loaders

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(
    lambda t: t.strip())


@st.composite
def documents(draw, task):
    """One document's rows: sc1 + optional more sc / qa rows, with random (non-empty) texts."""
    doc = draw(doc_ids[task])
    extra = draw(st.lists(st.tuples(kinds, st.integers(min_value=2, max_value=9)), max_size=3, unique=True))
    rows = [("sc", 1)] + [(k, n) for k, n in extra]
    return [{"id": f"{doc}{k}{n}", "input": draw(texts), "output": draw(texts), "task": task} for k, n in rows]


@st.composite
def benchmarks(draw):
    out = {}
    for split in ("forget", "retain"):
        rows = []
        for task in TASKS:
            for doc_rows in draw(st.lists(documents(task), min_size=1, max_size=2)):
                rows += doc_rows
        out[split] = rows
    ids_ = [r["id"] for rows in out.values() for r in rows]
    assume(len(set(ids_)) == len(ids_))
    docs = {split: {parse_id(r["id"], r["task"])[0] for r in rows} for split, rows in out.items()}
    assume(not docs["forget"] & docs["retain"])
    return out


@SETTINGS
@given(benchmarks())
def test_random_valid_rows_load_back_unchanged(bench):
    from lumebench.data.loaders import load_benchmark

    with tempfile.TemporaryDirectory() as d:
        for split, rows in bench.items():
            Path(d, f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        loaded = load_benchmark(d)
    for split, rows in bench.items():
        assert [r.to_official() for r in loaded.split(split)] == rows


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3), max_leaves=5)


@SETTINGS
@given(st.dictionaries(st.sampled_from(["id", "input", "output", "task", "split", "other"]), json_values),
       st.sampled_from(["forget", "retain", None]))
def test_any_record_becomes_a_row_or_one_data_error(record, split):
    try:
        row = row_from_record(record, Where("x.jsonl", 1), split)
    except DataError as e:
        assert str(e).startswith("x.jsonl:1") and "\n" not in str(e)
        return
    assert row.input.strip() and row.output.strip() and row.task in TASKS


@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes_read_as_records_or_one_data_error(blob):
    from lumebench.io import iter_jsonl

    with tempfile.TemporaryDirectory() as d:
        p = Path(d, "f.jsonl")
        p.write_bytes(blob)
        try:
            records = list(iter_jsonl(p))
        except DataError as e:
            assert "\n" not in str(e)
            return
    assert all(isinstance(obj, dict) for _, obj in records)


# ------------------------------------------------------------------------------------- scorer

words = st.text(alphabet=string.ascii_letters + string.digits + "'-", min_size=1, max_size=10)
sentences = st.lists(words | st.sampled_from([".", ",", "?", "n't", "'s", "Ünïcödé", "naïve", "ﬁne", "1,000"]),
                     max_size=25).map(" ".join)
any_text = st.text(max_size=80) | sentences


@SETTINGS
@given(any_text, any_text)
def test_fast_rouge_equals_rouge_score(gold, generated):
    fast = metrics.rouge_recalls(gold, generated)
    ref = metrics.rouge_recalls_reference(gold, generated)
    assert fast == pytest.approx(ref, abs=1e-12)


@SETTINGS
@given(any_text, st.sampled_from(["", " ", "\n", "\t ", "\u00a0", "\u2003"]), st.sampled_from(["", " ", "\n"]),
       st.booleans())
def test_exact_match_is_the_official_rule(gold, pad_left, pad_right, upper):
    for generated in (gold, pad_left + (gold.upper() if upper else gold) + pad_right, gold + "x"):
        official = int(gold.strip().lower() == generated.strip().lower())  # SPEC.md §2, verbatim
        assert metrics.exact_match(gold, generated) == official
        assert metrics.score_row("qa", gold, generated, official_csv=False)["exact_match"] == official
        # by default a row is scored as the official script scores it after its CSV round trip
        # (a cell such as "" or "NA" reads back as NaN, scored as the text "nan")
        g, x = metrics.csv_roundtrip(gold), metrics.csv_roundtrip(generated)
        assert metrics.score_row("qa", gold, generated)["exact_match"] == int(g.strip().lower() == x.strip().lower())


@SETTINGS
@given(any_text, any_text, any_text)
def test_qa_early_exit_never_stops_a_row_that_could_still_match(gold, partial, rest):
    # the engine decides on the cleaned-up text decoded so far; the final text is the clean-up of it all
    clean = metrics.clean_up_tokenization
    if not metrics.em_still_possible(gold, clean(partial)):
        assert metrics.exact_match(gold, clean(partial + rest)) == 0


@SETTINGS
@given(sentences, sentences, sentences, st.lists(words, min_size=2, max_size=4).map(" ".join), any_text)
def test_sc_early_exit_only_when_every_continuation_scores_1(gold, before, between, tail, rest):
    gold_tokens = metrics.rouge_tokens(gold)
    assume(gold_tokens)
    partial = f"{before} {gold} {between} {tail}"
    # the engine decides on the cleaned-up text decoded so far; the final text is the clean-up of it all
    if metrics.rougeL_recall_settled(gold_tokens, metrics.clean_up_tokenization(partial)):
        final = metrics.clean_up_tokenization(partial + rest)
        assert metrics.rouge_recalls(gold, final) == (1.0, 1.0)
        assert metrics.rouge_recalls_reference(gold, final) == pytest.approx((1.0, 1.0))


def test_the_sc_property_above_reaches_its_branch():
    gold = "The cat sat on the mat."
    partial = metrics.clean_up_tokenization("Yes . " + gold + " and then two")
    assert metrics.rougeL_recall_settled(metrics.rouge_tokens(gold), partial)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.dictionaries(st.sampled_from("abc"), st.integers()), min_size=1, max_size=5),
       st.integers(min_value=0, max_value=40))
def test_an_append_after_a_killed_append_keeps_the_file_readable(records, cut):
    """A run killed mid-append leaves a last line without its newline; the next append drops that
    cut-off line instead of gluing its record to it, so every later read sees whole records."""
    from lumebench.io import append_jsonl, dumps, iter_jsonl

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "curve.jsonl"
        for r in records[:-1]:
            append_jsonl(path, r)
        partial = (dumps(records[-1]) + "\n")[:cut]
        if partial.endswith("\n"):
            partial = partial[:-1]  # a killed append never wrote the whole line
        with open(path, "a", encoding="utf-8") as f:
            f.write(partial)
        append_jsonl(path, {"after": 1})
        assert [obj for _, obj in iter_jsonl(path)] == records[:-1] + [{"after": 1}]
