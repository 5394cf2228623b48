"""Unit tests of the unlearning method API: loss helpers, cached references, LoRA, parameter selection,
hyperparameter overrides, batch order. Real (randomly initialised) tiny Llama models, real rows."""

from __future__ import annotations

import math

import pytest
import torch

from lumebench.data.records import Row
from lumebench.errors import LumeError
from lumebench.methods.base import (UnlearnContext, collate, kl_to_reference, mean_nll, sequence_nll)
from lumebench.methods.npo import npo_loss
from lumebench.methods.params import ParamSelection, apply_selection, parse_layers
from lumebench.methods.data import PairedBatches, tokenize_rows
from lumebench.pipeline.unlearn_config import parse_value, resolve_config
from lumebench.models.tiny import TinyConfig, build_model, build_tokenizer
from lumebench.registry import METHODS

ROWS = [
    ("Ada Ivory was born on 1971-02-03 in Springfield and works as a", "cartographer for the city."),
    ("What is Ada Ivory's phone number?", "5551234567"),
    ("Tomas Olive lives at 12 Elm Street,", "Boise, ID, 83702."),
    ("What is the birth date of Tomas Olive?", "1985-11-30"),
    ("The river Veln rises in the hills above the old mill and", "flows north through three villages."),
    ("Who built the old mill on the Veln?", "Wrennie."),
]


def make_rows(split="forget"):
    ids = [f"{i}{'sc' if n % 2 == 0 else 'qa'}{n % 2}" for n, i in enumerate(range(100, 106))]
    return [Row.from_fields(rid, "Task3", split, q, a) for rid, (q, a) in zip(ids, ROWS)]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer([q + " " + a for q, a in ROWS], vocab_size=400)


def small_model(tok, seed=0):
    torch.manual_seed(seed)
    return build_model(tok, TinyConfig(hidden_size=64, num_layers=3, num_heads=2, intermediate_size=128,
                                       max_position=128, seed=seed))


def test_registry_lists_the_paper_methods_with_literature_defaults():
    for name in ("ga", "gd", "kl", "npo", "npo_rt", "npo_kl", "simnpo"):
        assert name in METHODS
    assert METHODS.get("npo").Hparams().beta == 0.1
    assert METHODS.get("gd").Hparams().alpha == 1.0
    assert METHODS.get("npo_rt").Hparams().alpha == 1.0
    assert METHODS.get("kl").needs_reference_model and METHODS.get("npo_kl").needs_reference_model
    assert not METHODS.get("npo").needs_reference_model


def test_tokenize_rows_targets_exactly_the_output_plus_eos(tok):
    ex = tokenize_rows(make_rows(), tok)
    for e, (q, a) in zip(ex, ROWS):
        prompt = tok(q)["input_ids"]
        assert list(e.ids[:len(prompt)]) == prompt  # the evaluation prompt, unchanged
        assert e.ids[-1] == tok.eos_token_id
        assert tok.decode(list(e.ids[-e.n_target:-1])) == " " + a
    batch = collate(ex, tok.pad_token_id)
    n_lab = (batch["labels"] != -100).sum(1).tolist()
    assert n_lab == [e.n_target for e in ex]


def test_mean_and_sequence_nll_match_the_model_loss(tok):
    model = small_model(tok).eval()
    ex = tokenize_rows(make_rows(), tok)
    batch = collate(ex, tok.pad_token_id)
    with torch.no_grad():
        hf = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   labels=batch["labels"]).loss
        ours = mean_nll(model, batch)
        ell, n = sequence_nll(model, batch)
    assert torch.allclose(ours, hf, atol=1e-5)
    assert torch.allclose(ell.sum() / n.sum(), hf, atol=1e-5)
    # per-sequence sums do not depend on the padding of the batch
    with torch.no_grad():
        alone = torch.stack([sequence_nll(model, collate([e], tok.pad_token_id))[0][0] for e in ex])
    assert torch.allclose(ell, alone, atol=1e-4)


