"""Fidelity of every method to its source (issue 24): under the preset ``original``, on a fixed tiny real
model (10 decoder layers, so that "layers 0-5", "the last 8" and "layers 5-7" are different sets) and a
fixed batch, the method's loss value and its gradient equal an independent transcription of the
source's formula written here (from the source's code, cited at each test; nothing of the method is
imported for it), and the trainable parameters are the source's.

The transcriptions compute from the logits as the sources do (``model(...).logits``, log-softmax,
``gather``, ``CrossEntropyLoss``) and keep the sources' reductions (per token, per sequence, per batch).
Before the loss, the trainable weights are moved off the reference (seeded noise), so that terms that
compare the model with the model before unlearning (NPO, KL, DPO, UNDIAL, RMU) are not at their
trivial point. Where the source would also count padding positions, the batch has one length.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from lumebench.data.records import Row
from lumebench.methods.base import UnlearnContext, collate
from lumebench.methods.data import tokenize_rows
from lumebench.methods.params import apply_selection, num_layers
from lumebench.models.tiny import TinyConfig, build_model, build_tokenizer
from lumebench.pipeline.unlearn_config import resolve_config
from lumebench.registry import METHODS

from test_methods import ROWS  # the same six forget/retain-like rows as the method tests  # noqa: E402
N_LAYERS = 10
TOL = dict(rel=1e-5, abs=1e-5)  # float32 sums of terms of size ~6


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer([q + " " + a for q, a in ROWS], vocab_size=300)


@pytest.fixture(scope="module")
def examples(tok):
    rows = [Row.from_fields(f"{100 + i}qa{i % 2}", "Task3", "forget", q, a) for i, (q, a) in enumerate(ROWS)]
    return tokenize_rows(rows, tok)


def _model(tok):
    torch.manual_seed(0)
    return build_model(tok, TinyConfig(hidden_size=32, num_layers=N_LAYERS, num_heads=2, intermediate_size=64,
                                       max_position=128, seed=0))


class Case:
    """One method under ``original`` on the fixed model: the method's loss and gradient, a frozen copy
    of the model before unlearning, and the batches."""

    def __init__(self, name, tok, examples, overrides=None, forget=(0, 1, 2), retain=(3, 4, 5)):
        self.method, self.cfg = resolve_config(name, {"preset": "original", **(overrides or {})})
        model = _model(tok)
        if not self.cfg.lora and self.cfg.layers is None and self.cfg.params is None:
            for key, value in self.method.default_selection(num_layers(model)).items():
                setattr(self.cfg, key, value)
        self.model, self.names = apply_selection(model, self.cfg.selection())
        self.model.eval()  # no LoRA dropout: a loss is a function of the weights
        self.ref = copy.deepcopy(self.model)
        self.forget_ex = [examples[i] for i in forget]
        self.retain_ex = [examples[i] for i in retain]
        self.ctx = UnlearnContext(model=self.model, forget=examples, retain=examples, pad_id=tok.pad_token_id,
                                  lora=self.cfg.lora, tokenizer=tok, batch_size=4)
        self.method.setup(self.ctx)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():  # off the reference (LoRA's B is 0 at the start: the adapter moves)
            for n, p in self.model.named_parameters():
                if p.requires_grad:
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
        self.F = collate(self.forget_ex, tok.pad_token_id)
        self.R = collate(self.retain_ex, tok.pad_token_id)

    def params(self):
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def grads(self, loss):
        for _, p in self.params():
            p.grad = None
        loss.backward()
        return {n: p.grad.detach().clone() for n, p in self.params()}

    def method_loss(self, forget=None, retain=None):
        loss, _ = self.method.loss(self.ctx, self.F if forget is None else forget, self.R if retain is None else retain)
        return loss

    def check(self, transcription, **batches):
        """The method's loss and gradient equal the transcription's (``transcription()`` -> loss)."""
        ours = self.method_loss(**batches)
        g_ours = self.grads(ours)
        theirs = transcription()
        g_theirs = self.grads(theirs)
        assert ours.item() == pytest.approx(theirs.item(), **TOL)
        assert g_ours.keys() == g_theirs.keys()
        for n in g_ours:
            assert torch.allclose(g_ours[n], g_theirs[n], rtol=1e-4, atol=1e-7), n
        return ours.item()


# ----------------------------------------------------------------------------- transcriptions' pieces

def logits_of(model, batch):
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()


def hf_loss(model, batch):
    """``model(input_ids, labels=labels).loss``: CrossEntropyLoss (mean over the non -100 shifted labels)."""
    logits = logits_of(model, batch)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1),
                           ignore_index=-100)


def get_batch_loss(logits, labels):
    """TOFU ``data_module.py`` ``get_batch_loss``: the summed CE of each sequence (reduction none, sum)."""
    return F.cross_entropy(logits[:, :-1].transpose(-1, -2), labels[:, 1:], ignore_index=-100,
                           reduction="none").sum(-1)


def tofu_kl(model, ref, batch):
    """TOFU ``KL`` (dataloader.py l. 123-131): kl_div over every position, ``batchmean``."""
    cur = F.log_softmax(logits_of(model, batch), -1).view(-1, model.config.vocab_size)
    with torch.no_grad():
        old = F.log_softmax(logits_of(ref, batch), -1).view(-1, model.config.vocab_size)
    return F.kl_div(cur, old, reduction="batchmean", log_target=True)


def all_params(model):
    return {n for n, _ in model.named_parameters()}


# ----------------------------------------------------------------------------- paper baselines

def test_ga_fidelity_tofu_grad_ascent(tok, examples):
    # locuslab/tofu dataloader.py l. 93-99: loss = -outputs.loss (forget)
    c = Case("ga", tok, examples)
    c.check(lambda: -hf_loss(c.model, c.F))
    assert set(c.names) == all_params(c.model)  # full fine-tuning (LoRA r 0)


def test_gd_fidelity_tofu_grad_diff(tok, examples):
    # dataloader.py l. 101-111: -outputs_f.loss + outputs_r.loss
    c = Case("gd", tok, examples)
    c.check(lambda: -hf_loss(c.model, c.F) + hf_loss(c.model, c.R))
    assert set(c.names) == all_params(c.model)


def test_kl_fidelity_tofu_kl_over_every_position(tok, examples):
    # dataloader.py l. 113-132: -outputs_f.loss + kl_div(current, oracle, batchmean) over all positions
    c = Case("kl", tok, examples, retain=(3,))  # one retain row: no padding position in the mean
    c.check(lambda: -hf_loss(c.model, c.F) + tofu_kl(c.model, c.ref, c.R))
    assert set(c.names) == all_params(c.model)


def _npo(model, ref, batch, beta):
    """NPO authors' TOFU/dataloader.py l. 255-270: -logsigmoid(beta*(l_cur - l_oracle)).mean()*2/beta."""
    cur = get_batch_loss(logits_of(model, batch), batch["labels"])
    with torch.no_grad():
        old = get_batch_loss(logits_of(ref, batch), batch["labels"])
    return -F.logsigmoid(beta * (cur - old)).mean() * 2 / beta


