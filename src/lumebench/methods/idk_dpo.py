"""IdkDPO — DPO with an "I don't know" answer preferred over the forget answer (Maini et al. 2024, TOFU;
Zhang et al. 2024 (NPO) as a baseline), plus a retain NLL term as in the TOFU-derived code bases:

    L = γ·(−(2/β)·mean log σ(β·[(ℓ_ref(y_idk) − ℓ(y_idk)) − (ℓ_ref(y_f) − ℓ(y_f))])) + α·NLL̄(retain)

ℓ = summed NLL of the answer tokens; y_f is the row's own answer, y_idk a refusal drawn (seeded by the
example) from :data:`IDK_ANSWERS`, after the same prompt. Both reference terms are constants, computed
once before training (ℓ_ref(y_f) is NPO's cached reference).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F

from lumebench import checks
from lumebench.checks import setting
from lumebench.methods.base import Example, Method, collate, compute_reference_nll, mean_nll, sequence_nll
from lumebench.registry import METHODS

#: refusals written for lumebench (TOFU ships a list of 100 of the same kind)
IDK_ANSWERS = (
    "I don't know.",
    "I'm not sure about that.",
    "I have no information on that.",
    "I can't answer that.",
    "That is something I don't know.",
    "I'm afraid I don't have that information.",
    "I could not tell you.",
    "I have no idea.",
)


@dataclass
class IdkDPOHparams:
    beta: float = setting(0.1, checks.positive_float)    # DPO inverse temperature (TOFU's idk DPO; SPEC.md §4)
    alpha: float = setting(1.0, checks.nonnegative)   # retain NLL weight (TOFU-style gradient-difference regulariser, weight 1)
    gamma: float = setting(1.0, checks.nonnegative)   # weight of the DPO term (1 in the same code bases)
    answer_seed: int = setting(0, checks.seed)  # which refusal each example gets (not "seed": that is the trainer's)


@METHODS.register("idk_dpo", help="IdkDPO: DPO preferring an 'I don't know' answer over the forget answer "
                                  "(beta 0.1) + alpha*NLL(retain)")
class IdkDPO(Method):
    Hparams = IdkDPOHparams
    source: ClassVar[str] = ("locuslab/open-unlearning src/trainer/unlearn/dpo.py + src/trainer/utils.py "
                             "(compute_dpo_loss); Maini et al. 2024 (TOFU)")
    #: OpenUnlearning's DPO with the TOFU idk experiment: γ·(−(2/β)·mean log σ(β·(log-ratio_idk −
    #: log-ratio_forget))) + α·NLL̄(retain) (dpo.py l. 12-33, utils.py l. 47-67, summed NLLs l. 34-44);
    #: β 0.1, α 1, γ 1 (configs/trainer/DPO.yaml l. 6-8); lr 1e-5, one epoch of warm-up, weight decay
    #: 0.01, 10 epochs (configs/experiment/unlearn/tofu/idk.yaml l. 40-43); batch 8 x accumulation 4
    #: and paged AdamW (configs/trainer/finetune.yaml l. 3, 5, 15). Not reproduced: the refusals
    #: (TOFU's list of 100 ``idontknow`` answers; lumebench writes its own, :data:`IDK_ANSWERS`).
    preset_defaults: ClassVar[dict] = {
        "original": {"beta": 0.1, "alpha": 1.0, "gamma": 1.0, "lr": 1e-5, "warmup_ratio": 0.1, "weight_decay": 0.01,
                     "epochs": 10, "batch_size": 32, "grad_accum": 1, "lr_schedule": "linear",
                     "adam_betas": [0.9, 0.999], "max_grad_norm": 1.0, "lora": False},
        "lumebench": {},
    }

    def idk_examples(self, ctx) -> list[Example]:
        tok, eos = ctx.tokenizer, ctx.tokenizer.eos_token_id
        out = []
        for e in ctx.forget:
            answer = random.Random(f"lumebench-idk:{self.hp.answer_seed}:{e.index}").choice(IDK_ANSWERS)
            target = list(tok(" " + answer, add_special_tokens=False)["input_ids"]) + [eos]
            prompt = list(e.ids[:e.n_prompt])
            extra = e.n_target - (len(e.ids) - e.n_prompt)  # prompt tokens in the loss (loss_on="all")
            out.append(Example(tuple(prompt + target), len(target) + extra, e.index, n_prompt=len(prompt)))
        return out

    def setup(self, ctx):
        super().setup(ctx)
        ctx.cached_reference_nll("forget")
        self.idk = self.idk_examples(ctx)
        self.idk_ref = compute_reference_nll(ctx, self.idk)  # the model is still the reference here

    def loss(self, ctx, forget, retain):
        idx = forget["index"].cpu()
        device = forget["input_ids"].device
        idk = {k: v.to(device) for k, v in collate([self.idk[i] for i in idx.tolist()], ctx.pad_id).items()}
        ell_l, _ = sequence_nll(ctx.model, forget)
        ell_w, _ = sequence_nll(ctx.model, idk)
        ref_l = ctx.cached_reference_nll("forget")[idx].to(device)
        ref_w = self.idk_ref[idx].to(device)
        margin = (ref_w - ell_w) - (ref_l - ell_l)
        dpo = -(2.0 / self.hp.beta) * F.logsigmoid(self.hp.beta * margin).mean()
        nll_r = mean_nll(ctx.model, retain)
        loss = self.hp.gamma * dpo + self.hp.alpha * nll_r
        return loss, {"dpo": float(dpo.detach()), "margin": float(margin.mean().detach()),
                      "retain_nll": float(nll_r.detach())}
