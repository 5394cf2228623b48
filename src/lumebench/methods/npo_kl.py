"""NPO + retain KL (Zhang et al. 2024 "NPO-KL"; TOFU's npo_KL): L_NPO + α·KL(p_ref ‖ p_θ) on retain."""

from __future__ import annotations

from dataclasses import dataclass

from lumebench.methods.base import retain_kl
from lumebench.methods.npo import NPO
from lumebench.registry import METHODS


@dataclass
class NPOKLHparams:
    beta: float = 0.1   # as NPO
    alpha: float = 1.0  # retain KL weight; 1 in the NPO paper (NPO-KL) and TOFU


@METHODS.register("npo_kl", help="NPO + alpha*KL(p_ref||p) on retain")
class NPOKL(NPO):
    Hparams = NPOKLHparams
    needs_reference_model = True

    def loss(self, ctx, forget, retain):
        loss, logs = self.npo_term(ctx, forget)
        kl, logs["retain_kl"] = retain_kl(ctx, retain)
        return loss + self.hp.alpha * kl, logs
