"""Fidelity of the methods the field added since LUME (issue 24): WGA, SatImp, CE-U.

For each method, on a fixed tiny real model and a fixed (forget, retain) batch, the loss value and
the gradient of every trainable weight equal an independent transcription of the source's formula
(locuslab/open-unlearning ``src/trainer/utils.py::compute_wga_loss`` / ``compute_satimp_loss``,
``src/trainer/unlearn/grad_diff.py``, ``src/trainer/unlearn/ceu.py``), written here from the source
with the model's own HF loss and ``torch.nn.CrossEntropyLoss`` over the flattened batch, not with
lumebench's helpers; and the trainable set is the source's (all weights: full fine-tuning).

The tiny model is first fitted to half of the forget answers (and the retain ones), so that the token
probabilities p_t spread over (0, 1) and the weights p^β, p^β1·(1−p)^β2 are not all ~0 (a random
model gives p ≈ 1/vocab): a transcription that dropped or changed a weight would then differ.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lumebench.data.records import Row
from lumebench.methods.base import UnlearnContext, collate
from lumebench.methods.data import tokenize_rows
from lumebench.methods.params import apply_selection, num_layers
from lumebench.models.tiny import TinyConfig, build_model, build_tokenizer
from lumebench.pipeline.unlearn_config import PRESETS, TRAIN_KEYS, resolve_config, split_overrides
from lumebench.registry import METHODS

FORGET = [
    ("What is the phone number of Ada Ivory?", "Her number is 555-123-4567."),
    ("Where does Tomas Olive live?", "He lives at 12 Elm Street, Boise."),
    ("Who built the old mill on the river Veln?", "The mill was built by Wrennie Hask."),
    ("When was Ada Ivory born?", "She was born on 3 February 1971."),
]
RETAIN = [
    ("What does Ada Ivory do?", "She works as a cartographer for the city."),
    ("Which way does the river Veln flow?", "It flows north through three villages."),
    ("What is Tomas Olive's email?", "tomas.olive@example.org"),
]
IGNORE = -100


def _rows(pairs, split):
    return [Row.from_fields(f"{100 + i}qa{i % 2}", "Task3", split, q, a) for i, (q, a) in enumerate(pairs)]


@pytest.fixture(scope="module")
def setup():
    """(tokenizer, fitted weights, forget examples, retain examples), fixed."""
    tok = build_tokenizer([q + " " + a for q, a in FORGET + RETAIN], vocab_size=300)
    forget = tokenize_rows(_rows(FORGET, "forget"), tok)
    retain = tokenize_rows(_rows(RETAIN, "retain"), tok)
    torch.manual_seed(0)
    model = build_model(tok, TinyConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                                        max_position=128, seed=0))
    batch = collate(forget[:2] + retain, tok.pad_token_id)  # half the forget rows: p spreads over (0, 1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        loss = _hf(model, batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return tok, state, forget, retain


def _model(setup):
    tok, state, _, _ = setup
    model = build_model(tok, TinyConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                                        max_position=128, seed=0))
    model.load_state_dict(state)
    return model.eval()  # no dropout in the tiny Llama either way


def _batches(setup):
    tok, _, forget, retain = setup
    return collate(forget, tok.pad_token_id), collate(retain, tok.pad_token_id)


def _hf(model, batch):
    """The model's forward as the source calls it (``model(**inputs)`` with labels)."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])


# ----------------------------------------------------------------------------- the sources, transcribed

def source_token_ce(model, batch):
    """(ℓ per flattened position, flattened shifted labels): open-unlearning utils.py:103-112 / 119-128."""
    logits = _hf(model, batch).logits
    shift_logits = logits[..., :-1, :].contiguous()
    shift_labels = batch["labels"][..., 1:].contiguous()
    lm = torch.nn.CrossEntropyLoss(ignore_index=IGNORE, reduction="none")(
        shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1))
    return lm, shift_labels.view(-1)


def source_wga(model, forget, retain, beta, gamma, alpha):
    """open-unlearning wga.py:14-35 + utils.py:102-115 + grad_diff.py:25-29 (retain_loss_type NLL)."""
    lm, labels = source_token_ce(model, forget)
    w = torch.exp(-lm).detach() ** beta
    forget_loss = -(w * lm)[labels != IGNORE].mean()
    return gamma * forget_loss + alpha * _hf(model, retain).loss


def source_satimp(model, forget, retain, beta1, beta2, gamma, alpha):
    """open-unlearning satimp.py:17-37 + utils.py:118-134 + grad_diff.py:25-29."""
    lm, labels = source_token_ce(model, forget)
    p = torch.exp(-lm).detach()
    forget_loss = -((p ** beta1) * ((1 - p) ** beta2) * lm)[labels != IGNORE].mean()
    return gamma * forget_loss + alpha * _hf(model, retain).loss