def test_npo_fidelity_per_sequence(tok, examples):
    c = Case("npo", tok, examples)
    c.check(lambda: _npo(c.model, c.ref, c.F, 0.1))
    assert set(c.names) == all_params(c.model)


def test_npo_rt_fidelity_npo_grad_diff(tok, examples):
    # l. 272-291: npo_coeff 1 * NPO + grad_diff_coeff 1 * outputs_r.loss
    c = Case("npo_rt", tok, examples)
    c.check(lambda: 1.0 * _npo(c.model, c.ref, c.F, 0.1) + 1.0 * hf_loss(c.model, c.R))


def test_npo_kl_fidelity_npo_kl_over_every_position(tok, examples):
    # l. 293-320: npo_coeff 1 * NPO + KL_coeff 1 * kl_div(current, oracle, batchmean) over all positions
    c = Case("npo_kl", tok, examples, retain=(5,))
    c.check(lambda: _npo(c.model, c.ref, c.F, 0.1) + tofu_kl(c.model, c.ref, c.R))


def test_simnpo_fidelity_authors_weighting(tok, examples):
    # OPTML-Group/Unlearn-Simple TOFU/dataloader.py l. 278-289 (simnpo_grad_diff), forget10: npo_coeff
    # 0.125, beta 4.5, gamma 0, grad_diff_coeff 1
    c = Case("simnpo", tok, examples)

    def simnpo_grad_diff():
        loss_mask = c.F["labels"] != -100
        forget_loss = get_batch_loss(logits_of(c.model, c.F), c.F["labels"]) / loss_mask.sum(-1) - 0.0
        forget_loss = -F.logsigmoid(4.5 * forget_loss).mean() * 2 / 4.5
        return 0.125 * forget_loss + 1.0 * hf_loss(c.model, c.R)

    value = c.check(simnpo_grad_diff)
    assert set(c.names) == all_params(c.model)
    # the default is the authors' weighting too; lumebench's weighting before issue 24 (coefficient on
    # the retain term) is not, and this test tells them apart
    default, _ = resolve_config("simnpo", {})
    assert (default.hp.npo_coeff, default.hp.alpha) == (0.125, 1.0)
    c.method, _ = resolve_config("simnpo", {"preset": "lumebench"})
    assert abs(c.method_loss().item() - value) > 1e-3


