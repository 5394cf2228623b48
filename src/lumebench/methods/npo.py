"""NPO — negative preference optimisation (Zhang et al. 2024, "Negative Preference Optimization").

    L_NPO = (2/β)·mean log(1 + (π_θ(y|x)/π_ref(y|x))^β) = −(2/β)·mean log σ(β·(ℓ_θ − ℓ_ref))

with ℓ the *summed* NLL of the target tokens. ℓ_ref does not change during training: it is computed
once before training for every forget example (:meth:`UnlearnContext.cached_reference_nll`, also saved
in the run directory) and looked up by example index — not recomputed with a second forward pass per
step as most code bases do (see ``benchmarks/unlearn_speed.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lumebench.distributed import global_mean
from lumebench.methods.base import Method, sequence_nll, sequence_weights
from lumebench.registry import METHODS


@dataclass
class NPOHparams:
    beta: float = 0.1  # inverse temperature; 0.1 in the NPO paper's TOFU runs and the LUME baseline


def npo_loss(ell: "torch.Tensor", ell_ref: "torch.Tensor", beta: float,
             weights: "torch.Tensor | None" = None) -> "torch.Tensor":
    """−(2/β)·mean log σ(β·(ℓ_θ − ℓ_ref)). At ℓ_θ = ℓ_ref it equals (2/β)·log 2. The mean is over
    the global batch (``weights``: 0 for a placeholder row, see :func:`sequence_weights`)."""
    return -(2.0 / beta) * global_mean(F.logsigmoid(beta * (ell - ell_ref)), weights)


@METHODS.register("npo", help="negative preference optimisation on forget (beta=0.1)")
class NPO(Method):
    Hparams = NPOHparams

    def setup(self, ctx):
        super().setup(ctx)
        ctx.cached_reference_nll("forget")

    def npo_term(self, ctx, forget):
        ell, n_tok = sequence_nll(ctx.model, forget)
        ell_ref = ctx.cached_reference_nll("forget")[forget["index"].cpu()].to(ell.device)
        loss = npo_loss(ell, ell_ref, self.hp.beta, sequence_weights(n_tok))
        logs = {"npo": float(loss.detach()),
                "forget_nll": float((ell.sum() / n_tok.sum().clamp(min=1)).detach()),
                "log_ratio": float((ell_ref - ell).mean().detach())}  # log π_θ/π_ref, falls as it forgets
        return loss, logs

    def loss(self, ctx, forget, retain):
        return self.npo_term(ctx, forget)
