"""Membership-inference attacks: official LOSS AUC, the other attacks, fast == reference engine."""

from __future__ import annotations

import math
import zlib

import pytest
import torch

from lumebench.data.records import MiaDoc
from lumebench.errors import LumeError
from lumebench.eval.batching import run_batches
from lumebench.eval.mia import ATTACKS, mia_score, roc_auc, run_mia, token_stats
from lumebench.io import iter_jsonl
from lumebench.models.tiny import TinyConfig, build_model, build_tokenizer

SMALL = dict(vocab_size=512, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128)


def _official(lume_data):
    """Members / non-members from the official files, keeping only id + document."""
    out = []
    for name in ("member.jsonl", "nonmember.jsonl"):
        out.append([MiaDoc(str(o["id"]), o["document"]) for _, o in iter_jsonl(lume_data / "mia" / name)])
    return out


@pytest.fixture(scope="module")
def official(lume_data):
    return _official(lume_data)


@pytest.fixture(scope="module")
def tiny(official):
    torch.set_num_threads(1)
    members, nonmembers = official
    tok = build_tokenizer([d.document for d in members[:40] + nonmembers[:40]], vocab_size=512)
    model = build_model(tok, TinyConfig(**SMALL, max_position=2048)).float().eval()
    return model, tok


def test_official_files_load_and_extra_fields_are_ignored(lume_data, official):
    members, nonmembers = official
    assert (len(members), len(nonmembers)) == (150, 150)
    first_member = next(iter_jsonl(lume_data / "mia" / "member.jsonl"))[1]
    first_non = next(iter_jsonl(lume_data / "mia" / "nonmember.jsonl"))[1]
    assert "sentence_completion_task" in first_member and "metadata" in first_non  # extra fields exist...
    assert members[0] == MiaDoc(str(first_member["id"]), first_member["document"])  # ...and are dropped
    ids = [d.id for d in members + nonmembers]
    assert len(set(ids)) == 300
    assert all(d.document.strip() for d in members + nonmembers)


def test_auc_hand_checked():
    # members 0.9, 0.4 vs non-members 0.5, 0.1: 3 of the 4 (member, non-member) pairs ranked right
    assert roc_auc([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1]) == pytest.approx(0.75)
    assert roc_auc([1, 0], [0.3, 0.3]) == pytest.approx(0.5)  # a tie counts one half
    assert roc_auc([1, 1, 0], [0.1, 0.2, 0.9]) == pytest.approx(0.0)
    assert mia_score(0.75) == pytest.approx(0.5)
    assert mia_score(0.5) == 1.0 and mia_score(0.0) == 0.0 and mia_score(1.0) == 0.0


def test_token_stats_hand_checked():
    ln3 = math.log(3.0)
    logits = torch.tensor([[0.0, ln3], [ln3, 0.0], [5.0, -5.0]])
    ids = torch.tensor([0, 1, 0])  # position 0 predicts 1 (p=3/4), position 1 predicts 0 (p=3/4)
    st = token_stats(logits, ids)
    assert st["nll"] == pytest.approx(-math.log(0.75), abs=1e-6)
    assert st["min_k_20"] == pytest.approx(math.log(0.75), abs=1e-6)  # max(1, int(0.4)) = 1 token
    mu = 0.25 * math.log(0.25) + 0.75 * math.log(0.75)
    sd = math.sqrt(0.25 * math.log(0.25) ** 2 + 0.75 * math.log(0.75) ** 2 - mu ** 2)
    assert st["min_k_pp_20"] == pytest.approx((math.log(0.75) - mu) / sd, abs=1e-5)
    # the lowest-probability token drives Min-K%: make the second prediction unlikely
    st2 = token_stats(logits, torch.tensor([0, 1, 1]))
    assert st2["min_k_20"] == pytest.approx(math.log(0.25), abs=1e-6)
    assert st2["min_k_40"] == pytest.approx(math.log(0.25), abs=1e-6)