def test_idk_dpo_fidelity_openunlearning_dpo(tok, examples):
    # locuslab/open-unlearning src/trainer/utils.py compute_dpo_loss l. 47-67 (win = the refusal, lose =
    # the forget answer, summed NLLs l. 34-44), dpo.py l. 32: gamma 1 * DPO + alpha 1 * NLL(retain)
    c = Case("idk_dpo", tok, examples)
    idk = collate([c.method.idk[e.index] for e in c.forget_ex], tok.pad_token_id)

    def dpo():
        win = get_batch_loss(logits_of(c.model, idk), idk["labels"])
        lose = get_batch_loss(logits_of(c.model, c.F), c.F["labels"])
        with torch.no_grad():
            win_ref = get_batch_loss(logits_of(c.ref, idk), idk["labels"])
            lose_ref = get_batch_loss(logits_of(c.ref, c.F), c.F["labels"])
        loss = -2 / 0.1 * F.logsigmoid(0.1 * (-(win - win_ref) - -(lose - lose_ref))).mean()
        return 1.0 * loss + 1.0 * hf_loss(c.model, c.R)

    c.check(dpo)


def test_undial_fidelity_adjusted_teacher(tok, examples):
    # open-unlearning compute_undial_loss l. 70-99: soft label softmax(teacher - beta * onehot(y)),
    # CrossEntropyLoss against it; averaged here over the answer positions (the paper's loss; the port
    # also averages over prompt and padding positions, documented in methods/undial.py)
    c = Case("undial", tok, examples)

    def undial():
        labels = c.F["labels"][:, 1:]
        keep = labels != -100
        logits = logits_of(c.model, c.F)[:, :-1][keep]
        with torch.no_grad():
            teacher = logits_of(c.ref, c.F)[:, :-1][keep]
        mask = torch.zeros_like(teacher)
        mask[torch.arange(len(teacher)), labels[keep]] = 1.0
        soft = F.softmax(teacher - mask * 10.0, dim=-1)
        return F.cross_entropy(logits, soft)

    c.check(undial)


