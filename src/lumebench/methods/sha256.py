"""SHA256 (SemEval-2025 Task 4, 1B track 2nd; Agrawal & Huang 2025, "SHA256 at SemEval-2025 Task 4:
Selective Amnesia – Constrained Unlearning for Large Language Models via Knowledge Isolation").

Causal tracing located the memorised associations in the first layers, so only decoder layers 0–5
are updated (clipped to the model's depth), with gradient difference whose retain weight adapts to
how far the retain loss has drifted:

    L = −NLL̄(forget) + α·NLL̄(retain),   α = clip(a·b^ΔL + c, α_min, α_max)

ΔL is read here as the *loss gap* of the retain batch: its NLL̄ now minus its NLL̄ under the model
before unlearning (cached once), so α rises as retain knowledge starts to go. α is a constant
(detached) within a step.
"""

from __future__ import annotations

from dataclasses import dataclass

from lumebench.methods.base import Method, forget_ascent, sequence_nll
from lumebench.registry import METHODS


@dataclass
class SHA256Hparams:
    a: float = 0.3           # γ = a·b^ΔL + c (SHA256 paper)
    b: float = 6.0           # (ibid.)
    c: float = 0.8           # (ibid.)
    alpha_min: float = 1.2   # α clipped to [α_min, α_max] (ibid.)
    alpha_max: float = 2.8   # (ibid.)
    last_layer: int = 5      # layers 0..5 are updated (ibid., found by causal tracing on OLMo 1B/7B)


@METHODS.register("sha256", help="SHA256 (SemEval-25 1B 2nd): layers 0-5 only, -NLL(forget) + "
                                 "alpha*NLL(retain) with alpha adapted to the retain loss gap")
class SHA256(Method):
    Hparams = SHA256Hparams

    def default_selection(self, n_layers: int) -> dict:
        return {"layers": f"0-{min(self.hp.last_layer, n_layers - 1)}"}

    def setup(self, ctx):
        super().setup(ctx)
        ctx.cached_reference_nll("retain")

    def retain_weight(self, gap: float) -> float:
        return min(self.hp.alpha_max, max(self.hp.alpha_min, self.hp.a * self.hp.b ** gap + self.hp.c))

    def loss(self, ctx, forget, retain):
        loss_f, nll_f = forget_ascent(ctx.model, forget)
        ell, n_tok = sequence_nll(ctx.model, retain)
        nll_r = ell.sum() / n_tok.sum().clamp(min=1)
        ref = ctx.cached_reference_nll("retain")[retain["index"].cpu()].sum() / n_tok.sum().clamp(min=1).cpu()
        gap = float(nll_r.detach().cpu()) - float(ref)
        alpha = self.retain_weight(gap)
        return loss_f + alpha * nll_r, {"forget_nll": nll_f, "retain_nll": float(nll_r.detach()),
                                        "loss_gap": gap, "alpha": alpha}
