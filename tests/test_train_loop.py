"""The shared training loop: it learns, resumes exactly, guards against divergence; the batch helpers."""

from __future__ import annotations

import json

import pytest
import torch

from lumebench.errors import LumeError
from lumebench.models.tiny import TinyConfig, build_model, build_tokenizer
from lumebench.train.batches import (IGNORE, EpochBatches, causal_lm_loss, collate, document_examples,
                                     qa_examples)
from lumebench.train.loop import TrainConfig, find_checkpoint, lr_lambda, read_checkpoint_state, train

TEXTS = [f"Story {i}: Wrennie Ivory of Walla Walla kept {i % 4 + 2} owls and a red kite named Tomas{i}."
         for i in range(16)]
QA = [(f"How many owls did story {i} mention?", f"{i % 4 + 2}") for i in range(8)]
SMALL = TinyConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_position=128)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(TEXTS + [q + " " + a for q, a in QA], vocab_size=400)


@pytest.fixture(scope="module")
def batches(tok):
    ex = document_examples(tok, TEXTS) + qa_examples(tok, QA)
    return EpochBatches(ex, batch_size=6, pad_id=tok.pad_token_id, seed=3)  # 24 examples -> 4 batches


def mean_loss(model, batches) -> float:
    model.eval()
    with torch.no_grad():
        losses = [causal_lm_loss(model, b)[0].item() for b in batches(0)]
    return sum(losses) / len(losses)


CFG = dict(lr=3e-3, epochs=3, batch_size=6, warmup_ratio=0.1, lr_schedule="cosine", log_every=100)


def test_a_few_steps_lower_the_loss(tok, batches, tmp_path):
    model = build_model(tok, SMALL)
    before = mean_loss(model, batches)
    res = train(model, causal_lm_loss, batches, TrainConfig(**CFG), out_dir=tmp_path)
    after = mean_loss(model, batches)
    assert res.status == "completed" and res.steps == 12 and res.epochs_done == 3
    assert after < before - 0.5, (before, after)
    assert len(res.history) == 12 and res.history[0]["step"] == 1
    assert res.tokens == sum(int(b["attention_mask"].sum()) for e in range(3) for b in batches(e))
    assert res.tokens_per_s > 0
    # the step log on disk is the history
    lines = (tmp_path / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(l)["loss"] for l in lines] == [h["loss"] for h in res.history]


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tok, batches, tmp_path):
    ref_model = build_model(tok, SMALL)
    ref = train(ref_model, causal_lm_loss, batches, TrainConfig(**CFG), out_dir=tmp_path / "ref")

    class Interrupted(Exception):
        pass

    def crash_after_second_epoch(epoch, step, model):
        if epoch == 1:
            raise Interrupted

    model = build_model(tok, SMALL)
    with pytest.raises(Interrupted):
        train(model, causal_lm_loss, batches, TrainConfig(**CFG), out_dir=tmp_path / "run",
              on_epoch_end=crash_after_second_epoch)
    state = read_checkpoint_state(find_checkpoint(tmp_path / "run"))
    assert state["step"] == 4 and state["epochs_done"] == 1  # the epoch-2 checkpoint never got written

    fresh = build_model(tok, SMALL)  # a new process would start from scratch weights
    res = train(fresh, causal_lm_loss, batches, TrainConfig(**CFG), out_dir=tmp_path / "run")
    assert res.steps == ref.steps == 12
    assert [h["loss"] for h in res.history] == [h["loss"] for h in ref.history]
    assert [h["lr"] for h in res.history] == [h["lr"] for h in ref.history]
    for (n, p), q in zip(fresh.named_parameters(), ref_model.parameters()):
        assert torch.equal(p, q), n

    # asking again after the end is a no-op that reports the same result
    again = build_model(tok, SMALL)
    res2 = train(again, causal_lm_loss, batches, TrainConfig(**CFG), out_dir=tmp_path / "run")
    assert res2.status == "completed" and res2.steps == 12
    assert all(torch.equal(p, q) for p, q in zip(again.parameters(), ref_model.parameters()))


def test_resume_refuses_other_hyperparameters(tok, batches, tmp_path):
    model = build_model(tok, SMALL)
    train(model, causal_lm_loss, batches, TrainConfig(**{**CFG, "epochs": 1}), out_dir=tmp_path)
    with pytest.raises(LumeError, match="other hyperparameters.*lr"):
        train(model, causal_lm_loss, batches, TrainConfig(**{**CFG, "epochs": 1, "lr": 1e-3}), out_dir=tmp_path)
    # resume=False starts over and replaces the checkpoint
    res = train(model, causal_lm_loss, batches, TrainConfig(**{**CFG, "epochs": 1, "lr": 1e-3}),
                out_dir=tmp_path, resume=False)
    assert res.steps == 4


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tok, batches, tmp_path):
    calls = {"n": 0}

    def nan_at_step_7(model, batch):
        calls["n"] += 1
        loss, logs = causal_lm_loss(model, batch)
        return (loss * float("nan") if calls["n"] == 7 else loss), logs

    model = build_model(tok, SMALL)
    res = train(model, nan_at_step_7, batches, TrainConfig(**CFG), out_dir=tmp_path)
    assert res.status == "diverged at step 7" and res.diverged
    assert res.steps == 6 and len(res.history) == 6  # the logs so far are kept
    assert res.epochs_done == 1
    ckpt = find_checkpoint(tmp_path)
    state = read_checkpoint_state(ckpt)
    assert state["step"] == 4 and state["status"] == "running"  # epoch 1's checkpoint, not overwritten
    # the model is back to the last good state (= that checkpoint), not the half-trained epoch 2
    from safetensors.torch import load_file
    saved = load_file(str(ckpt / "trainable.safetensors"))
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), saved[n]), n


