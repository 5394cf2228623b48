"""SimNPO (Fan et al. 2024, "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM
Unlearning"): NPO without the reference model, with a length-normalised forget log-likelihood, plus
the retain NLL, weighted as the authors' code weights them (OPTML-Group/Unlearn-Simple,
``TOFU/dataloader.py`` l. 278-289, loss type ``simnpo_grad_diff``):

    L = npo_coeff · ( −(2/β)·mean_i log σ(β·(ℓ_θ,i/|y_i| − γ)) ) + α · NLL̄(retain)

ℓ_θ,i is the summed NLL of example i's target tokens (``get_batch_loss``, ``TOFU/data_module.py``
l. 280-288), |y_i| their number (``loss_mask.sum(-1)``, dataloader.py l. 282-283), γ is subtracted
*inside* β (l. 283) and the 2/β factor is l. 284; the mean is over the forget examples of the
batch. NLL̄(retain) is the model's mean token loss on the retain batch (``retain_outputs.loss``,
l. 288); α is the code's ``grad_diff_coeff`` (1.0, ``TOFU/config/forget.yaml`` l. 19) and
``npo_coeff`` weighs the *forget* term (l. 289): 0.125 with β 4.5 for TOFU forget10
(``TOFU/README.md`` l. 31), 0.1375 with β 2.5 for forget05 (l. 28, forget.yaml l. 18/22).
No reference quantities at all.

Before issue 24 lumebench weighted the terms the other way round (1 on the forget term, 0.125 on
the retain term, i.e. the retain term ~64x weaker relative to forget than published); that variant
is the preset ``lumebench`` (``npo_coeff 1``, ``alpha 0.125``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F

from lumebench import checks
from lumebench.checks import setting
from lumebench.distributed import global_mean
from lumebench.methods.base import Method, mean_nll, sequence_nll, sequence_weights
from lumebench.registry import METHODS


@dataclass
class SimNPOHparams:
    beta: float = setting(4.5, checks.positive_float)        # inverse temperature; TOFU forget10 (Unlearn-Simple TOFU/README.md l. 31)
    gamma: float = setting(0.0, checks.nonnegative)       # reward margin γ, subtracted inside β (dataloader.py l. 283); 0 (forget.yaml l. 23)
    npo_coeff: float = setting(0.125, checks.nonnegative)  # weight of the SimNPO forget term; TOFU forget10 (README.md l. 31, dataloader.py l. 289)
    alpha: float = setting(1.0, checks.nonnegative)       # retain NLL weight, the code's grad_diff_coeff (forget.yaml l. 19, dataloader.py l. 289)


def simnpo_term(ell, n_tok, beta: float, gamma: float):
    """−(2/β)·mean log σ(β·(ℓ/|y| − γ)) over the (global) batch's examples with target tokens."""
    avg = ell / n_tok.clamp(min=1)
    return -(2.0 / beta) * global_mean(F.logsigmoid(beta * (avg - gamma)), sequence_weights(n_tok)), avg


@METHODS.register("simnpo", help="SimNPO: npo_coeff*reference-free length-normalised NPO + alpha*NLL(retain)")
class SimNPO(Method):
    Hparams = SimNPOHparams
    source: ClassVar[str] = ("OPTML-Group/Unlearn-Simple TOFU/dataloader.py (simnpo_grad_diff); Fan et al. 2024 "
                             "'Simplicity Prevails' (arXiv 2410.07163)")
    preset_defaults: ClassVar[dict] = {
        # TOFU forget10 as the authors ran it (Unlearn-Simple TOFU/config/forget.yaml, TOFU/forget.py):
        "original": {
            "beta": 4.5, "npo_coeff": 0.125,   # README.md l. 31 (forget10)
            "gamma": 0.0, "alpha": 1.0,        # forget.yaml l. 23, l. 19
            "lr": 1e-5,                        # forget.yaml l. 9
            "epochs": 10,                      # forget.yaml l. 15
            # batch 1 x accumulation 4 (forget.yaml l. 13-14) x 8 GPUs (README.md l. 31, torchrun
            # --nproc_per_node=8): 32 forget examples (each with one retain example) per step
            "batch_size": 32,
            # warm-up of one epoch (forget.yaml l. 30, forget.py l. 113-114) out of 10, then the
            # Trainer's default linear decay to 0 (forget.py l. 119-139 sets no scheduler type)
            "warmup_ratio": 0.1, "lr_schedule": "linear",
            "weight_decay": 0.01,              # forget.yaml l. 24
            # optim="paged_adamw_32bit" (forget.py l. 131): AdamW with the Trainer's betas (0.9,
            # 0.999) and its default gradient clipping at norm 1.0
            "adam_betas": [0.9, 0.999], "max_grad_norm": 1.0,
            "lora": False,                     # LoRA r 0 = full fine-tuning (forget.yaml l. 5)
        },
        # lumebench's weighting before issue 24: 1 on the forget term, 0.125 on the retain term
        "lumebench": {"npo_coeff": 1.0, "alpha": 0.125},
    }

    def loss(self, ctx, forget, retain):
        ell, n_tok = sequence_nll(ctx.model, forget)
        forget_loss, avg = simnpo_term(ell, n_tok, self.hp.beta, self.hp.gamma)
        nll_r = mean_nll(ctx.model, retain)
        return self.hp.npo_coeff * forget_loss + self.hp.alpha * nll_r, {
            "simnpo": float(forget_loss.detach()), "forget_nll": float(avg.mean().detach()),
            "retain_nll": float(nll_r.detach())}