def test_fast_equals_reference_engine(tiny, official):
    model, tok = tiny
    members, nonmembers = official
    m, n = members[:10], nonmembers[:10]
    fast, fs = run_mia(model, tok, m, n, batch_size=4)
    ref, rs = run_mia(model, tok, m, n, engine="reference")
    assert [r["id"] for r in fast] == [d.id for d in m + n]  # input order, each document once
    assert [r["member"] for r in fast] == [True] * 10 + [False] * 10
    assert [r["n_tokens"] for r in fast] == [r["n_tokens"] for r in ref]
    for a, b in zip(fast, ref):
        assert a["nll"] == pytest.approx(b["nll"], abs=1e-5)
        for k in ATTACKS:
            # Min-K%++ divides by a per-position standard deviation, which amplifies float noise
            tol = 1e-4 if k.startswith("min_k_pp") else 1e-5
            assert a["scores"][k] == pytest.approx(b["scores"][k], abs=tol)
    assert fs["auc"] == rs["auc"]
    assert fs["mia_loss_acc"] == rs["mia_loss_acc"]
    assert fs["mia_final_score"] == rs["mia_final_score"]
    assert fs["n_truncated"] == 0

    # the official number: auc(roc_curve(labels, -loss)) with members labelled 1, recomputed here
    from sklearn.metrics import auc, roc_curve
    fpr, tpr, _ = roc_curve([1] * 10 + [0] * 10, [-r["nll"] for r in ref])
    assert fs["mia_loss_acc"] == pytest.approx(auc(fpr, tpr))
    assert fs["mia_final_score"] == pytest.approx(1 - 2 * abs(auc(fpr, tpr) - 0.5))
    # the reference engine's loss is the model's own labels=ids loss
    ids = torch.tensor([tok(m[0].document)["input_ids"]])
    with torch.no_grad():
        assert ref[0]["nll"] == pytest.approx(float(model(input_ids=ids, labels=ids).loss), abs=1e-6)
    # zlib score: -loss / zlib-compressed bytes (higher = more likely member)
    zb = len(zlib.compress(m[0].document.encode("utf-8")))
    assert fast[0]["zlib_bytes"] == zb
    assert fast[0]["scores"]["zlib"] == pytest.approx(-fast[0]["nll"] / zb)
    assert fast[0]["scores"]["loss"] == -fast[0]["nll"]


def test_reference_attack_and_truncation(official):
    members, nonmembers = official
    m, n = members[:4], nonmembers[:4]
    tok = build_tokenizer([d.document for d in m + n], vocab_size=512)
    target = build_model(tok, TinyConfig(**SMALL, max_position=96, seed=0)).eval()
    ref_model = build_model(tok, TinyConfig(**SMALL, max_position=96, seed=1)).eval()
    recs, summ = run_mia(target, tok, m, n, reference=(ref_model, tok), batch_size=3)
    ref_only, _ = run_mia(ref_model, tok, m, n)
    assert "reference" in summ["auc"]
    for r, o in zip(recs, ref_only):
        assert r["ref_nll"] == pytest.approx(o["nll"], abs=1e-6)
        assert r["scores"]["reference"] == pytest.approx(o["nll"] - r["nll"], abs=1e-6)
    # every document is longer than the 96 positions the rotary model was built for; like the
    # official script, lumebench runs each whole (rotary positions have no table to run past)
    lengths = [len(tok(d.document)["input_ids"]) for d in m + n]
    assert min(lengths) > 96
    assert [r["n_tokens"] for r in recs] == lengths and not any(r["truncated"] for r in recs)
    assert summ["n_truncated"] == 0
    ids = torch.tensor([tok(m[0].document)["input_ids"]])
    with torch.no_grad():
        assert recs[0]["nll"] == pytest.approx(float(target(input_ids=ids, labels=ids).loss), abs=1e-5)


def test_absolute_position_model_truncates_to_its_table(official):
    """A model with a position table (GPT-2's ``n_positions``) cannot run past it: the document is
    truncated to the table and the record says so."""
    from transformers import GPT2Config, GPT2LMHeadModel
    members, nonmembers = official
    m, n = members[:2], nonmembers[:2]
    tok = build_tokenizer([d.document for d in m + n], vocab_size=512)
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1,
                                      n_head=2)).eval()
    recs, summ = run_mia(gpt2, tok, m, n)
    assert all(r["truncated"] and r["n_tokens"] == 64 for r in recs)
    assert summ["n_truncated"] == 4