def test_rmu_fidelity_wmdp_recipe(tok, examples):
    # WMDP RMU (Li et al. 2024 App. B): MSE(h_L(forget), c*u) + alpha * MSE(h_L(retain), h_L^ref(retain)),
    # L = 7, c 6.5, alpha 1200; only layers 5-7 mlp.down_proj train (wmdp rmu/unlearn.py l. 26).
    # One-length batches: the MSE means run over every position as in the source.
    c = Case("rmu", tok, examples, forget=(1,), retain=(3,))
    gen = torch.Generator().manual_seed(0)  # the direction's seed (direction_seed 0)
    u = torch.rand(c.model.config.hidden_size, generator=gen)
    control = 6.5 * u / u.norm()

    def layer_out(model, batch):
        return model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           output_hidden_states=True).hidden_states[7 + 1]

    def rmu():
        forget = F.mse_loss(layer_out(c.model, c.F), control.expand_as(layer_out(c.ref, c.F)))
        with torch.no_grad():
            frozen = layer_out(c.ref, c.R)
        return forget + 1200.0 * F.mse_loss(layer_out(c.model, c.R), frozen)

    c.check(rmu)
    assert set(c.names) == {f"model.layers.{i}.mlp.down_proj.weight" for i in (5, 6, 7)}


def test_task_vector_fidelity_negation(tok, examples):
    # Ilharco et al. 2023 §3: fine-tune on the forget set (NLL), then theta0 - lambda * (theta_ft - theta0)
    c = Case("task_vector", tok, examples)
    c.check(lambda: hf_loss(c.model, c.F))
    name, p = c.params()[3]
    theta0, theta = dict(c.ref.named_parameters())[name].detach().clone(), p.detach().clone()
    c.method.finalize(c.ctx)
    assert torch.allclose(p.detach(), theta0 - 1.0 * (theta - theta0), atol=1e-7)


# ----------------------------------------------------------------------------- SemEval-2025 winners

def test_ails_ntua_fidelity_per_example_factor_and_chunk_restarts(tok, examples):
    # iraklis07/llm-unlearning methods/sequential.py l. 108-130: batch 1, loss = mean token CE of the
    # example x factor (-1 forget, +0.5 retain), .mean() over the batch of one
    c = Case("ails_ntua", tok, examples)
    one_f = collate([examples[0]], tok.pad_token_id)
    one_r = collate([examples[4]], tok.pad_token_id)
    # two chunks of 2 forget examples (chunk_size 2 here, 32 in the recipe), 2 passes each
    chunked, _ = resolve_config("ails_ntua", {"preset": "original", "chunk_size": 2})
    plan = chunked.schedule(examples[:4], examples[2:], batch_size=1, retain_batch_size=1,
                            pad_id=tok.pad_token_id, seed=0, epochs=2)
    first = plan.batch(0)  # the source's order: a forget example first, then its 7 retain examples
    assert (first["forget"]["labels"] != -100).any() and (first["retain"]["labels"] == -100).all()

    def factor_loss(batch, factor):
        logits = logits_of(c.model, batch)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1),
                               reduction="none").view(len(logits), -1)
        valid = (batch["labels"][:, 1:] != -100).sum(-1).float()
        return (loss.sum(-1) / valid * factor).mean()

    c.check(lambda: factor_loss(one_f, -1.0), forget=one_f, retain=first["retain"])
    c.check(lambda: factor_loss(one_r, 0.5), forget=plan.batch(1)["forget"], retain=one_r)
    # AdvSupervisedDataset (l. 33-49): per chunk, forget example then 7 retain; the same slice of the
    # cycled retain stream in each pass over the chunk (one Trainer per chunk, l. 294-348)
    kinds = ["F" if (plan.batch(k)["forget"]["labels"] != -100).any() else "R" for k in range(16)]
    assert kinds == (["F"] + ["R"] * 7) * 2
    assert plan.total == 64 and plan.restarts == [0, 32]  # 16 items a pass, 2 passes a chunk
    assert torch.equal(plan.batch(1)["retain"]["input_ids"], plan.batch(17)["retain"]["input_ids"])
    assert not torch.equal(plan.batch(1)["retain"]["input_ids"], plan.batch(33)["retain"]["input_ids"])
    # a fresh linear schedule per chunk: the lr multiplier restarts at 1 at step 32
    from lumebench.train.prepare import lr_lambda
    f = lr_lambda(64, 0.0, "linear", plan.restarts)
    assert f(0) == 1.0 and f(31) == pytest.approx(1 / 32) and f(32) == 1.0 and f(63) == pytest.approx(1 / 32)
    # SUGD.ipynb cell 15: only the layers below the last k=8 are frozen; embeddings, norm, head train
    frozen_layers = {f"model.layers.{i}." for i in range(N_LAYERS - 8)}
    assert set(c.names) == {n for n in all_params(c.model) if not any(n.startswith(x) for x in frozen_layers)}


