"""NPO + retain KL (Zhang et al. 2024 "NPO-KL"; TOFU's npo_KL): L_NPO + α·KL(p_ref ‖ p_θ) on retain."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lumebench import checks
from lumebench.checks import setting
from lumebench.methods.base import NPO_TRAINER, later, retain_kl
from lumebench.methods.npo import NPO
from lumebench.registry import METHODS


@dataclass
class NPOKLHparams:
    beta: float = setting(0.1, checks.positive_float)   # as NPO
    alpha: float = setting(1.0, checks.nonnegative)  # retain KL weight; 1 in the NPO paper (NPO-KL) and TOFU
    kl_on: str = later("target", checks.one_of("target", "all"))  # "target": answer tokens (lumebench); "all": every position (the source, l. 309-319)


@METHODS.register("npo_kl", help="NPO + alpha*KL(p_ref||p) on retain")
class NPOKL(NPO):
    Hparams = NPOKLHparams
    needs_reference_model = True
    source: ClassVar[str] = ("licong-lin/negative-preference-optimization TOFU/dataloader.py (npo_KL, l. 293-320); "
                             "Zhang et al. 2024")
    #: npo_coeff 1 · NPO + KL_coeff 1 · KL over every position of the retain batch (l. 309-320;
    #: forget.yaml l. 16, 18), β 0.1 (l. 20)
    preset_defaults: ClassVar[dict] = {"original": {**NPO_TRAINER, "beta": 0.1, "alpha": 1.0, "kl_on": "all"},
                                       "lumebench": {}}

    def loss(self, ctx, forget, retain):
        loss, logs = self.npo_term(ctx, forget)
        kl, logs["retain_kl"] = retain_kl(ctx, retain, self.hp.kl_on)
        return loss + self.hp.alpha * kl, logs
