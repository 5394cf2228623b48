"""Atyaephyra (SemEval-2025 Task 4, 1B track 3rd; Bronec & Helcl 2025, "Atyaephyra at SemEval-2025 Task 4:
Low-Rank Negative Preference Optimization"): NPO on a LoRA adapter whose reference model is the base
with the adapter disabled (no second model copy), regularised on retain by NLL and KL:

    L = L_NPO(β) + λ_nll·NLL̄(retain) + λ_kl·KL(p_ref ‖ p_θ)(retain)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lumebench.methods.base import forward_logits, kl_to_reference, mean_nll
from lumebench.methods.npo import NPO
from lumebench.registry import METHODS


@dataclass
class AtyaephyraHparams:
    beta: float = 0.5        # NPO inverse temperature (Atyaephyra, SPEC.md §4)
    nll_weight: float = 1.0  # retain NLL weight (ibid.)
    kl_weight: float = 0.5   # retain KL weight (ibid.)


@METHODS.register("atyaephyra", help="Atyaephyra (SemEval-25 1B 3rd): LoRA r=alpha=5 NPO(beta 0.5) "
                                     "+ 1.0 NLL + 0.5 KL on retain, reference = adapter off")
class Atyaephyra(NPO):
    Hparams = AtyaephyraHparams
    needs_reference_model = True  # under LoRA this is the adapter-disabled base: no copy
    #: the method is a LoRA method: rank = alpha = 5 (ibid.)
    recipe: ClassVar[dict] = {"lora": True, "lora_r": 5, "lora_alpha": 5}
    #: lr 1e-4 (ibid.)
    trainer_defaults: ClassVar[dict] = {"lr": 1e-4}

    def loss(self, ctx, forget, retain):
        loss, logs = self.npo_term(ctx, forget)
        logits = forward_logits(ctx.model, retain)
        nll_r = mean_nll(ctx.model, retain, logits)
        kl = kl_to_reference(logits, ctx.reference_logits(retain), retain["labels"])
        logs.update(retain_nll=float(nll_r.detach()), retain_kl=float(kl.detach()))
        return loss + self.hp.nll_weight * nll_r + self.hp.kl_weight * kl, logs