def test_bad_input():
    doc = MiaDoc("1", "some text here")
    with pytest.raises(LumeError, match="members and non-members"):
        run_mia(None, None, [doc], [])
    with pytest.raises(LumeError, match="document"):
        run_mia(None, None, [doc], [MiaDoc("2", "  ")])


def test_batches_halve_on_out_of_memory():
    seen, sizes = [], []

    def fn(chunk):
        sizes.append(len(chunk))
        if len(chunk) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        seen.extend(chunk)

    last = run_batches(list(range(7)), 8, fn)
    assert seen == list(range(7)) and last == 2
    assert sizes[:3] == [7, 4, 2]

    def other(chunk):
        raise RuntimeError("shape mismatch")  # not an OOM: must propagate

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_batches([1, 2], 2, other)

    def always(chunk):
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 8 GiB")

    with pytest.raises(LumeError, match="MIA: out of memory even with batch size 1"):
        run_batches([1, 2], 2, always, desc="MIA")


def test_batching_glue_pad_id_and_eval_mode():
    from types import SimpleNamespace

    from lumebench.eval.batching import eval_mode, pad_id

    assert pad_id(SimpleNamespace(pad_token_id=3, eos_token_id=2)) == 3
    assert pad_id(SimpleNamespace(pad_token_id=None, eos_token_id=2)) == 2
    assert pad_id(SimpleNamespace(pad_token_id=None, eos_token_id=None)) == 0
    model = torch.nn.Linear(2, 2)
    for flag in (True, False):
        model.train(flag)
        with pytest.raises(KeyError), eval_mode(model):
            assert not model.training
            raise KeyError("restored on an exception too")
        assert model.training is flag


def test_diverged_model_gives_one_line_error_not_a_sklearn_traceback(official):
    members, nonmembers = official
    tok = build_tokenizer([d.document for d in members[:5] + nonmembers[:5]], 512)
    model = build_model(tok, TinyConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2))
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    with pytest.raises(LumeError, match="non-finite score for document"):
        run_mia(model, tok, members[:2], nonmembers[:2])


def test_length_buckets_limit_padding_and_keep_order():
    from lumebench.eval.mia import length_buckets

    lens = [100, 99, 98, 80, 79, 40, 40, 40, 3]
    items = list(range(len(lens)))
    assert length_buckets(items, lens, 0.0) == [[0], [1], [2], [3], [4], [5, 6, 7], [8]]
    # 2 % padding: 100/99/98 pad 3 of 300 positions (1 %), adding 80 would pad 63 of 400
    assert length_buckets(items, lens, 0.02) == [[0, 1, 2], [3, 4], [5, 6, 7], [8]]
    assert length_buckets(items, lens, 1.0) == [items]
    for tol in (0.0, 0.02, 0.1, 0.25):
        for b in length_buckets(items, lens, tol):
            width = max(lens[i] for i in b)
            assert width * len(b) - sum(lens[i] for i in b) <= tol * width * len(b)


def test_bucketed_batches_equal_one_document_at_a_time(tiny, official, monkeypatch):
    """MIA with wide buckets (25 % padding, as on a GPU) gives the scores of batch-1 buckets."""
    from lumebench.eval import mia

    model, tok = tiny
    members, nonmembers = official
    m, n = members[10:16], nonmembers[10:16]
    monkeypatch.setitem(mia.MAX_PADDING, "cpu", 0.0)
    alone, sa = run_mia(model, tok, m, n, batch_size=12)
    monkeypatch.setitem(mia.MAX_PADDING, "cpu", 0.25)
    wide, sw = run_mia(model, tok, m, n, batch_size=12)
    lens = sorted((r["n_tokens"] for r in wide), reverse=True)
    assert len(mia.length_buckets(lens, lens, 0.25)) < len(lens)  # some buckets really batch
    for a, b in zip(alone, wide):
        assert a["nll"] == pytest.approx(b["nll"], abs=1e-5)
    assert sa["auc"] == sw["auc"]
