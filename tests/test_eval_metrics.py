"""The official metrics: hand-checked cases and agreement of the fast ROUGE with rouge_score on
every official sc row."""

from __future__ import annotations

import json
import statistics

import pytest

from lumebench.data.records import Row
from lumebench.errors import LumeError
from lumebench.eval import metrics
from lumebench.eval.evaluate import read_generations, sample_rows, score_files
from lumebench.io import write_jsonl


def _official_rows(lume_data, split):
    return [Row.from_fields(r["id"], r["task"], split, r["input"], r["output"])
            for r in map(json.loads, open(lume_data / "official" / f"{split}.jsonl", encoding="utf-8"))]


def test_clean_up_matches_transformers4():
    assert metrics.clean_up_tokenization("Paris .") == "Paris."
    assert metrics.clean_up_tokenization("I do n't know , he 's here !") == "I don't know, he's here!"
    assert metrics.clean_up_tokenization("we 're sure you 've seen it ? I 'm") == "we're sure you've seen it? I'm"
    assert metrics.clean_up_tokenization("rock ' n ' roll") == "rock'n'roll"
    # exact match depends on it: "Paris ." only equals "Paris." after clean-up
    assert metrics.exact_match("Paris.", "Paris .") == 0
    assert metrics.exact_match("Paris.", metrics.clean_up_tokenization(" Paris .")) == 1


def test_exact_match_official_normalisation():
    assert metrics.exact_match("Wrennie.", "Wrennie") == 0       # the period counts
    assert metrics.exact_match("Wrennie.", " wrennie. ") == 1    # only strip + lower
    assert metrics.exact_match("900514344", "900-51-4344") == 0
    assert metrics.exact_match("0123", "123") == 0


def test_harmonic_mean_with_a_zero_term_is_zero():
    assert metrics.harmonic_mean([0.5, 0.0, 1.0]) == 0
    assert metrics.harmonic_mean([0.5, 1.0]) == pytest.approx(2 / (2 + 1))


def _cell_records(values):
    """One sc and one qa record per split × task, with the given (reg, kno) per (split, task)."""
    recs = []
    for (split, task), (reg, kno) in values.items():
        recs.append({"split": split, "task": task, "kind": "sc", "rougeL_recall": reg, "exact_match": None})
        recs.append({"split": split, "task": task, "kind": "qa", "rougeL_recall": None, "exact_match": kno})
    return recs


def test_aggregate_keys_order_and_final_score():
    vals = {(s, t): (0.2 if s == "forget" else 0.8, 0 if s == "forget" else 1)
            for s in ("forget", "retain") for t in ("Task1", "Task2", "Task3")}
    res = metrics.aggregate(_cell_records(vals), mia_auc=0.7, mmlu_average=0.4)
    assert list(res)[:8] == ["forget-set", "retain-set", "aggregated-terms", "harmonic-mean-task-aggregate",
                             "mia_loss_acc", "mia_final_score", "mmlu_average", "aggregate-score"]
    assert res["forget-set"]["Task2"] == {"regurgitation-score": 0.2, "knowledge-score": 0.0}
    assert res["aggregated-terms"] == pytest.approx([0.8, 1.0] * 3 + [0.8, 1.0] * 3)
    hm = statistics.harmonic_mean([0.8, 1.0] * 6)
    assert res["harmonic-mean-task-aggregate"] == pytest.approx(hm)
    assert res["mia_final_score"] == pytest.approx(0.6)                  # 1 - 2|0.7 - 0.5|
    assert res["aggregate-score"] == pytest.approx((hm + 0.4 + 0.6) / 3)
    assert res["mmlu_eligible"] is True


def test_aggregate_zero_term_and_missing_parts():
    vals = {(s, t): (0.5, 1) for s in ("forget", "retain") for t in ("Task1", "Task2", "Task3")}
    res = metrics.aggregate(_cell_records(vals))                       # forget knowledge 1 -> term 0
    assert res["harmonic-mean-task-aggregate"] == 0
    assert res["mia_final_score"] is None and res["mmlu_average"] is None
    assert res["aggregate-score"] is None and res["mmlu_eligible"] is None
    res = metrics.aggregate(_cell_records(vals), mia_auc=0.5, mmlu_average=0.3)
    assert res["aggregate-score"] == pytest.approx((0 + 0.3 + 1.0) / 3)
    assert res["mmlu_eligible"] is False
    del vals[("retain", "Task3")]
    res = metrics.aggregate(_cell_records(vals), mia_auc=0.5, mmlu_average=0.3)
    # a missing cell is reported as missing: its terms, the task aggregate and the final score are None
    assert res["aggregated-terms"][10:] == [None, None] and None not in res["aggregated-terms"][:10]
    assert metrics.missing_cells(res["aggregated-terms"]) == ["retain Task3 sc", "retain Task3 qa"]
    assert res["harmonic-mean-task-aggregate"] is None and res["aggregate-score"] is None
    assert "Task3" not in res["retain-set"] and res["mia_final_score"] == 1.0


