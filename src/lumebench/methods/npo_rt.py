"""NPO + retain NLL (Zhang et al. 2024 "NPO-RT"; TOFU's npo_grad_diff): L_NPO + α·NLL̄(retain)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lumebench import checks
from lumebench.checks import setting
from lumebench.methods.base import NPO_TRAINER, mean_nll
from lumebench.methods.npo import NPO
from lumebench.registry import METHODS


@dataclass
class NPORTHparams:
    beta: float = setting(0.1, checks.positive_float)   # as NPO
    alpha: float = setting(1.0, checks.nonnegative)  # retain NLL weight; 1 in the NPO paper (NPO-RT) and TOFU


@METHODS.register("npo_rt", help="NPO + alpha*NLL(retain)")
class NPORetain(NPO):
    Hparams = NPORTHparams
    source: ClassVar[str] = ("licong-lin/negative-preference-optimization TOFU/dataloader.py (npo_grad_diff, "
                             "l. 272-291); Zhang et al. 2024")
    #: npo_coeff 1 · NPO + grad_diff_coeff 1 · NLL̄(retain) (l. 291; forget.yaml l. 16-17), β 0.1 (l. 20)
    preset_defaults: ClassVar[dict] = {"original": {**NPO_TRAINER, "beta": 0.1, "alpha": 1.0}, "lumebench": {}}

    def loss(self, ctx, forget, retain):
        loss, logs = self.npo_term(ctx, forget)
        nll_r = mean_nll(ctx.model, retain)
        logs["retain_nll"] = float(nll_r.detach())
        return loss + self.hp.alpha * nll_r, logs
