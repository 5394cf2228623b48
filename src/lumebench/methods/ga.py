"""GA — gradient ascent on the forget set (Jang et al. 2023; LUME baseline): minimise −NLL̄(forget).

No hyperparameters: the only knobs are the trainer's (lr, epochs). The retain batch is ignored.
"""

from __future__ import annotations

from typing import ClassVar

from lumebench.methods.base import TOFU_TRAINER, Method, forget_ascent
from lumebench.registry import METHODS


@METHODS.register("ga", help="gradient ascent: minimise -NLL(forget)")
class GradientAscent(Method):
    source: ClassVar[str] = "locuslab/tofu dataloader.py (grad_ascent, l. 93-99); Jang et al. 2023; LUME baseline"
    #: TOFU's loss is the same (−outputs.loss, the mean token NLL of the forget batch, l. 96-98)
    preset_defaults: ClassVar[dict] = {"original": dict(TOFU_TRAINER), "lumebench": {}}

    def loss(self, ctx, forget, retain):
        loss, nll_f = forget_ascent(ctx.model, forget)
        return loss, {"forget_nll": nll_f}
