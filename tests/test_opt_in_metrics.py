"""The opt-in metrics of the one metric table (issue 26): Exact Memorization, Extraction Strength,
GradNorm MIA and MUSE's privleak, each on real LUME rows / MIA documents and a tiny real model
trained a few steps on them, checked against an independent transcription of its definition
(a literal greedy-decoding loop, ``torch.autograd.grad``, sklearn's ``roc_auc_score``); and that
they stay off by default."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import roc_auc_score

from lumebench.data.records import MiaDoc, Row
from lumebench.io import iter_jsonl
from lumebench.metrics_table import METRICS, MetricInput, curve_summary, metric, report_summary
from lumebench.models.tiny import TinyConfig, build_model, build_tokenizer

SMALL = dict(vocab_size=512, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, max_position=512)


@pytest.fixture(scope="module")
def world(lume_data):
    torch.set_num_threads(1)
    rows = []
    for _, o in iter_jsonl(lume_data / "official" / "forget.jsonl"):
        if o["id"].endswith("qa0") and len(rows) < 4:  # short answers, three tasks' questions
            rows.append(Row(o["id"], o["id"].rsplit("qa", 1)[0], "qa", 0, o["task"], "forget", o["input"], o["output"]))
    docs = [[MiaDoc(str(o["id"]), o["document"][:400]) for _, o in iter_jsonl(lume_data / "mia" / name)][:4]
            for name in ("member.jsonl", "nonmember.jsonl")]
    tok = build_tokenizer([r.input + " " + r.output for r in rows] + [d.document for d in docs[0] + docs[1]],
                          vocab_size=512)
    ref = build_model(tok, TinyConfig(**SMALL, seed=1)).float().eval()
    model = build_model(tok, TinyConfig(**SMALL, seed=0)).float()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    texts = [r.input + " " + r.output for r in rows] + [d.document for d in docs[0]]
    for _ in range(12):  # a few steps on the forget answers and the members: partly memorised
        for t in texts:
            ids = torch.tensor([tok(t)["input_ids"]])
            opt.zero_grad()
            model(ids, labels=ids).loss.backward()
            opt.step()
    model.eval()

    class Bench:
        mia_members, mia_nonmembers = docs

    return MetricInput(model, tok, Bench, rows, [], reference=(ref, tok))


def _greedy(model, ids: list[int], n: int) -> list[int]:
    """A literal greedy decoding loop: n tokens, one forward of the whole context per token."""
    out = list(ids)
    with torch.no_grad():
        for _ in range(n):
            out.append(int(model(torch.tensor([out])).logits[0, -1].argmax()))
    return out[len(ids):]


def test_exact_memorization_and_extraction_strength_by_greedy_decoding(world):
    from lumebench.eval.memorization import exact_memorization, extraction_strength

    em_want, es_want = [], []
    for r in world.rows:
        p = world.tokenizer(r.input)["input_ids"]
        y = world.tokenizer(r.output, add_special_tokens=False)["input_ids"]
        # EM: the next-token argmax after every gold prefix, each its own greedy step
        em_want.append(sum(_greedy(world.model, p + y[:j], 1)[0] == y[j] for j in range(len(y))) / len(y))
        # ES: the smallest k whose greedy completion reproduces y[k:] exactly (k = |y|: ES 0)
        k = next((k for k in range(len(y)) if _greedy(world.model, p + y[:k], len(y) - k) == y[k:]), len(y))
        es_want.append(1 - k / len(y))
    em, es = exact_memorization(world), extraction_strength(world)
    assert [x["exact_memorization"] for x in em["rows"]] == pytest.approx(em_want, abs=1e-12)
    assert [x["extraction_strength"] for x in es["rows"]] == pytest.approx(es_want, abs=1e-12)
    assert em["results"]["exact_memorization"] == pytest.approx(sum(em_want) / len(em_want))
    assert es["results"]["extraction_strength"] == pytest.approx(sum(es_want) / len(es_want))
    assert 0 < em["results"]["exact_memorization"] < 1  # partly memorised: a real, non-trivial value
    assert len(set(em_want)) > 1


def test_gradnorm_mia_against_autograd_and_sklearn(world):
    from lumebench.eval.gradnorm import gradnorm_mia

    got = gradnorm_mia(world)
    docs = world.benchmark.mia_members + world.benchmark.mia_nonmembers
    stats = []
    params = [p for p in world.model.parameters() if p.requires_grad]
    for d in docs:
        ids = torch.tensor(world.tokenizer(d.document)["input_ids"])
        logits = world.model(ids[None]).logits[0, :-1].float()
        nll = -torch.log_softmax(logits, -1).gather(-1, ids[1:, None]).mean()
        grads = torch.autograd.grad(nll, params, allow_unused=True)
        stats.append(sum(float(g.norm()) for g in grads if g is not None) / sum(g is not None for g in grads))
    assert [r["grad_norm"] for r in got["documents"]] == pytest.approx(stats, rel=1e-4)
    want = roc_auc_score([1] * 4 + [0] * 4, [-s for s in stats])
    assert got["results"]["mia_gradnorm_auc"] == pytest.approx(want, abs=1e-12)
    assert got["results"]["mia_gradnorm_auc"] > 0.5  # the members were trained on: smaller gradients
    assert all(p.grad is None for p in params)


def test_privleak_against_a_hand_min_k_and_sklearn(world):
    from lumebench.eval.privleak import privleak

    def min_k(model, text):
        ids = torch.tensor(world.tokenizer(text)["input_ids"])
        with torch.no_grad():
            lp = torch.log_softmax(model(ids[None]).logits[0, :-1].float(), -1).gather(-1, ids[1:, None])[:, 0]
        n = max(1, int(0.4 * lp.numel()))
        return float(lp.sort().values[:n].mean())

    docs = world.benchmark.mia_members + world.benchmark.mia_nonmembers
    labels = [1] * 4 + [0] * 4
    auc = roc_auc_score(labels, [min_k(world.model, d.document) for d in docs])
    auc_ref = roc_auc_score(labels, [min_k(world.reference[0], d.document) for d in docs])
    got = privleak(world)
    assert (got["auc"], got["auc_reference"]) == pytest.approx((auc, auc_ref), abs=1e-12)
    assert got["results"]["privleak"] == pytest.approx((auc - auc_ref) / auc_ref, abs=1e-12)
    assert got["results"]["privleak"] > 0  # trained on the members: leaks more than the reference


def test_opt_in_metrics_are_off_by_default_and_shown_only_where_measured():
    official = {"harmonic-mean-task-aggregate": 0.5, "mia_loss_acc": 0.6, "mia_final_score": 0.8,
                "mmlu_average": 0.3, "aggregate-score": 0.53}
    assert list(curve_summary(official)) == ["forget_regurgitation", "forget_knowledge", "retain_regurgitation",
                                             "retain_knowledge", "task_aggregate", "mia_auc", "mia_score", "mmlu",
                                             "final_score"]
    assert list(report_summary(official))[:5] == ["final", "task_aggregate", "mia_score", "mia_auc", "mmlu"]
    assert len(report_summary(official)) == 17
    with_em = {**official, "exact_memorization": 0.25}
    assert curve_summary(with_em)["exact_memorization"] == 0.25 and report_summary(with_em)["exact_memorization"] == 0.25
    assert {m.name for m in METRICS if not m.default} == {"exact_memorization", "extraction_strength",
                                                          "gradnorm_auc", "privleak"}
    assert metric("final_score") is metric("final") and metric("final").official == ("aggregate-score",)


def test_a_sweep_selects_in_the_direction_the_table_gives():
    from lumebench.errors import LumeError
    from lumebench.metrics_table import summary_key
    from lumebench.pipeline.trials import select

    rows = [{"trial": 0, "score_mean": 0.2}, {"trial": 1, "score_mean": 0.7}, {"trial": 2, "score_mean": 0.7}]
    assert select(rows, "final_score")["trial"] == 1 and select(rows, "final")["trial"] == 1  # higher, first on a tie
    assert select(rows, "forget_regurgitation")["trial"] == 0  # lower is better on forget rows
    assert summary_key("final") == summary_key("final_score") == "final_score"
    with pytest.raises(LumeError, match="unknown metric 'finale'"):
        summary_key("finale")
    with pytest.raises(LumeError, match="best at 0.5"):
        select(rows, "mia_auc")


def test_the_leaderboard_shows_an_opt_in_column_only_where_measured():
    import json
    import sys
    from pathlib import Path

    from lumebench.report.leaderboard import Stat, columns, to_markdown

    results = Path(__file__).resolve().parents[1] / "docs" / "results"
    sys.path.insert(0, str(results))
    from readme_tables import rows_of  # the README's reader of committed leaderboards

    rows = rows_of(json.loads((results / "default" / "leaderboard.json").read_text(encoding="utf-8")))
    before = to_markdown(rows)
    assert "exact memorization" not in before and len(columns(rows)) == 17
    rows[1].metrics["exact_memorization"] = Stat.of([0.125])
    after = to_markdown(rows)
    assert columns(rows)[-1] == ("exact_memorization", "exact memorization")
    assert "| 0.125 |" in after.splitlines()[3] and "exact memorization: forget rows" in after
    assert after.splitlines()[2].endswith("| — |")  # the target row: not measured


def test_lume_eval_names_a_bad_metric_in_one_line_before_loading_a_model(tmp_path, capsys, lume_data):
    from lumebench.cli import main

    for name, says in (("nope", "unknown metric 'nope'"), ("final", "computed by every evaluation")):
        rc = main(["eval", "--model", "tiny", "--data", str(lume_data / "official"), "--metric", name,
                   "--out", str(tmp_path / name)])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and says in err and len(err.splitlines()) == 1, err
