"""NPO — negative preference optimisation (Zhang et al. 2024, "Negative Preference Optimization").

    L_NPO = (2/β)·mean log(1 + (π_θ(y|x)/π_ref(y|x))^β) = −(2/β)·mean log σ(β·(ℓ_θ − ℓ_ref))

with ℓ the *summed* NLL of the target tokens. ℓ_ref does not change during training: it is computed
once before training for every forget example (:meth:`UnlearnContext.cached_reference_nll`, also saved
in the run directory) and looked up by example index — not recomputed with a second forward pass per
step as most code bases do (see ``benchmarks/unlearn_speed.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from lumebench import checks
from lumebench.checks import setting
from lumebench.distributed import global_mean
from lumebench.methods.base import NPO_TRAINER, Method, forward_logits, sequence_nll, sequence_weights, token_nll
from lumebench.registry import METHODS


@dataclass
class NPOHparams:
    beta: float = setting(0.1, checks.positive_float)  # inverse temperature; 0.1 in the NPO paper's TOFU runs and the LUME baseline


def npo_loss(ell: "torch.Tensor", ell_ref: "torch.Tensor", beta: float,
             weights: "torch.Tensor | None" = None) -> "torch.Tensor":
    """−(2/β)·mean log σ(β·(ℓ_θ − ℓ_ref)). At ℓ_θ = ℓ_ref it equals (2/β)·log 2. The mean is over
    the global batch (``weights``: 0 for a placeholder row, see :func:`sequence_weights`)."""
    return -(2.0 / beta) * global_mean(F.logsigmoid(beta * (ell - ell_ref)), weights)


#: how NPO's log-likelihood ratio is formed, the one choice where the code bases differ:
#: "sequence": ℓ = summed NLL of each example's target tokens, the mean of log σ over the examples
#: (Zhang et al. 2024; TOFU's npo); "token": log σ of each target token's own ratio, averaged over
#: the batch's target tokens (Atyaephyra); "batch": one ratio of the batch's mean token NLLs (the
#: model's and the reference's ``outputs.loss``, ZJUKLAB)
NPO_REDUCTIONS = ("sequence", "token", "batch")


def token_npo(ctx, forget, beta: float):
    """−(2/β)·mean_t log σ(β·(nll_θ,t − nll_ref,t)) over every forget target token of the batch
    (the reference's per-token NLL needs its forward pass: the adapter-disabled base under LoRA)."""
    logits = forward_logits(ctx.model, forget)
    nll, mask = token_nll(logits, forget["labels"])
    ref_nll, _ = token_nll(ctx.reference_logits(forget), forget["labels"])
    loss = -(2.0 / beta) * global_mean(F.logsigmoid(beta * (nll - ref_nll)), mask)
    n = mask.sum().clamp(min=1)
    return loss, {"npo": float(loss.detach()), "forget_nll": float((nll.sum() / n).detach()),
                  "log_ratio": float(((ref_nll - nll) * mask).sum().detach() / n)}


def pooled_npo(ctx, forget, beta: float):
    """−(2/β)·log σ(β·(NLL̄_θ − NLL̄_ref)) with NLL̄ the mean token NLL of the whole forget batch
    (ℓ_ref from the cached per-example sums: NLL̄_ref = Σ ℓ_ref,i / Σ |y_i|)."""
    ell, n_tok = sequence_nll(ctx.model, forget)
    ell_ref = ctx.cached_reference_nll("forget")[forget["index"].cpu()].to(ell.device)
    n = n_tok.sum().clamp(min=1)
    ratio = (ell.sum() - ell_ref.sum()) / n
    loss = -(2.0 / beta) * F.logsigmoid(beta * ratio)
    return loss, {"npo": float(loss.detach()), "forget_nll": float((ell.sum() / n).detach()),
                  "log_ratio": float(-ratio.detach())}


@METHODS.register("npo", help="negative preference optimisation on forget (beta=0.1)")
class NPO(Method):
    Hparams = NPOHparams
    source: ClassVar[str] = ("licong-lin/negative-preference-optimization TOFU/dataloader.py (npo, l. 255-270); "
                             "Zhang et al. 2024; LUME baseline")
    #: the authors' NPO: per-sequence summed NLL (get_batch_loss), −(2/β)·mean log σ(β·Δℓ) (l. 260-270), β 0.1 (forget.yaml l. 20)
    preset_defaults: ClassVar[dict] = {"original": {**NPO_TRAINER, "beta": 0.1}, "lumebench": {}}

    def setup(self, ctx):
        super().setup(ctx)
        ctx.cached_reference_nll("forget")

    def npo_term(self, ctx, forget):
        reduction = getattr(self.hp, "npo_reduction", "sequence")
        if reduction == "token":
            return token_npo(ctx, forget, self.hp.beta)
        if reduction == "batch":
            return pooled_npo(ctx, forget, self.hp.beta)
        ell, n_tok = sequence_nll(ctx.model, forget)
        ell_ref = ctx.cached_reference_nll("forget")[forget["index"].cpu()].to(ell.device)
        loss = npo_loss(ell, ell_ref, self.hp.beta, sequence_weights(n_tok))
        logs = {"npo": float(loss.detach()),
                "forget_nll": float((ell.sum() / n_tok.sum().clamp(min=1)).detach()),
                "log_ratio": float((ell_ref - ell).mean().detach())}  # log π_θ/π_ref, falls as it forgets
        return loss, logs

    def loss(self, ctx, forget, retain):
        return self.npo_term(ctx, forget)