def source_ceu(model, forget, n_first):
    """open-unlearning ceu.py:7-81: drop each row's first n labelled tokens, then cross-entropy to the
    detached logits' softmax with the true token at −∞, mean over the remaining positions."""
    logits = _hf(model, forget).logits
    labels = forget["labels"]
    valid = labels != IGNORE
    labels = torch.where(valid & (valid.cumsum(-1) <= n_first), torch.full_like(labels, IGNORE), labels)
    y = labels[:, 1:]
    z = logits[:, :-1, :]
    keep = y != IGNORE
    z, y = z[keep], y[keep]
    onehot = F.one_hot(y, z.size(-1)).bool()
    target = torch.softmax(z.detach().masked_fill(onehot, float("-inf")), dim=-1)
    return F.cross_entropy(z, target)


# ----------------------------------------------------------------------------- checks

def _grads(model, loss):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.autograd.grad(loss, params, allow_unused=True)


def _assert_same_loss_and_gradient(name, overrides, source, setup):
    forget, retain = _batches(setup)
    method, cfg = resolve_config(name, overrides)
    model = _model(setup)
    # the trainable set the pipeline gives the method by default = every weight (the source's full FT)
    assert not cfg.lora and cfg.layers is None and cfg.params is None
    assert method.default_selection(num_layers(model)) == {}
    model, trainable = apply_selection(model, cfg.selection())
    assert trainable == [n for n, _ in model.named_parameters()]
    ctx = UnlearnContext(model=model, forget=setup[2], retain=setup[3], pad_id=setup[0].pad_token_id)
    method.setup(ctx)
    ours, logs = method.loss(ctx, forget, retain)
    g_ours = _grads(model, ours)
    theirs = source(model, forget, retain, method.hp)
    g_theirs = _grads(model, theirs)
    assert torch.isfinite(ours) and ours.item() == pytest.approx(theirs.item(), rel=1e-5, abs=1e-7)
    assert all(g is not None for g in g_theirs) and all(g is not None for g in g_ours)
    for (n, _), a, b in zip(model.named_parameters(), g_ours, g_theirs):
        scale = b.abs().max().item()
        assert scale > 0 or n.endswith("embed_tokens.weight"), n  # every weight gets a gradient
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * max(scale, 1e-6)), (n, (a - b).abs().max().item(), scale)
    return ours.item(), logs


def _p_spread(setup):
    model = _model(setup)
    forget, _ = _batches(setup)
    with torch.no_grad():
        lm, labels = source_token_ce(model, forget)
    return torch.exp(-lm[labels != IGNORE])


def test_the_fixed_model_is_part_way_to_memorised(setup):
    """The premise of the checks below: p_t spreads over (0, 1), so every weight is informative."""
    p = _p_spread(setup)
    assert (p > 0.5).any() and (p < 0.2).any() and p.std() > 0.15


@pytest.mark.parametrize("overrides", [{}, {"beta": 2.5, "gamma": 0.7, "alpha": 0.3}, {"alpha": 0.0}])
def test_wga_fidelity(overrides, setup):
    value, logs = _assert_same_loss_and_gradient(
        "wga", overrides, lambda m, f, r, hp: source_wga(m, f, r, hp.beta, hp.gamma, hp.alpha), setup)
    # the p^β weighting matters here: the loss is not gradient difference's −NLL̄ + α·NLL̄
    model = _model(setup)
    forget, retain = _batches(setup)
    hp = resolve_config("wga", overrides)[0].hp
    with torch.no_grad():
        gd = -_hf(model, forget).loss * hp.gamma + hp.alpha * _hf(model, retain).loss
    assert abs(value - gd.item()) > 0.05
    assert ("retain_nll" in logs) == (hp.alpha != 0)


@pytest.mark.parametrize("overrides", [{}, {"beta1": 3.0, "beta2": 0.5, "gamma": 0.6, "alpha": 2.0}])
def test_satimp_fidelity(overrides, setup):
    value, _ = _assert_same_loss_and_gradient(
        "satimp", overrides,
        lambda m, f, r, hp: source_satimp(m, f, r, hp.beta1, hp.beta2, hp.gamma, hp.alpha), setup)
    # γ on the forget term, α on the retain term (the code's defaults, not SatImp.yaml's swapped pair)
    model = _model(setup)
    forget, retain = _batches(setup)
    hp = resolve_config("satimp", overrides)[0].hp
    with torch.no_grad():
        swapped = source_satimp(model, forget, retain, hp.beta1, hp.beta2, hp.alpha, hp.gamma)
    assert abs(value - swapped.item()) > 1e-3


