"""Mixed precision and run identity: bf16 weights train through fp32 master weights, an fp16 overflow
is a skipped step, the reference-NLL cache and a resumed run are tied to the target's weights."""

from __future__ import annotations

import json

import pytest
import torch

import dist_worker as worker
from lumebench.errors import LumeError
from lumebench.pipeline import evaluator as evaluator_mod
from lumebench.pipeline import unlearn as unlearn_mod
from lumebench.methods.base import UnlearnContext
from lumebench.methods.data import tokenize_rows
from lumebench.pipeline.unlearn import unlearn
from lumebench.models.tiny import TinyConfig, build_model
from lumebench.train.loop import step_outcome

LR, STEPS = 1e-5, 20
GA = {"lr": LR, "max_steps": STEPS, "batch_size": 2, "epochs": 2, "warmup_ratio": 0.0,
      "lr_schedule": "constant", "weight_decay": 0.0, "preset": "literature"}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from lumebench.data.generate import generate_benchmark

    return worker.short_benchmark(generate_benchmark(tmp_path_factory.mktemp("prec") / "data", docs_per_task=2))


@pytest.fixture(scope="module")
def target_dir(bench, tmp_path_factory):
    return worker.build_target(bench, tmp_path_factory.mktemp("prec") / "target")


def changed_fraction(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> float:
    changed = sum(int((after[k].float() != before[k].float()).sum()) for k in before)
    return changed / sum(t.numel() for t in before.values())


def test_bf16_weights_are_updated_through_fp32_master_weights(bench, target_dir, tmp_path):
    from lumebench.models import load_model

    model, tok = load_model(str(target_dir), dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # the defect: AdamW directly on the bf16 weights, the same 20 steps of lr 1e-5, loses most updates
    control, _ = load_model(str(target_dir), dtype="bfloat16")
    opt = torch.optim.AdamW(control.parameters(), lr=LR, weight_decay=0.0)
    ids = torch.tensor([list(tokenize_rows(bench.forget[:2], tok)[0].ids)])
    for _ in range(STEPS):
        opt.zero_grad()
        (-control(input_ids=ids, labels=ids).loss).backward()
        opt.step()
    lost = changed_fraction(before, dict(control.named_parameters()))
    # lumebench: fp32 master weights with bf16 autocast
    state = unlearn((model, tok), bench, "ga", tmp_path / "ga", overrides={**GA, "mixed_precision": "bf16"},
                    evaluate=False)
    assert state["status"] == "finished" and state["steps"] == STEPS
    assert all(p.dtype == torch.float32 for p in model.parameters())
    kept = changed_fraction(before, dict(model.named_parameters()))
    assert lost < 0.5 < 0.95 < kept, (lost, kept)


def test_an_inf_gradient_norm_under_loss_scaling_is_a_skipped_step_not_a_divergence():
    assert step_outcome(float("inf"), loss_scaling=True, explode_grad_norm=1e4) == "skip"
    assert step_outcome(float("nan"), loss_scaling=True, explode_grad_norm=1e4) == "skip"
    assert step_outcome(float("inf"), loss_scaling=False, explode_grad_norm=1e4) == "diverged"
    assert step_outcome(2e4, loss_scaling=True, explode_grad_norm=1e4) == "diverged"
    assert step_outcome(3.0, loss_scaling=True, explode_grad_norm=1e4) == "step"


def test_reference_nll_cache_is_keyed_by_the_target_weights(bench, target_dir, tmp_path):
    from lumebench.models import load_model

    model, tok = load_model(str(target_dir))
    ex = tokenize_rows(bench.forget, tok)
    pad = tok.pad_token_id

    def ctx(m, digest):
        return UnlearnContext(model=m, forget=ex, retain=ex, pad_id=pad, run_dir=tmp_path, batch_size=4,
                              target_digest=digest)

    first = ctx(model, "aaaa").cached_reference_nll("forget").clone()
    other = build_model(tok, TinyConfig(**{**worker.SMALL, "seed": 1}))  # another target, same examples
    fresh = ctx(other, "bbbb").cached_reference_nll("forget")
    assert not torch.allclose(fresh, first)  # recomputed, not read from the first target's file
    again = ctx(model, "bbbb").cached_reference_nll("forget")
    assert torch.equal(again, fresh)  # the file now belongs to target bbbb


def test_a_resumed_run_refuses_a_target_whose_weights_changed(bench, target_dir, tmp_path, monkeypatch):
    import shutil

    target = tmp_path / "target"
    shutil.copytree(target_dir, target)
    real = evaluator_mod.evaluate_model
    calls = []

    def dies_at_the_second_evaluation(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(evaluator_mod, "evaluate_model", dies_at_the_second_evaluation)
    from lumebench.pipeline.eval_settings import EvalSettings

    over = {**GA, "max_steps": None, "lr": 1e-3, "batch_size": 10, "epochs": 2}
    ev = EvalSettings(max_new_tokens=4, mia=False)
    with pytest.raises(KeyboardInterrupt):
        unlearn(str(target), bench, "ga", tmp_path / "run", overrides=over, eval=ev)
    assert json.loads((tmp_path / "run" / "unlearn.json").read_text())["status"] == "running"
    # the target directory is overwritten with other weights (same files, same config)
    from lumebench.models import load_model

    model, tok = load_model(str(target))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.01)
    model.save_pretrained(target, safe_serialization=True)
    monkeypatch.setattr(evaluator_mod, "evaluate_model", real)
    with pytest.raises(LumeError, match="target with other weights"):
        unlearn(str(target), bench, "ga", tmp_path / "run", overrides=over, eval=ev)


def test_a_partly_trained_bf16_model_is_evaluated_between_epochs(bench, target_dir, tmp_path):
    """Training only the last layer of a bf16 model: the frozen layers become fp32 with the master
    weights, so the evaluation after the epoch (no autocast) runs; before the fix every forward there
    failed with "expected m1 and m2 to have the same dtype" (seen on an H100 with sha256, rmu and
    ails_ntua)."""
    from lumebench.pipeline.eval_settings import EvalSettings
    from lumebench.models import load_model
    from lumebench.curve import read_curve

    model, tok = load_model(str(target_dir), dtype="bfloat16")
    state = unlearn((model, tok), bench, "ails_ntua", tmp_path / "ails",
                    overrides={"last_layers": 1, "epochs": 1, "max_steps": 1, "mixed_precision": "bf16"},
                    eval=EvalSettings(mia=False, max_new_tokens=8))
    assert state["status"] == "finished"
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    steps = [e.step for e in read_curve(tmp_path / "ails")]
    assert steps[0] == 0 and steps[-1] == 1
