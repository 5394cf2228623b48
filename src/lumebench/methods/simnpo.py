"""SimNPO (Fan et al. 2024, "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM
Unlearning"): NPO without the reference model, with a length-normalised forget log-likelihood:

    L = −(2/β)·mean log σ(β·ℓ_θ/|y| − δ) + α·NLL̄(retain)

with ℓ_θ the summed NLL of the target tokens and |y| their number. No reference quantities at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from lumebench.distributed import global_mean
from lumebench.methods.base import Method, mean_nll, sequence_nll, sequence_weights
from lumebench.registry import METHODS


@dataclass
class SimNPOHparams:
    beta: float = 4.5    # inverse temperature; 4.5 in the SimNPO paper's TOFU forget10 setting
    delta: float = 0.0   # reward margin δ (γ in the paper); 0 for TOFU
    alpha: float = 0.125  # retain NLL weight λ; 0.125 for TOFU forget10


@METHODS.register("simnpo", help="SimNPO: reference-free, length-normalised NPO + alpha*NLL(retain)")
class SimNPO(Method):
    Hparams = SimNPOHparams

    def loss(self, ctx, forget, retain):
        ell, n_tok = sequence_nll(ctx.model, forget)
        avg = ell / n_tok.clamp(min=1)
        forget_loss = -(2.0 / self.hp.beta) * global_mean(F.logsigmoid(self.hp.beta * avg - self.hp.delta),
                                                          sequence_weights(n_tok))
        nll_r = mean_nll(ctx.model, retain)
        return forget_loss + self.hp.alpha * nll_r, {"simnpo": float(forget_loss.detach()),
                                                     "forget_nll": float(avg.mean().detach()),
                                                     "retain_nll": float(nll_r.detach())}