def test_inf_loss_in_the_first_epoch_restores_the_initial_weights(tok, batches, tmp_path):
    calls = {"n": 0}

    def inf_at_step_3(model, batch):
        calls["n"] += 1
        loss, logs = causal_lm_loss(model, batch)
        return (loss + float("inf") if calls["n"] == 3 else loss), logs

    model = build_model(tok, SMALL)
    initial = [p.detach().clone() for p in model.parameters()]
    res = train(model, inf_at_step_3, batches, TrainConfig(**CFG), out_dir=tmp_path)
    assert res.status == "diverged at step 3" and res.steps == 2 and res.epochs_done == 0
    assert find_checkpoint(tmp_path) is None and res.checkpoint is None  # no epoch finished
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), initial))  # restored in memory


def test_explode_guard_on_gradient_norm(tok, batches, tmp_path):
    model = build_model(tok, SMALL)
    res = train(model, causal_lm_loss, batches, TrainConfig(**{**CFG, "explode_grad_norm": 1e-6}), out_dir=tmp_path)
    assert res.status == "diverged at step 1" and res.steps == 0


def test_grad_accum_max_steps_and_early_stop(tok, batches, tmp_path):
    model = build_model(tok, SMALL)
    res = train(model, causal_lm_loss, batches, TrainConfig(**{**CFG, "grad_accum": 3, "max_steps": 3}),
                out_dir=tmp_path / "a")
    assert res.steps == 3 and res.epochs_done == 2  # 2 steps an epoch (3 + 1 micro-batches)
    assert "max_steps" in res.status
    stop = train(build_model(tok, SMALL), causal_lm_loss, batches, TrainConfig(**CFG), out_dir=tmp_path / "b",
                 on_epoch_end=lambda e, s, m: {"stop": e == 1, "score": 0.5 + e})
    assert stop.status == "stopped early at epoch 2" and stop.steps == 8
    assert [e["score"] for e in stop.epoch_logs] == [0.5, 1.5]


def test_corrupt_training_checkpoint_is_a_clear_error(tok, batches, tmp_path):
    model = build_model(tok, SMALL)
    train(model, causal_lm_loss, batches, TrainConfig(**{**CFG, "epochs": 2}), out_dir=tmp_path)
    (tmp_path / "checkpoint" / "trainer_state.json").write_text(
        (tmp_path / "checkpoint" / "trainer_state.json").read_text().replace('"completed"', '"running"'))
    path = tmp_path / "checkpoint" / "optimizer.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(LumeError, match="corrupt training checkpoint"):
        train(model, causal_lm_loss, batches, TrainConfig(**{**CFG, "epochs": 2}), out_dir=tmp_path)


def test_lr_schedule_warmup_then_decay():
    f = lr_lambda(100, 0.1, "cosine")
    assert f(0) == pytest.approx(1 / 11) and f(9) == pytest.approx(10 / 11) and f(10) == 1.0
    assert f(55) == pytest.approx(0.5) and f(99) < 0.001
    g = lr_lambda(100, 0.1, "linear")
    assert g(55) == pytest.approx(0.5) and g(99) == pytest.approx(1 / 90)
    assert lr_lambda(10, 0.0, "constant")(9) == 1.0
    with pytest.raises(LumeError):
        TrainConfig(lr_schedule="step")


def test_batches_pad_label_and_end_with_eos(tok):
    eos = tok.eos_token_id
    qa = qa_examples(tok, [("Where does Wrennie live?", "Walla Walla")])[0]
    assert qa[-1] == eos and tok.decode(qa[:-1]) == "Where does Wrennie live? Walla Walla"
    docs = document_examples(tok, TEXTS[:3], max_length=10)
    assert all(len(d) <= 10 and d[-1] == eos for d in docs)
    b = collate([[5, 6, eos], [7, eos]], pad_id=eos)
    assert b["input_ids"].tolist() == [[5, 6, eos], [7, eos, eos]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert b["labels"].tolist() == [[5, 6, eos], [7, eos, IGNORE]]  # the real EOS is learned, padding is not


def test_epoch_batches_are_seeded_per_epoch(batches):
    o0, o1 = batches.order(0), batches.order(1)
    assert o0 == batches.order(0) and o0 != o1
    assert sorted(i for b in o0 for i in b) == list(range(len(batches.examples)))  # every example once
    other = EpochBatches(batches.examples, 6, batches.pad_id, seed=4)
    assert other.order(0) != o0
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(batches(2), batches(2)))


def test_without_checkpoints_a_divergence_rolls_back_in_memory(tok, batches, tmp_path):
    calls, after_epoch_1 = {"n": 0}, {}

    def nan_at_step_7(model, batch):
        calls["n"] += 1
        loss, logs = causal_lm_loss(model, batch)
        return (loss * float("nan") if calls["n"] == 7 else loss), logs

    def remember(epoch, step, model):
        if epoch == 0:
            after_epoch_1.update({n: p.detach().clone() for n, p in model.named_parameters()})

    model = build_model(tok, SMALL)
    res = train(model, nan_at_step_7, batches, TrainConfig(**CFG, save_checkpoints=False), out_dir=tmp_path,
                on_epoch_end=remember)
    assert res.status == "diverged at step 7" and find_checkpoint(tmp_path) is None
    assert all(torch.equal(p, after_epoch_1[n]) for n, p in model.named_parameters())
