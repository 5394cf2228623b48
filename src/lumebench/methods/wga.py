"""WGA — weighted gradient ascent (Wang et al. 2025, "Rethinking LLM Unlearning Objectives: A Gradient
Perspective and Go Beyond", ICLR 2025, arXiv 2502.19301; code tmlr-group/G-effect), as OpenUnlearning
runs it (locuslab/open-unlearning ``src/trainer/unlearn/wga.py``, ``src/trainer/utils.py::compute_wga_loss``):

    L = γ·L_f + α·NLL̄(retain),   L_f = −mean_t [ p_t^β · ℓ_t ],   p_t = exp(−ℓ_t) (detached)

ℓ_t is the NLL of forget target token t and the mean is over every target token of the batch
(token-level, not per sequence: ``utils.py:110-114`` takes ``CrossEntropyLoss(reduction="none")`` over
the flattened batch and ``.mean()`` over the non-ignored positions). The weight p_t^β is a constant
(``.detach()``, ``utils.py:113``): GA's gradient on each token is scaled by the token's own
likelihood, so tokens already forgotten (p_t → 0) stop pulling, which keeps GA from diverging.
NLL̄(retain) is the HF loss of the retain batch (``grad_diff.py:25-29``, ``retain_loss_type: NLL``).
All weights train (full fine-tuning; no LoRA in either code base: G-effect ``config/forget.yaml``
``LoRA.r: 0``). OpenUnlearning also builds a reference copy (``wga.py:11-12``) that the NLL retain
loss never uses; lumebench does not build it.

The authors' own ``wga`` loss (tmlr-group/G-effect ``dataloader.py:351-364``) is the forget term alone:
``--set alpha=0`` gives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from lumebench import checks
from lumebench.checks import setting
from lumebench.distributed import global_mean
from lumebench.methods.base import Method, forward_logits, mean_nll, token_nll
from lumebench.registry import METHODS


@dataclass
class WGAHparams:
    # open-unlearning configs/trainer/WGA.yaml:11 (and wga.py:6); its community/methods/WGA/README.md:7
    # gives 1.0 as the paper's value
    beta: float = setting(1.0, checks.positive_float)
    gamma: float = setting(1.0, checks.nonnegative)  # weight of the forget term: WGA.yaml:13 (wga.py:6, "default gamma=1.0" wga.py:35)
    alpha: float = setting(1.0, checks.nonnegative)  # weight of the retain NLL (retain_loss_type NLL): WGA.yaml:12,14


def weighted_ascent(model, forget: dict, weight: Callable[[torch.Tensor], torch.Tensor]
                    ) -> tuple[torch.Tensor, dict[str, float]]:
    """−mean_t [w(p_t)·ℓ_t] over the forget target tokens, w computed from the detached p_t = exp(−ℓ_t).

    The token-weighted gradient ascent of WGA and SatImp (open-unlearning ``src/trainer/utils.py:102-134``):
    ``weight`` maps the detached token probabilities to their weights. Returns the loss and logs
    (forget NLL̄ and the mean weight over the target tokens)."""
    nll, mask = token_nll(forward_logits(model, forget), forget["labels"])
    p = torch.exp(-nll.detach())
    w = weight(p)
    loss = -global_mean(w * nll, mask)
    m = mask.to(nll.dtype)
    n = m.sum().clamp(min=1)
    return loss, {"forget_nll": float((nll.detach() * m).sum() / n), "weight": float((w * m).sum() / n)}


def with_retain(ctx, forget_loss: torch.Tensor, alpha: float, retain: dict, logs: dict
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """``forget_loss + α·NLL̄(retain)`` (OpenUnlearning's GradDiff form, ``grad_diff.py:25-29,60``); with
    α = 0 the retain batch is not run (the forget-only losses of the authors' code)."""
    if not alpha:
        return forget_loss, logs
    nll_r = mean_nll(ctx.model, retain)
    return forget_loss + alpha * nll_r, {**logs, "retain_nll": float(nll_r.detach())}


@METHODS.register("wga", help="WGA: gradient ascent with each forget token weighted by p^beta (beta 1) "
                              "+ alpha*NLL(retain)")
class WGA(Method):
    Hparams = WGAHparams
    source: ClassVar[str] = ("locuslab/open-unlearning src/trainer/unlearn/wga.py + configs/trainer/WGA.yaml; "
                             "Wang et al. 2025 arXiv 2502.19301 (code tmlr-group/G-effect)")
    #: the authors' recipe (tmlr-group/G-effect: ``basher1.py`` runs ``forget2.py`` with
    #: ``config/forget.yaml``), Llama-2-7B setting. bf16 there (``forget2.py:96``): lumebench's
    #: mixed_precision "auto" is bf16 on a GPU. Optimiser paged_adamw_32bit (``forget2.py:101``) = AdamW,
    #: the trainer's default; its betas there are HF's (0.9, 0.999) (lumebench's default is (0.9, 0.95)).
    #: OpenUnlearning's TOFU experiment (``configs/experiment/unlearn/tofu/default.yaml:44-47``, merged
    #: after WGA.yaml) would instead run 10 epochs, weight decay 0.01, warm-up 1 epoch, clipping at 1.0,
    #: effective batch 32 (``community/methods/WGA/run.sh:22-23``).
    preset_defaults: ClassVar[dict] = {"original": {
        "beta": 1.0, "gamma": 1.0, "alpha": 1.0,   # WGA.yaml:11-13 (README.md:7: beta 1.0)
        "lr": 1e-5,            # Llama-2-7B: G-effect basher1.py:28-29 (2e-5 for Phi-1.5, :26-27); WGA/README.md:7
        "epochs": 5,           # G-effect basher1.py:15-23 (every split); WGA.yaml:8
        "batch_size": 4,       # G-effect config/forget.yaml:11 ...
        "grad_accum": 4,       # ... :12 -> effective batch 16 (WGA/README.md:7)
        "warmup_ratio": 0.2,   # warmup_steps = one epoch of five (G-effect forget2.py:84,93)
        "lr_schedule": "linear",  # HF TrainingArguments' default lr_scheduler_type (forget2.py sets none)
        "weight_decay": 0.0,   # G-effect config/forget.yaml:21
        "max_grad_norm": None,  # no clipping: G-effect forget2.py:111 max_grad_norm=None
        "adam_betas": [0.9, 0.999],  # HF TrainingArguments' AdamW default (forget2.py sets none)
    }, "lumebench": {}}  # lumebench's WGA is the source's: no variant

    def loss(self, ctx, forget, retain):
        beta = self.hp.beta
        loss_f, logs = weighted_ascent(ctx.model, forget, lambda p: p ** beta)
        logs = {"wga": float(loss_f.detach()), **logs}
        return with_retain(ctx, self.hp.gamma * loss_f, self.hp.alpha, retain, logs)