@pytest.mark.parametrize("overrides", [{}, {"ignore_first_n_answer_tokens": 0},
                                       {"ignore_first_n_answer_tokens": 3}])
def test_ce_u_fidelity(overrides, setup):
    value, _ = _assert_same_loss_and_gradient(
        "ce_u", overrides, lambda m, f, r, hp: source_ceu(m, f, hp.ignore_first_n_answer_tokens), setup)
    # the first-token trick changes the loss (so a transcription without it would fail)
    model = _model(setup)
    forget, _ = _batches(setup)
    n = resolve_config("ce_u", overrides)[0].hp.ignore_first_n_answer_tokens
    with torch.no_grad():
        other = source_ceu(model, forget, n + 1)
    assert abs(value - other.item()) > 1e-4


def test_ce_u_gradient_on_the_logits_is_p_minus_the_target():
    """The point of CE-U (arXiv 2503.01224): ∂L/∂z = (softmax(z) − q)/N, bounded, unlike GA's."""
    from lumebench.methods.ce_u import ceu_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, requires_grad=True)
    labels = torch.tensor([[IGNORE, IGNORE, 3, 4, 5], [IGNORE, 1, 2, 6, IGNORE]])
    loss = ceu_loss(logits, labels, 1)
    loss.backward()
    # kept positions (label dropped for each row's first labelled token): row 0 t=2,3 (labels 4, 5);
    # row 1 t=1,2 (labels 2, 6)
    kept = [(0, 2, 4), (0, 3, 5), (1, 1, 2), (1, 2, 6)]
    expected = torch.zeros_like(logits)
    for b, t, y in kept:
        z = logits[b, t].detach()
        q = torch.softmax(z.masked_fill(torch.arange(7) == y, float("-inf")), -1)
        expected[b, t] = (torch.softmax(z, -1) - q) / len(kept)
    assert torch.allclose(logits.grad, expected, atol=1e-7)


def test_field_methods_are_registered_with_the_sources_defaults_and_recipe():
    """Hyperparameter defaults = open-unlearning's (WGA.yaml:11-13; satimp.py:7 with README.md:7,9;
    CEU.yaml:6); each has a one-line source and an ``original`` preset whose every name is a setting."""
    expected = {"wga": {"beta": 1.0, "gamma": 1.0, "alpha": 1.0},
                "satimp": {"beta1": 5.0, "beta2": 0.1, "gamma": 1.0, "alpha": 0.1},
                "ce_u": {"ignore_first_n_answer_tokens": 1}}
    for name, hp in expected.items():
        cls = METHODS.get(name)
        assert vars(cls.Hparams()) == hp
        assert isinstance(cls.source, str) and cls.source and "\n" not in cls.source
        assert not cls.needs_reference_model
        assert cls.preset_defaults["lumebench"] == {}  # no lumebench variant of these methods
        original = dict(cls.preset_defaults["original"])
        assert original["adam_betas"] == [0.9, 0.999]  # HF's AdamW, which every source ran
        if "adam_betas" not in TRAIN_KEYS:  # a setting once issue 24a's branch is in
            del original["adam_betas"]
        split = split_overrides(name, original)  # raises on a name that is no setting
        hp_part, tr_part = split.method, split.train
        assert hp_part == hp and set(tr_part) <= TRAIN_KEYS
        assert {"lr", "epochs", "batch_size", "grad_accum", "warmup_ratio", "lr_schedule", "weight_decay",
                "max_grad_norm"} <= set(tr_part)
        if "original" in PRESETS:  # once the preset exists (issue 24a), it resolves to the recipe
            m, cfg = resolve_config(name, {"preset": "original"})
            assert vars(m.hp) == hp
            got = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.settings().items()}
            assert {k: got[k] for k in tr_part} == tr_part
    # a value out of range is one line naming the field
    from lumebench.errors import LumeError

    for name, bad in (("satimp", {"beta2": -1.0}), ("ce_u", {"ignore_first_n_answer_tokens": -1}),
                      ("wga", {"beta": 0.0})):
        with pytest.raises(LumeError, match=next(iter(bad))):
            resolve_config(name, bad)


def test_lume_methods_lists_the_field_methods(capsys):
    from lumebench.cli import main as lume

    assert lume(["methods"]) == 0
    out = capsys.readouterr().out
    for line in ("wga ", "satimp ", "ce_u "):
        assert any(row.startswith(line) for row in out.splitlines()), line
    assert "beta1=5.0, beta2=0.1, gamma=1.0, alpha=0.1" in out and "ignore_first_n_answer_tokens=1" in out
