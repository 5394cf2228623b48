"""GD — gradient difference (Liu et al. 2022; LUME baseline): −NLL̄(forget) + α·NLL̄(retain)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lumebench import checks
from lumebench.checks import setting
from lumebench.methods.base import TOFU_TRAINER, Method, forget_ascent, mean_nll
from lumebench.registry import METHODS


@dataclass
class GDHparams:
    alpha: float = setting(1.0, checks.nonnegative)  # retain NLL weight; 1 in the LUME baseline and TOFU's grad_diff


@METHODS.register("gd", help="gradient difference: -NLL(forget) + alpha*NLL(retain)")
class GradientDifference(Method):
    Hparams = GDHparams
    source: ClassVar[str] = "locuslab/tofu dataloader.py (grad_diff, l. 101-111); Liu et al. 2022; LUME baseline"
    #: TOFU: −NLL̄(forget) + NLL̄(retain), weight 1 (l. 105-111)
    preset_defaults: ClassVar[dict] = {"original": {**TOFU_TRAINER, "alpha": 1.0}, "lumebench": {}}

    def loss(self, ctx, forget, retain):
        loss_f, nll_f = forget_ascent(ctx.model, forget)
        nll_r = mean_nll(ctx.model, retain)
        return loss_f + self.hp.alpha * nll_r, {"forget_nll": nll_f, "retain_nll": float(nll_r.detach())}
