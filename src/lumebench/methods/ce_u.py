"""CE-U — cross-entropy unlearning (Yang 2025, "CE-U: Cross Entropy Unlearning", arXiv 2503.01224), as
OpenUnlearning runs it (locuslab/open-unlearning ``src/trainer/unlearn/ceu.py``, the method's only
public code):

    L = mean_t CE(q_t, p_θ,t),   q_t = softmax(z_t with z_t[y_t] = −∞)  (z_t detached)

z_t are the model's own logits at forget target position t and y_t the true token: the target
distribution is the current prediction with the true token removed (``ceu.py:42-54``), so the
gradient on the logits is p_θ − q, which stays bounded where gradient ascent's explodes. The mean is
over every target position of the batch (``F.cross_entropy`` with probability targets, mean
reduction, ``ceu.py:58-61``). The first ``ignore_first_n_answer_tokens`` labelled tokens of each
row are left out (``ceu.py:69-74``: "the trick to ignore the first n answer tokens mentioned in the
footnote in the Training Settings section of arXiv:2503.01224"; n = 1, ``configs/trainer/CEU.yaml:6``).
With ``loss_on=all`` the first labelled tokens are the prompt's (the source labels the answer only).
Forget set only: no retain term (``ceu.py:89-96``), no reference model. All weights train (full
fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from lumebench import checks
from lumebench.checks import setting
from lumebench.distributed import global_mean
from lumebench.methods.base import IGNORE, Method, forward_logits
from lumebench.registry import METHODS


@dataclass
class CEUHparams:
    # the first n labelled (answer) tokens of each row are not unlearned: open-unlearning
    # configs/trainer/CEU.yaml:6 and ceu.py:85 (n = 1; the paper's Training Settings footnote)
    ignore_first_n_answer_tokens: int = setting(1, checks.nonnegative_int)


def ceu_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_first_n: int) -> torch.Tensor:
    """CE to the detached prediction with the true token's logit set to −∞, averaged over the target
    positions left after dropping each row's first ``ignore_first_n`` labelled tokens."""
    valid = labels != IGNORE
    first = valid & (valid.cumsum(dim=-1) <= ignore_first_n)
    labels = labels.masked_fill(first, IGNORE)
    mask = labels[:, 1:] != IGNORE
    y = labels[:, 1:][mask]
    z = logits[:, :-1, :].float()[mask]
    target = F.softmax(z.detach().scatter(1, y[:, None], float("-inf")), dim=-1)
    ce = -(target * F.log_softmax(z, dim=-1)).sum(-1)
    return global_mean(ce) + logits.sum() * 0.0  # (every parameter in the graph, even with no position)


@METHODS.register("ce_u", help="CE-U: cross-entropy to the model's own prediction with the true forget "
                               "token removed (forget set only)")
class CEU(Method):
    Hparams = CEUHparams
    source: ClassVar[str] = ("locuslab/open-unlearning src/trainer/unlearn/ceu.py + configs/trainer/CEU.yaml; "
                             "Yang 2025 arXiv 2503.01224")
    #: OpenUnlearning's TOFU recipe for CE-U (``community/methods/CEU/run.sh`` with
    #: ``configs/experiment/unlearn/tofu/default.yaml`` over ``configs/trainer/CEU.yaml`` -> ``finetune.yaml``).
    #: bf16 there (``finetune.yaml:7``): lumebench's mixed_precision "auto" is bf16 on a GPU. Optimiser
    #: paged_adamw_32bit (``finetune.yaml:15``) = AdamW, the trainer's default; its betas there are HF's
    #: (0.9, 0.999) (lumebench's default is (0.9, 0.95)).
    preset_defaults: ClassVar[dict] = {"original": {
        "ignore_first_n_answer_tokens": 1,  # CEU.yaml:6
        "lr": 1e-5,           # run.sh:25 (tofu/default.yaml:45, finetune.yaml:6)
        "epochs": 10,         # tofu/default.yaml:47 (finetune.yaml:23)
        "batch_size": 16,     # run.sh:22 per_device_train_batch_size ...
        "grad_accum": 2,      # ... run.sh:23 -> effective 32 on one GPU
        "warmup_ratio": 0.1,  # warmup_epochs 1.0 of 10 (tofu/default.yaml:44; src/trainer/__init__.py:33-42)
        "lr_schedule": "linear",  # HF TrainingArguments' default lr_scheduler_type (no config sets one for TOFU)
        "weight_decay": 0.01,  # tofu/default.yaml:46 (over finetune.yaml:18's 0.0)
        "max_grad_norm": 1.0,  # HF TrainingArguments' default (no config sets one)
        "adam_betas": [0.9, 0.999],  # HF TrainingArguments' AdamW default (no config sets one)
    }, "lumebench": {}}  # lumebench's CE-U is the source's: no variant

    def loss(self, ctx, forget, retain):
        logits = forward_logits(ctx.model, forget)
        loss = ceu_loss(logits, forget["labels"], self.hp.ignore_first_n_answer_tokens)
        return loss, {"ce_u": float(loss.detach())}