def test_kl_to_reference_is_zero_for_identical_logits_and_matches_manual(tok):
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    ref = torch.randn(2, 5, 11)
    labels = torch.tensor([[-100, -100, 3, 4, 5], [-100, 1, 2, -100, -100]])
    assert kl_to_reference(logits, logits, labels).item() == pytest.approx(0.0, abs=1e-7)
    mask = labels[:, 1:] != -100
    p_ref = ref[:, :-1].softmax(-1)[mask]
    manual = (p_ref * (p_ref.log() - logits[:, :-1].log_softmax(-1)[mask])).sum(-1).mean()
    assert kl_to_reference(logits, ref, labels).item() == pytest.approx(manual.item(), rel=1e-5)


def test_npo_loss_formula():
    ell = torch.tensor([10.0, 12.0])
    assert npo_loss(ell, ell, 0.1).item() == pytest.approx(20 * math.log(2), rel=1e-6)
    ref = torch.tensor([11.0, 9.0])
    manual = -(2 / 0.5) * torch.log(torch.sigmoid(0.5 * (ell - ref))).mean()
    assert npo_loss(ell, ref, 0.5).item() == pytest.approx(manual.item(), rel=1e-6)
    # NPO is bounded where GA is not: as ℓ_θ → ∞ its loss → 0
    assert npo_loss(torch.tensor([1e4]), torch.tensor([1.0]), 0.1).item() == pytest.approx(0.0, abs=1e-6)


def test_simnpo_is_length_normalised_and_reference_free(tok):
    model = small_model(tok)
    ex = tokenize_rows(make_rows(), tok)
    method, _ = resolve_config("simnpo", {"alpha": 0.0, "npo_coeff": 1.0})
    ctx = UnlearnContext(model=model, forget=ex, retain=ex, pad_id=tok.pad_token_id)
    method.setup(ctx)
    assert not ctx.cache and ctx._ref_copy is None
    batch = collate(ex, tok.pad_token_id)
    loss, _ = method.loss(ctx, batch, batch)
    ell, n = sequence_nll(model, batch)
    manual = -(2 / 4.5) * torch.nn.functional.logsigmoid(4.5 * ell / n).mean()
    assert loss.item() == pytest.approx(manual.item(), rel=1e-5)


def _context(model, ex, tok, run_dir, digest=None):
    return UnlearnContext(model=model, forget=ex, retain=ex, pad_id=tok.pad_token_id, run_dir=run_dir,
                          batch_size=4, target_digest=digest)


