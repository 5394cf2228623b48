"""GA — gradient ascent on the forget set (Jang et al. 2023; LUME baseline): minimise −NLL̄(forget).

No hyperparameters: the only knobs are the trainer's (lr, epochs). The retain batch is ignored.
"""

from __future__ import annotations

from lumebench.methods.base import Method, forget_ascent
from lumebench.registry import METHODS


@METHODS.register("ga", help="gradient ascent: minimise -NLL(forget)")
class GradientAscent(Method):
    def loss(self, ctx, forget, retain):
        loss, nll_f = forget_ascent(ctx.model, forget)
        return loss, {"forget_nll": nll_f}