def _token_logprob(logits, ids):
    return F.log_softmax(logits[:, :-1, :], dim=-1).gather(2, ids[:, 1:].unsqueeze(-1))


def test_atyaephyra_fidelity_per_token_npo(tok, examples):
    # XelfXendr/peft_unlearning src/models/unlearning_model.py train_step l. 110-163 on one batch of 4
    # (2 forget + 2 retain rows), reference = the same model with the adapter off
    c = Case("atyaephyra", tok, examples, forget=(0, 2), retain=(3, 5))

    def train_step_loss():
        logprob = {}
        for kind, batch in (("f", c.F), ("r", c.R)):
            with torch.no_grad(), c.model.disable_adapter():
                ref = _token_logprob(logits_of(c.model, batch), batch["input_ids"])
            cur = _token_logprob(logits_of(c.model, batch), batch["input_ids"])
            answer = batch["labels"][:, 1:] != -100  # answer_mask[:, 1:] == 1
            logprob[kind] = (cur[answer], ref[answer])
        lp, ref_lp = logprob["f"]
        npo = -F.logsigmoid(0.5 * (ref_lp - lp)).mean() * 2 / 0.5
        r_lp, r_ref = logprob["r"]
        retain = -r_lp.mean()
        kl = F.kl_div(r_lp, r_ref, reduction="batchmean", log_target=True)
        return 1.0 * npo + 1.0 * retain + 0.5 * kl

    value = c.check(train_step_loss)
    # per token, not per sequence: lumebench's earlier NPO (summed NLL per example) gives another loss
    c.method.hp.npo_reduction = "sequence"
    assert abs(c.method_loss().item() - value) > 1e-3
    # LoRA on q_proj / v_proj only (lora_model.py l. 12), r = alpha = 5 (unlearn.py l. 55-56)
    assert set(c.names) == {n for n in all_params(c.model)
                            if ("lora_A" in n or "lora_B" in n) and ("q_proj" in n or "v_proj" in n)}
    assert len(c.names) == 2 * 2 * N_LAYERS
    lora = [m for m in c.model.modules() if hasattr(m, "lora_A") and "default" in m.lora_A]
    assert {m.r["default"] for m in lora} == {5} and {m.scaling["default"] for m in lora} == {1.0}
    # Adam at a constant lr 1e-4 without clipping, 20 epochs of batches of 4 drawn from both sets
    assert (c.cfg.train.lr, c.cfg.train.lr_schedule, c.cfg.train.warmup_ratio, c.cfg.train.weight_decay,
            c.cfg.train.max_grad_norm, tuple(c.cfg.train.adam_betas)) == (1e-4, "constant", 0.0, 0.0, None, (0.9, 0.999))
    plan = c.method.schedule(examples[:3], examples[3:], batch_size=4, retain_batch_size=4, pad_id=0, seed=0,
                             epochs=20)
    assert plan.per_epoch == 2 and plan.total == 40


