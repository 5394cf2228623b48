"""Atyaephyra (SemEval-2025 Task 4, 1B track 3rd; Bronec & Helcl 2025, "Atyaephyra at SemEval-2025 Task 4:
Low-Rank Negative Preference Optimization"): NPO on a LoRA adapter whose reference model is the base
with the adapter disabled (no second model copy), regularised on retain by NLL and KL:

    L = L_NPO(β) + λ_nll·NLL̄(retain) + λ_kl·KL(retain)

The source (XelfXendr/peft_unlearning, ``src/models/unlearning_model.py`` ``train_step`` l. 110-167,
``src/unlearn.py`` arguments l. 32-56, ``src/models/lora_model.py``, ``src/unlearn_loading/
dataset_loading.py``) is reproduced by the preset ``original``; lumebench's default variant
(preset ``lumebench`` = the defaults) differs in:

- ``npo_reduction``: the source's NPO is **per token** — −(2/β)·mean_t log σ(β·(log π_ref(y_t) −
  log π_θ(y_t))) over every forget answer token of the batch (l. 126-145); lumebench's default is
  NPO's per-sequence form (summed NLL per example), whose weight σ(−β·Δℓ) collapses at β 0.5 long
  before the output changes.
- ``kl_form``: the source's "KL" is ``kl_div(log π_θ(y_t), log π_ref(y_t), batchmean, log_target)``
  on the *gathered answer-token log-probs* (l. 155-157), i.e. mean_t π_ref(y_t)·(log π_ref(y_t) −
  log π_θ(y_t)) — not a KL over the vocabulary; lumebench's default is the full-vocabulary KL over
  the retain answer tokens.
- ``mixed_batches``: batches of 4 drawn from forget and retain shuffled together (``pd.concat`` of
  both, ``DataLoader(shuffle=True)``, dataset_loading.py l. 36-44, 70-72); an empty share's term
  is 0 (``nan_to_num``, l. 145/153/157). One epoch = one pass over forget + retain.
- LoRA on ``q_proj`` / ``v_proj`` only (lora_model.py l. 12), r = α = 5 (unlearn.py l. 55-56,
  ``alpha = rank`` when not given, unlearning_model.py l. 31), no dropout; plain ``torch.optim.Adam``
  (unlearning_model.py l. 38: betas (0.9, 0.999), no weight decay) at a constant lr 1e-4 (unlearn.py
  l. 34), no schedule, no gradient clipping (l. 165-167), 20 epochs (l. 33).

Not reproduced: the source initialises LoRA's A with Xavier-normal (lora_linear.py l. 17; peft
uses Kaiming-uniform; B = 0 either way, so the starting model is the same), and tokenises
``tokenizer(input, output)`` as a text pair (answer tokens = the output's characters,
dataset_loading.py l. 19-30) where lumebench appends ``" " + output`` + EOS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F

from lumebench import checks
from lumebench.checks import setting
from lumebench.distributed import global_mean
from lumebench.methods.base import IGNORE, forward_logits, kl_to_reference, later, mean_nll
from lumebench.methods.npo import NPO
from lumebench.registry import METHODS


@dataclass
class AtyaephyraHparams:
    beta: float = setting(0.5, checks.positive_float)        # NPO inverse temperature (src/unlearn.py l. 36)
    nll_weight: float = setting(1.0, checks.nonnegative)  # retain NLL weight (rt_mult, unlearn.py l. 41-43)
    kl_weight: float = setting(0.5, checks.nonnegative)   # retain KL weight (kl_mult, unlearn.py l. 44-46)
    npo_weight: float = later(1.0, checks.nonnegative)            # NPO weight (npo_mult, unlearn.py l. 38-40)
    npo_reduction: str = later("sequence", checks.one_of("sequence", "token", "batch"))    # "sequence" (lumebench) or "token" (the source), see above
    kl_form: str = later("vocab", checks.one_of("vocab", "token"))             # "vocab" (lumebench) or "token" (the source's gathered log-probs)
    mixed_batches: bool = later(False)        # forget and retain shuffled together into each batch


def answer_token_kl(logits, ref_logits, labels):
    """The source's retain "KL": mean over the answer tokens of π_ref(y_t)·(log π_ref(y_t) − log π_θ(y_t))
    (``F.kl_div`` on the gathered log-probs of the answer tokens, ``reduction="batchmean"``)."""
    mask = labels[:, 1:] != IGNORE
    y = labels[:, 1:].clamp(min=0).unsqueeze(-1)
    lp = F.log_softmax(logits[:, :-1, :].float(), dim=-1).gather(2, y).squeeze(-1)
    lp_ref = F.log_softmax(ref_logits[:, :-1, :].float(), dim=-1).gather(2, y).squeeze(-1)
    return global_mean(lp_ref.exp() * (lp_ref - lp), mask)


@METHODS.register("atyaephyra", help="Atyaephyra (SemEval-25 1B 3rd): LoRA r=alpha=5 NPO(beta 0.5) "
                                     "+ 1.0 NLL + 0.5 KL on retain, reference = adapter off")
class Atyaephyra(NPO):
    Hparams = AtyaephyraHparams
    needs_reference_model = True  # under LoRA this is the adapter-disabled base: no copy
    source: ClassVar[str] = ("XelfXendr/peft_unlearning src/models/unlearning_model.py (train_step) + src/unlearn.py; "
                             "Bronec & Helcl 2025 (SemEval-2025 Task 4)")
    #: the method is a LoRA method: rank = alpha = 5 (ibid.)
    recipe: ClassVar[dict] = {"lora": True, "lora_r": 5, "lora_alpha": 5}
    #: lr 1e-4 (ibid.)
    trainer_defaults: ClassVar[dict] = {"lr": 1e-4}
    preset_defaults: ClassVar[dict] = {
        "original": {
            "beta": 0.5, "npo_weight": 1.0, "nll_weight": 1.0, "kl_weight": 0.5,  # unlearn.py l. 36-46
            "npo_reduction": "token", "kl_form": "token",  # unlearning_model.py l. 126-157
            "mixed_batches": True, "batch_size": 4,          # dataset_loading.py l. 36-44, 70-72; unlearn.py l. 32
            "epochs": 20,                                    # unlearn.py l. 33
            "lr": 1e-4, "lr_schedule": "constant", "warmup_ratio": 0.0,  # unlearn.py l. 34; no scheduler
            # torch.optim.Adam(params, lr) (unlearning_model.py l. 38): betas (0.9, 0.999), no weight
            # decay (= AdamW with decay 0); no clipping before optimizer.step() (l. 165-167)
            "adam_betas": [0.9, 0.999], "weight_decay": 0.0, "max_grad_norm": None,
            # LoRA on q_proj / v_proj (lora_model.py l. 12), r = alpha = 5 (unlearn.py l. 55-56), no dropout
            "lora": True, "lora_r": 5, "lora_alpha": 5, "lora_dropout": 0.0, "lora_targets": ["q_proj", "v_proj"],
        },
        "lumebench": {},
    }

    def schedule(self, forget, retain, *, batch_size, retain_batch_size, pad_id, seed, epochs):
        if not self.hp.mixed_batches:
            return None
        from lumebench.methods.data import MixedBatches

        return MixedBatches(forget, retain, batch_size, epochs, pad_id, seed)

    def loss(self, ctx, forget, retain):
        loss, logs = self.npo_term(ctx, forget)
        logits = forward_logits(ctx.model, retain)
        nll_r = mean_nll(ctx.model, retain, logits)
        if self.hp.kl_form == "token":
            kl = answer_token_kl(logits, ctx.reference_logits(retain), retain["labels"]) + logits.sum() * 0.0
        else:
            kl = kl_to_reference(logits, ctx.reference_logits(retain), retain["labels"])
        logs.update(retain_nll=float(nll_r.detach()), retain_kl=float(kl.detach()))
        return self.hp.npo_weight * loss + self.hp.nll_weight * nll_r + self.hp.kl_weight * kl, logs
