"""UNDIAL — self-distillation with adjusted logits (Dong et al. 2024, "UNDIAL: Self-Distillation with
Adjusted Logits for Robust Unlearning in Large Language Models").

On every forget target token the student is distilled toward the reference model's distribution with
the true next token's logit lowered by β:

    q = softmax(z_ref − β·onehot(y)),   L = mean_t CE(q_t, p_θ,t) + α·NLL̄(retain)

The teacher is the model before unlearning (the adapter-disabled base under LoRA, else a frozen copy).

Source of the preset ``original``: OpenUnlearning's port (locuslab/open-unlearning
``src/trainer/unlearn/undial.py`` l. 12-27, ``src/trainer/utils.py`` ``compute_undial_loss``
l. 70-99, ``configs/trainer/UNDIAL.yaml``). Not reproduced: that port averages the cross-entropy over
*every* position of the batch (``loss.mean()``, l. 94-99), prompt and padding included, where the
label −100 indexes token V−100 when the teacher's logit is lowered (l. 85-91) — lumebench averages
over the answer tokens, as the paper defines the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F

from lumebench import checks
from lumebench.checks import setting
from lumebench.methods.base import IGNORE, Method, forward_logits, mean_nll
from lumebench.registry import METHODS


@dataclass
class UNDIALHparams:
    beta: float = setting(10.0, checks.positive_float)  # logit adjustment strength (UNDIAL paper; SPEC.md §4)
    alpha: float = setting(0.0, checks.nonnegative)  # retain NLL weight; 0 = the paper's forget-only objective


def undial_loss(logits, ref_logits, labels, beta: float):
    """Cross-entropy to the adjusted teacher, averaged over the target positions."""
    mask = labels[:, 1:] != IGNORE
    y = labels[:, 1:][mask]
    z_ref = ref_logits[:, :-1, :].float()[mask]
    z_ref = z_ref.scatter_add(1, y[:, None], z_ref.new_full((len(y), 1), -beta))
    teacher = F.softmax(z_ref, dim=-1)
    logp = F.log_softmax(logits[:, :-1, :].float()[mask], dim=-1)
    ce = -(teacher * logp).sum(-1)
    return ce.mean() if ce.numel() else logits.sum() * 0.0


@METHODS.register("undial", help="UNDIAL: self-distillation toward the reference with the true token's "
                                 "logit lowered by beta=10")
class UNDIAL(Method):
    Hparams = UNDIALHparams
    needs_reference_model = True
    source: ClassVar[str] = ("locuslab/open-unlearning src/trainer/unlearn/undial.py (compute_undial_loss); "
                             "Dong et al. 2024 'UNDIAL' (arXiv 2402.10052)")
    #: lr 1e-4 (UNDIAL paper; SPEC.md §4)
    trainer_defaults: ClassVar[dict] = {"lr": 1e-4}
    preset_defaults: ClassVar[dict] = {
        # configs/trainer/UNDIAL.yaml: lr 1e-4 (l. 6), 10 epochs (l. 7), alpha 0 (l. 10), beta 10 (l. 11);
        # configs/trainer/finetune.yaml: batch 8 x accumulation 4 (l. 3, 5), paged AdamW (l. 15),
        # no weight decay (l. 18); no warm-up (the Trainer's linear decay)
        "original": {"beta": 10.0, "alpha": 0.0, "lr": 1e-4, "epochs": 10, "batch_size": 32, "grad_accum": 1,
                     "weight_decay": 0.0, "warmup_ratio": 0.0, "lr_schedule": "linear",
                     "adam_betas": [0.9, 0.999], "max_grad_norm": 1.0, "lora": False},
        "lumebench": {},
    }

    def loss(self, ctx, forget, retain):
        logits = forward_logits(ctx.model, forget)
        loss = undial_loss(logits, ctx.reference_logits(forget), forget["labels"], self.hp.beta)
        logs = {"undial": float(loss.detach())}
        if self.hp.alpha:
            nll_r = mean_nll(ctx.model, retain)
            loss = loss + self.hp.alpha * nll_r
            logs["retain_nll"] = float(nll_r.detach())
        return loss, logs