def test_sha256_fidelity_mlp_layers_and_epoch_baseline(tok, examples):
    # LAB-FLAIR/Constrained-Unlearning-for-LLM unlearn.py compute_loss l. 152-228
    c = Case("sha256", tok, examples)

    def ce(batch):  # CrossEntropyLoss() over the shifted labels (l. 171-180 / 193-202)
        logits = logits_of(c.model, batch)
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1))

    state = {"sum": 0.0, "n": 0, "prev": 0.0}

    def source_loss(epoch):
        neg = ce(c.F) * -1
        loss = ce(c.R)
        multiplier = 1.2
        if epoch == 0:
            state["sum"] += loss.item()
            state["n"] += len(c.R["labels"])
            state["prev"] = state["sum"] / state["n"]
        elif loss.item() > state["prev"]:
            change = loss.item() - state["prev"]
            multiplier = min(max(round((0.3 * (6 ** change) + 0.8), 1), 1.2), 2.3)
        return neg + loss * multiplier

    for epoch in (0, 0, 1):
        f = dict(c.F, epoch=torch.tensor(epoch))
        r = dict(c.R, epoch=torch.tensor(epoch))
        # the method keeps its own baseline: call it once per batch, as training does
        ours = c.method_loss(forget=f, retain=r)
        g_ours = c.grads(ours)
        theirs = source_loss(epoch)
        g_theirs = c.grads(theirs)
        assert ours.item() == pytest.approx(theirs.item(), **TOL)
        for n in g_ours:
            assert torch.allclose(g_ours[n], g_theirs[n], rtol=1e-4, atol=1e-7), n
    assert c.method.baseline == pytest.approx(state["prev"])
    # l. 284-294 with --trainable_layers [0..5] --train_kind mlp (l. 349-350)
    expected = set()
    for k, _ in c.model.named_parameters():
        parts = k.split(".")
        if len(parts) > 3 and parts[2].isdigit() and int(parts[2]) in range(6) and parts[3] == "mlp":
            expected.add(k)
    assert set(c.names) == expected and len(expected) == 6 * 3
    assert (c.cfg.train.batch_size * c.cfg.train.grad_accum, c.cfg.train.lr, c.cfg.train.epochs) == (120, 1.5e-5, 8)
    # DataGenerator (l. 34-43): the input as a user turn in the chat template with the generation
    # prompt, then tokenizer(output); the loss mask covers the output only (lumebench adds an EOS)
    assert c.cfg.prompt_format == "chat"
    chat_tok = build_tokenizer([q + " " + a for q, a in ROWS], vocab_size=300)
    chat_tok.chat_template = ("{% for m in messages %}<|user|> {{ m['content'] }}{% endfor %}"
                              "{% if add_generation_prompt %} <|assistant|>{% endif %}")
    row = Row.from_fields("100qa0", "Task3", "forget", *ROWS[1])
    ex = tokenize_rows([row], chat_tok, prompt_format=c.cfg.prompt_format)[0]
    inp = list(chat_tok.apply_chat_template([{"role": "user", "content": ROWS[1][0]}], tokenize=True,
                                            add_generation_prompt=True, return_dict=True)["input_ids"])
    out = chat_tok(ROWS[1][1])["input_ids"]
    assert list(ex.ids) == inp + out + [chat_tok.eos_token_id] and ex.n_target == len(out) + 1


def test_zjuklab_fidelity_weights_pooled_npo_all_position_kl(tok, examples):
    # zjunlp/unlearn semeval25/unlearn-merging.py compute_loss l. 199-252, the two runs' weights
    # (l. 541-543, 562-564); one retain row: no padding position in the KL's mean
    for part, (a, b, cc) in ((0, (0.4, 0.4, 0.2)), (1, (0.3, 0.3, 0.4))):
        c = Case("zjuklab", tok, examples, overrides={"part": part}, retain=(4,))

        def compute_loss():
            def mean_ce(model, batch):  # get_batch_loss with num_items_in_batch None: the mean (l. 425-442)
                logits = logits_of(model, batch)
                return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                       batch["labels"][:, 1:].reshape(-1), ignore_index=-100)
            with torch.no_grad(), c.model.disable_adapter():
                f_ref = mean_ce(c.model, c.F)
                r_ref = F.log_softmax(logits_of(c.model, c.R), -1).view(-1, c.model.config.vocab_size)
            r_cur = F.log_softmax(logits_of(c.model, c.R), -1).view(-1, c.model.config.vocab_size)
            kl_r = F.kl_div(r_cur, r_ref, reduction="batchmean", log_target=True)
            loss_npo = -F.logsigmoid(0.1 * (mean_ce(c.model, c.F) - f_ref)).mean() * 2 / 0.1
            return a * loss_npo + b * kl_r + cc * hf_loss(c.model, c.R)

        c.check(compute_loss)
        # LoRA r 32, alpha 32, dropout 0.05 on every Linear but lm_head (find_all_linear_names, l. 414-423)
        plain = _model(tok)
        linear = {n.split(".")[-1] for n, m in plain.named_modules()
                  if isinstance(m, torch.nn.Linear) and n != "lm_head"}
        adapted = {n.split(".")[-1] for n, m in c.model.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A}
        assert adapted == linear == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
        assert set(c.names) == {n for n in all_params(c.model) if "lora_A" in n or "lora_B" in n}
        lora = [m for m in c.model.modules() if hasattr(m, "lora_A") and "default" in m.lora_A]
        assert len(lora) == 7 * N_LAYERS and {m.r["default"] for m in lora} == {32}
        assert {m.scaling["default"] for m in lora} == {1.0}
        assert {m.lora_dropout["default"].p for m in lora} == {0.05}
        assert c.method.part_overrides({}, part)["batch_size"] == (4, 8)[part]


