"""KL — gradient ascent on forget + KL(p_ref ‖ p_θ) on the retain target tokens (LUME baseline; TOFU's
``KL``). p_ref is the model before unlearning: the base with the adapter disabled under LoRA, a frozen
copy otherwise (see :class:`~lumebench.methods.base.UnlearnContext`).

TOFU (locuslab/tofu ``dataloader.py`` l. 113-132, preset ``original``) takes the KL over *every*
position of the retain batch (``log_softmax(...).view(-1, V)``, ``kl_div(..., "batchmean")``),
prompt included (``kl_on="all"``; TOFU also counts its right-padding positions up to its fixed
length, lumebench only the real tokens); lumebench's default (``kl_on="target"``) over the answer
tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lumebench import checks
from lumebench.checks import setting
from lumebench.methods.base import TOFU_TRAINER, Method, forget_ascent, later, retain_kl
from lumebench.registry import METHODS


@dataclass
class KLHparams:
    alpha: float = setting(1.0, checks.nonnegative)  # weight of the retain KL term; 1 in the LUME baseline and TOFU
    kl_on: str = later("target", checks.one_of("target", "all"))  # "target": answer tokens (lumebench); "all": every position (TOFU l. 123-131)


@METHODS.register("kl", help="-NLL(forget) + alpha*KL(p_ref||p) on retain")
class KLMinimisation(Method):
    Hparams = KLHparams
    needs_reference_model = True
    source: ClassVar[str] = "locuslab/tofu dataloader.py (KL, l. 113-132); Maini et al. 2024 (TOFU); LUME baseline"
    preset_defaults: ClassVar[dict] = {"original": {**TOFU_TRAINER, "alpha": 1.0, "kl_on": "all"}, "lumebench": {}}

    def loss(self, ctx, forget, retain):
        loss_f, nll_f = forget_ascent(ctx.model, forget)
        kl, kl_v = retain_kl(ctx, retain, self.hp.kl_on)
        return loss_f + self.hp.alpha * kl, {"forget_nll": nll_f, "retain_kl": kl_v}
