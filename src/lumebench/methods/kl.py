"""KL — gradient ascent on forget + KL(p_ref ‖ p_θ) on the retain target tokens (LUME baseline; TOFU's
``KL``). p_ref is the model before unlearning: the base with the adapter disabled under LoRA, a frozen
copy otherwise (see :class:`~lumebench.methods.base.UnlearnContext`)."""

from __future__ import annotations

from dataclasses import dataclass

from lumebench.methods.base import Method, forget_ascent, retain_kl
from lumebench.registry import METHODS


@dataclass
class KLHparams:
    alpha: float = 1.0  # weight of the retain KL term; 1 in the LUME baseline and TOFU


@METHODS.register("kl", help="-NLL(forget) + alpha*KL(p_ref||p) on retain")
class KLMinimisation(Method):
    Hparams = KLHparams
    needs_reference_model = True

    def loss(self, ctx, forget, retain):
        loss_f, nll_f = forget_ascent(ctx.model, forget)
        kl, kl_v = retain_kl(ctx, retain)
        return loss_f + self.hp.alpha * kl, {"forget_nll": nll_f, "retain_kl": kl_v}