def test_zjuklab_fidelity_ties_on_lora_factors():
    # peft add_weighted_adapter(..., "ties", density=0.8) as unlearn-merging.py l. 607-614 calls it:
    # TIES on the A factors and on the B factors (weights sqrt(w * scaling)), merged adapter scaling 1
    from lumebench.methods.zjuklab import ties_on_factors

    torch.manual_seed(0)

    class Layer:  # a LoRA module's parts as peft holds them
        def __init__(self):
            self.lora_A = {n: torch.nn.Linear(6, 4, bias=False) for n in ("part0", "part1")}
            self.lora_B = {n: torch.nn.Linear(4, 5, bias=False) for n in ("part0", "part1")}
            self.scaling = {"part0": 1.0, "part1": 1.0}

    layer = Layer()
    for lin in [*layer.lora_A.values(), *layer.lora_B.values()]:
        torch.nn.init.normal_(lin.weight)

    def ties(tensors, weights, density):  # Yadav et al. 2023: trim, elect sign (of the sum), disjoint mean
        trimmed = []
        for t in tensors:
            k = int(density * t.numel())
            keep = t.abs().flatten().topk(k).indices
            m = torch.zeros(t.numel())
            m[keep] = 1
            trimmed.append(t * m.view_as(t))
        stacked = torch.stack(trimmed)
        sign = torch.where(stacked.sum(0) >= 0, 1.0, -1.0)
        agree = stacked.sign() == sign
        weighted = stacked * torch.tensor(weights).view(-1, 1, 1)
        return (weighted * agree).sum(0) / agree.sum(0).clamp(min=1)

    w = [math.sqrt(1.0), math.sqrt(1.0)]
    a = ties([layer.lora_A[n].weight.detach() for n in ("part0", "part1")], w, 0.8)
    b = ties([layer.lora_B[n].weight.detach() for n in ("part0", "part1")], w, 0.8)
    merged = ties_on_factors(layer, ["part0", "part1"], [1.0, 1.0], 0.8)
    assert torch.allclose(merged, b @ a, atol=1e-6)
    # not TIES on the full updates B·A: the two differ
    delta = ties([layer.lora_B[n].weight.detach() @ layer.lora_A[n].weight.detach() for n in ("part0", "part1")],
                 [1.0, 1.0], 0.8)
    assert not torch.allclose(merged, delta, atol=1e-3)


def test_every_registered_method_has_a_fidelity_test_and_an_original_preset():
    import lumebench.methods.catalog  # noqa: F401
    import sys

    tested = {n.split("_fidelity")[0].removeprefix("test_") for n in dir(sys.modules[__name__])
              if n.startswith("test_") and "_fidelity" in n}
    ported = {"ga", "gd", "kl", "npo", "npo_rt", "npo_kl", "simnpo", "idk_dpo", "undial", "rmu", "task_vector",
              "ails_ntua", "atyaephyra", "sha256", "zjuklab"}
    assert ported <= tested
    for name in ported:
        cls = METHODS.get(name)
        assert cls.source and "original" in cls.preset_defaults, name