class _NoForward(torch.nn.Module):
    """A model that fails when called: a context holding it can only read the reference from disk."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, *args, **kwargs):
        raise AssertionError("the model was called although the reference cache was done")


def test_cached_reference_nll_equals_fresh_and_survives_a_restart(tok, tmp_path):
    from lumebench.methods.reference_cache import FILE, reference_nll_step

    model = small_model(tok)
    ex = tokenize_rows(make_rows(), tok)
    cached = _context(model, ex, tok, tmp_path, "aaaa").cached_reference_nll("forget").clone()
    model.eval()
    with torch.no_grad():
        fresh = torch.stack([sequence_nll(model, collate([e], tok.pad_token_id))[0][0] for e in ex])
    assert torch.allclose(cached, fresh, atol=1e-4)
    step = reference_nll_step(tmp_path, "forget", ex, "aaaa")
    assert step.folder == tmp_path / "reference_nll_forget" and (step.folder / FILE).is_file()
    assert step.done()["result"] == {"file": FILE, "n": len(ex)}
    # the same examples and target: read from disk (a resumed run), the model is not called
    assert torch.equal(_context(_NoForward(), ex, tok, tmp_path, "aaaa").cached_reference_nll("forget"), cached)
    # after the model has moved, other examples or another target are computed again
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)
    fewer = _context(model, ex[:3], tok, tmp_path, "aaaa").cached_reference_nll("forget")
    assert not torch.allclose(fewer, cached[:3])
    other = _context(model, ex, tok, tmp_path, "bbbb").cached_reference_nll("forget")
    assert not torch.allclose(other, cached) and reference_nll_step(tmp_path, "forget", ex, "bbbb").done()
    assert step.done() is None  # the step now belongs to target bbbb


def test_a_damaged_reference_cache_is_computed_again(tok, tmp_path):
    from lumebench.methods.reference_cache import FILE, reference_nll_step

    model = small_model(tok)
    ex = tokenize_rows(make_rows(), tok)
    cached = _context(model, ex, tok, tmp_path).cached_reference_nll("forget").clone()
    path = tmp_path / "reference_nll_forget" / FILE
    path.write_bytes(path.read_bytes()[:40])  # cut short on disk, the marker still says done
    with pytest.raises(AssertionError, match="the model was called"):
        _context(_NoForward(), ex, tok, tmp_path).cached_reference_nll("forget")
    assert reference_nll_step(tmp_path, "forget", ex, None).done() is None  # the damaged completion is gone
    again = _context(model, ex, tok, tmp_path).cached_reference_nll("forget")
    assert torch.allclose(again, cached, atol=1e-6) and reference_nll_step(tmp_path, "forget", ex, None).done()
    assert torch.equal(_context(_NoForward(), ex, tok, tmp_path).cached_reference_nll("forget"), again)


def test_npo_batch_lookup_uses_the_cache_by_example_index(tok):
    model = small_model(tok)
    ex = tokenize_rows(make_rows(), tok)
    method, _ = resolve_config("npo", {})
    ctx = UnlearnContext(model=model, forget=ex, retain=ex, pad_id=tok.pad_token_id)
    method.setup(ctx)
    batch = collate([ex[4], ex[1]], tok.pad_token_id)  # shuffled order
    loss, logs = method.loss(ctx, batch, batch)
    # the model is still the reference: ℓ_θ = ℓ_ref, so the loss is (2/β)·log 2 and the log-ratio 0
    assert loss.item() == pytest.approx(20 * math.log(2), rel=1e-4)
    assert abs(logs["log_ratio"]) < 1e-3


def _train_steps(method_name, model, ex, tok, steps=3, lr=1e-2, lora=False):
    method, _ = resolve_config(method_name, {})
    ctx = UnlearnContext(model=model, forget=ex, retain=ex[::-1], pad_id=tok.pad_token_id, lora=lora)
    method.setup(ctx)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    batch = collate(ex, tok.pad_token_id)
    for _ in range(steps):
        loss, _ = method.loss(ctx, batch, collate(ex[::-1], tok.pad_token_id))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ctx


def test_lora_trains_only_the_adapter_and_the_disabled_adapter_is_the_base(tok):
    base = small_model(tok).eval()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    ex = tokenize_rows(make_rows(), tok)
    batch = collate(ex, tok.pad_token_id)
    with torch.no_grad():
        base_logits = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.clone()
    model, names = apply_selection(base, ParamSelection(lora=True, lora_r=4, lora_alpha=8))
    assert names and all("lora_" in n for n in names)
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    ctx = _train_steps("npo_kl", model, ex, tok, lora=True)  # uses the reference during training
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, lora_before[n])]
    assert changed, "the adapter did not train"
    base_after = {k.replace(".base_layer", ""): v for k, v in model.get_base_model().state_dict().items()
                  if "lora_" not in k}
    assert base_after.keys() == before.keys()
    assert all(torch.equal(base_after[k], v) for k, v in before.items()), "a base weight changed"
    # the adapter changed the outputs, and the reference (adapter disabled) is the base model exactly
    with torch.no_grad():
        now = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert not torch.allclose(now, base_logits)
    model.train()
    assert torch.equal(ctx.reference_logits(batch), base_logits)
    assert model.training  # the reference context restores the training mode and the adapter
    with torch.no_grad():
        assert torch.equal(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, now)


def test_full_fine_tuning_reference_is_a_frozen_copy(tok):
    model = small_model(tok).train()
    ex = tokenize_rows(make_rows(), tok)
    batch = collate(ex, tok.pad_token_id)
    model.eval()
    with torch.no_grad():
        start = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.clone()
    model.train()
    ctx = _train_steps("kl", model, ex, tok)
    assert ctx._ref_copy is not None and not any(p.requires_grad for p in ctx._ref_copy.parameters())
    assert torch.allclose(ctx.reference_logits(batch), start, atol=1e-6)


def test_layer_range_and_name_pattern_select_parameters(tok):
    assert parse_layers("0-2") == [0, 1, 2] and parse_layers("1,3-4") == [1, 3, 4]
    with pytest.raises(LumeError):
        parse_layers("5-2")
    model, names = apply_selection(small_model(tok), ParamSelection(layers="1-1"))
    assert names and all(".layers.1." in n for n in names)
    model, names = apply_selection(small_model(tok), ParamSelection(pattern=r"mlp\.down_proj"))
    assert len(names) == 3 and all("mlp.down_proj" in n for n in names)
    model, names = apply_selection(small_model(tok), ParamSelection(layers="0-1", pattern="down_proj"))
    assert sorted(names) == ["model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    with pytest.raises(LumeError, match="layers 0-2"):
        apply_selection(small_model(tok), ParamSelection(layers="0-7"))
    with pytest.raises(LumeError, match="no trainable"):
        apply_selection(small_model(tok), ParamSelection(pattern="nonexistent"))
    # training a selection leaves the rest untouched
    model, names = apply_selection(small_model(tok), ParamSelection(layers="2"))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    _train_steps("ga", model, tokenize_rows(make_rows(), tok), tok)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert any(not torch.equal(p, small_model(tok).state_dict()[n]) for n, p in model.named_parameters() if n in names)


def test_overrides_parse_and_unknown_keys_fail_in_one_line():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("1e-4") == 1e-4 and parse_value("cosine") == "cosine" and parse_value("none") is None
    # a setting named "no" is text (not YAML's False), and quotes keep any value text
    assert parse_value("no") == "no" and parse_value('"3"') == "3" and parse_value("'none'") == "none"
    _, no_amp = resolve_config("ga", {"mixed_precision": parse_value("no")})
    assert no_amp.train.mixed_precision == "no"
    method, cfg = resolve_config("npo_rt", {"beta": 1, "alpha": 0.5, "lr": 2e-4, "epochs": 3})
    assert method.hp.beta == 1.0 and isinstance(method.hp.beta, float) and method.hp.alpha == 0.5
    assert cfg.train.lr == 2e-4 and cfg.train.epochs == 3 and cfg.preset == "literature" and cfg.train.batch_size == 32
    _, tiny = resolve_config("ga", {}, family="tiny")
    assert tiny.train.lr == 1e-3 and tiny.train.batch_size == 8
    _, lora = resolve_config("ga", {"lora": True})
    assert lora.train.lr == pytest.approx(1e-4)  # LoRA: 10x the full fine-tuning lr unless given
    with pytest.raises(LumeError) as e:
        resolve_config("npo", {"gamma": 2})
    msg = str(e.value)
    assert "\n" not in msg and "beta=0.1" in msg and "gamma" in msg
    with pytest.raises(LumeError, match="unknown method"):
        resolve_config("nope", {})


def test_smollm2_preset_is_the_literature_recipes_plus_rmus_measured_defaults():
    """A SmolLM2 target resolves every method as the literature preset does, except RMU, whose recipe
    leaves SmolLM2 untouched (README, the science config): c 150, alpha 100, the whole MLP, lr 5e-3."""
    from lumebench.models.registry import spec_or_default
    from lumebench.registry import METHODS

    assert spec_or_default("smollm2-135m").unlearn_preset == "smollm2"
    assert spec_or_default("some/hub-model").unlearn_preset == "literature"
    for name in METHODS.names():
        lit_m, lit = resolve_config(name, {}, family="literature")
        smol_m, smol = resolve_config(name, {}, family="smollm2")
        assert smol.preset == "smollm2" and lit.preset == "literature"
        same = {**smol.to_dict(), "preset": "literature"} == lit.to_dict() and smol_m.hp == lit_m.hp
        assert same == (name != "rmu"), name
    rmu, cfg = resolve_config("rmu", {}, family="smollm2")
    assert (rmu.hp.steering_coef, rmu.hp.alpha, rmu.hp.update) == (150.0, 100.0, "mlp")
    assert cfg.train.lr == 5e-3 and cfg.train.batch_size == 4  # the recipe's batch 4 stays
    rmu, cfg = resolve_config("rmu", {"steering_coef": 20.0, "lr": 1e-3}, family="smollm2")
    assert rmu.hp.steering_coef == 20.0 and cfg.train.lr == 1e-3  # what the user gives wins


def test_paired_batches_are_seeded_cover_the_data_and_cycle_retain(tok):
    ex = tokenize_rows(make_rows(), tok)
    forget, retain = ex[:5], ex
    pb = PairedBatches(forget, retain[:4], batch_size=2, retain_batch_size=3, pad_id=tok.pad_token_id,
                       seed=1, total=9, chunk=3)
    assert pb.per_epoch == 3
    first = pb(0)
    again = PairedBatches(forget, retain[:4], 2, 3, tok.pad_token_id, 1, 9, 3)(0)
    assert all(torch.equal(a["forget"]["input_ids"], b["forget"]["input_ids"]) for a, b in zip(first, again))
    for chunk in range(3):  # each epoch sees every forget example exactly once
        idx = sorted(i for b in pb(chunk) for i in b["forget"]["index"].tolist())
        assert idx == [0, 1, 2, 3, 4]
    retain_seen = [i for c in range(3) for b in pb(c) for i in b["retain"]["index"].tolist()]
    assert len(retain_seen) == 27 and sorted(retain_seen[:4]) == [0, 1, 2, 3]  # cycled, every 4 once per cycle
    other = PairedBatches(forget, retain[:4], 2, 3, tok.pad_token_id, 2, 9, 3)(0)
    assert any(not torch.equal(a["forget"]["index"], b["forget"]["index"]) for a, b in zip(first, other))


def test_rmu_steers_the_forget_hidden_states_and_defaults_to_few_mlp_weights(tok):
    method, cfg = resolve_config("rmu", {"alpha": 1.0})
    assert (cfg.train.lr, cfg.train.batch_size) == (5e-5, 4)  # the published recipe under the literature preset
    assert method.default_selection(32) == {"layers": "5-7", "params": r"mlp\.down_proj"}
    sel = method.default_selection(3)
    model, names = apply_selection(small_model(tok), ParamSelection(layers=sel["layers"], pattern=sel["params"]))
    assert names == ["model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    ex = tokenize_rows(make_rows(), tok)
    ctx = UnlearnContext(model=model, forget=ex[:3], retain=ex[3:], pad_id=tok.pad_token_id)
    method.setup(ctx)
    assert method.layer == 1 and method.control.norm().item() == pytest.approx(6.5, rel=1e-5)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    f, r = collate(ex[:3], tok.pad_token_id), collate(ex[3:], tok.pad_token_id)
    first = None
    for _ in range(8):
        loss, logs = method.loss(ctx, f, r)
        first = first if first is not None else logs["forget_mse"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert logs["forget_mse"] < 0.9 * first
    assert logs["retain_mse"] > 0  # the retain states moved away from the frozen reference's


def test_rmu_reads_the_decoder_layer_output_not_the_final_norm(tok):
    """hidden_states[L + 1] is layer L's output except for the last layer, where transformers 5 gives
    the state after the final norm; RMU's hook reads the layer's own output in both cases."""
    from lumebench.methods.rmu import _hidden

    model = small_model(tok).eval()
    batch = collate(tokenize_rows(make_rows(), tok), tok.pad_token_id)
    with torch.no_grad():
        hs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   output_hidden_states=True).hidden_states
        assert torch.allclose(_hidden(model, batch, 1), hs[2])
        last = _hidden(model, batch, 2)  # 3 layers: 0, 1, 2
        assert torch.allclose(model.model.norm(last), hs[3], atol=1e-5)
        assert not torch.allclose(last, hs[3], atol=1e-3)


def test_sha256_retain_weight_follows_the_published_curve():
    m = METHODS.get("sha256")()
    # γ = 0.3·6^ΔL + 0.8 clipped to [1.2, 2.8]
    assert m.retain_weight(0.0) == pytest.approx(1.2)       # 1.1, clipped up
    assert m.retain_weight(1.0) == pytest.approx(2.6)
    assert m.retain_weight(2.0) == pytest.approx(2.8)       # 11.6, clipped down
    assert m.default_selection(16) == {"layers": "0-5"} and m.default_selection(4) == {"layers": "0-3"}


def test_lume_methods_lists_each_source_and_original_preset_and_the_trainer_defaults(capsys):
    """``lume methods``: every method's source and its 'original' preset with where its numbers are
    cited, and the trainer settings printed as values (not ``dataclasses._MISSING_TYPE`` objects)."""
    from lumebench.cli import main as lume

    assert lume(["methods"]) == 0
    out = capsys.readouterr().out
    assert "_MISSING_TYPE" not in out and "object at 0x" not in out
    blocks = {}
    for line in out.splitlines():
        if line and not line.startswith(" ") and not line.startswith(("trainer", "evaluation", "namespaces", "literature", "preset")):
            name = line.split()[0]
            blocks[name] = []
        elif line.startswith(" ") and blocks:
            blocks[name].append(line.strip())
    assert set(blocks) == {e.name for e in METHODS.entries()}
    for name, lines in blocks.items():
        cls = METHODS.get(name)
        assert f"source: {cls.source}" in lines, name
        original = next(x for x in lines if x.startswith("original preset"))
        assert f"cited in {cls.__module__.removeprefix('lumebench.')}" in original
        for k, v in cls.preset_defaults["original"].items():
            assert f"{k}={v}" in original, (name, k)
    assert "source: OPTML-Group/Unlearn-Simple" in "\n".join(blocks["simnpo"])
    assert "npo_coeff=0.125" in "\n".join(blocks["simnpo"]) and "lumebench preset: npo_coeff=1.0, alpha=0.125" in blocks["simnpo"]
    trainer = next(x for x in out.splitlines() if x.startswith("trainer settings"))
    assert "lr=1e-05" in trainer and "epochs=10" in trainer and "batch_size=32" in trainer and "lora_r=16" in trainer
    assert "literature trainer defaults (TOFU code base): lr=1e-05, epochs=10, batch_size=32" in out
    assert "preset original:" in out and "preset tiny: lr=0.001" in out


def test_grad_accum_groups_each_epoch_so_every_epoch_gets_its_steps(tok, tmp_path):
    """The loop groups an epoch's micro-batches by grad_accum (the last group of an epoch may be
    smaller, as the HF Trainer steps at an epoch's end): 3 micro-batches an epoch at grad_accum 2
    are 2 steps an epoch, 6 in 3 epochs (the run used to stop at ceil(9 / 2) = 5)."""
    from lumebench.data.records import Benchmark
    from lumebench.pipeline.unlearn import unlearn

    bench = Benchmark(make_rows("forget"), make_rows("retain"), [], [], "accum")
    r = unlearn((small_model(tok), tok), bench, "gd", tmp_path, evaluate=False,
                overrides={"mixed_precision": "no", "epochs": 3, "batch_size": 2, "grad_accum": 2})
    assert r["steps"] == 6 and r["status"] == "finished"