def test_fast_rouge_equals_rouge_score_on_every_official_sc_row(lume_data):
    rows = [r for split in ("forget", "retain") for r in _official_rows(lume_data, split) if r.kind == "sc"]
    assert len(rows) == 1733
    n = 0
    for i, r in enumerate(rows):
        other = rows[(i * 7 + 3) % len(rows)].output
        words = r.output.split()
        preds = [r.output, " ".join(words[: len(words) // 2]) + " and so on.", other,
                 r.input[-200:], r.output.upper() + " Don't stop, it's " + other[:60]]
        for p in (preds if i % 4 == 0 else preds[:2]):
            assert metrics.rouge_recalls(r.output, p) == metrics.rouge_recalls_reference(r.output, p), (r.id, p)
            n += 1
    assert n > 4000


def test_per_row_metrics():
    assert metrics.exact_match("Wrennie.", "wrennie.") == 1
    assert metrics.rougeL_recall("the cat sat", "a cat sat down") == pytest.approx(2 / 3)
    assert list(metrics.score_row("sc", "the cat sat", "a cat sat down")) == ["rougeL_recall", "rouge1_recall",
                                                                             "exact_match"]


def test_early_exit_predicates():
    assert metrics.em_still_possible("Wrennie.", " Wren")
    assert metrics.em_still_possible("Wrennie.", " Wrennie .")        # clean-up may still remove the space
    assert metrics.em_still_possible("café", "caf\ufffd")              # an incomplete UTF-8 character
    assert not metrics.em_still_possible("Wrennie.", " Wrennie. She")
    assert not metrics.em_still_possible("900514344", "900-")
    gold = metrics.rouge_tokens("They did not go home.")
    assert not metrics.rougeL_recall_settled(gold, "They did not go home")    # last two tokens can change
    assert not metrics.rougeL_recall_settled(gold, "They did not go home. Then")
    assert metrics.rougeL_recall_settled(gold, "They did not go home. Then they")
    # " n't" clean-up merges "do" + "n't" into "don't": the token before the last is not settled
    g2 = metrics.rouge_tokens("I do")
    assert not metrics.rougeL_recall_settled(g2, "I do n")
    assert metrics.rouge_recalls("I do", metrics.clean_up_tokenization("I do n't"))[0] == 0.5


def test_numeric_answers_stay_strings(tmp_path, lume_data):
    ssn = next(r for r in _official_rows(lume_data, "forget") if r.task == "Task2" and r.id.endswith("qa1"))
    assert ssn.output.isdigit() and isinstance(ssn.output, str)
    recs = []
    for n, split in enumerate(("forget", "retain")):
        uuid = f"0000000{n}-1234-1234-1234-1234567890ab"  # ids of the official grammar (lume score checks them)
        for task, doc in (("Task1", f'"{uuid}"'), ("Task2", uuid), ("Task3", str(100 + n))):
            recs.append({"id": f"{doc}sc1", "task": task, "split": split, "kind": "sc",
                         "input": "x", "gold": "a b c", "generated": "a b"})
            recs.append({"id": f"{doc}qa0", "task": task, "split": split, "kind": "qa",
                         "input": "What is the SSN?", "gold": "0900514344", "generated": "0900514344"})
    path = write_jsonl(tmp_path / "g.jsonl", recs)
    back = read_generations(path)
    assert back[1]["gold"] == "0900514344"
    res = score_files(path)
    assert res["retain-set"]["Task2"]["knowledge-score"] == 1.0
    assert res["retain-set"]["Task2"]["regurgitation-score"] == pytest.approx(2 / 3)
    recs[1]["gold"] = 900514344                                   # a number is refused, not coerced
    write_jsonl(path, recs)
    with pytest.raises(LumeError, match=r"g.jsonl:2, field 'gold'"):
        read_generations(path)


def test_sample_rows_keeps_the_official_mix(lume_data):
    rows = _official_rows(lume_data, "forget") + _official_rows(lume_data, "retain")
    a, b = sample_rows(rows, 60, seed=3), sample_rows(rows, 60, seed=3)
    assert [r.id for r in a] == [r.id for r in b] and len(a) == 60
    cells = {(r.split, r.task, r.kind) for r in a}
    assert len(cells) == 12
    qa = sum(r.kind == "qa" for r in a)
    assert abs(qa / 60 - sum(r.kind == "qa" for r in rows) / len(rows)) < 0.1
    assert [r.id for r in sample_rows(rows, 60, seed=4)] != [r.id for r in a]
