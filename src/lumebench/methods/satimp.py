"""SatImp — saturation × importance token reweighting of gradient ascent (Yang et al. 2025, "Exploring
Criteria of Loss Reweighting to Enhance LLM Unlearning", ICML 2025, arXiv 2505.11953; code
tmlr-group/SatImp), as OpenUnlearning runs it (locuslab/open-unlearning ``src/trainer/unlearn/satimp.py``,
``src/trainer/utils.py::compute_satimp_loss``):

    L = γ·L_f + α·NLL̄(retain),   L_f = −mean_t [ p_t^β1 · (1 − p_t)^β2 · ℓ_t ],   p_t = exp(−ℓ_t) (detached)

ℓ_t is the NLL of forget target token t; the mean is over every target token of the batch
(``utils.py:126-133``). p^β1 is the *saturation* weight (tokens already pushed down, low p, get less),
(1 − p)^β2 the *importance* weight (``utils.py:129-130``); both detached. NLL̄(retain) is the HF loss
of the retain batch (``grad_diff.py:25-29``, ``retain_loss_type: NLL``). All weights train (the
authors' ``config/forget_sat.yaml:3-4`` ``LoRA.r: 0``: no adapter).

The weights of the two terms: ``satimp.py:7`` defaults γ 1, α 0.1, and the method's README there
(``community/methods/SatImp/README.md:7,9``) says forget : retain = 10, "gamma=1.0 and alpha=0.1" — as
the authors' ``satimp_gd`` loss (tmlr-group/SatImp ``dataloader/dataloader_sat.py:135-155``,
forget + ``coeff`` · retain with ``coeff: 0.1`` in ``config/forget_sat.yaml:18``). Its
``configs/trainer/SatImp.yaml:13-14`` swaps them (alpha 1.0, gamma 0.1); lumebench follows the code
defaults and the README.

β2, where the sources disagree: OpenUnlearning's first SatImp config (``SatImp.yaml:11-12``, PR #125 of
2025-06-30, by the paper's first author) has β1 5.0, β2 1.0; the authors' own repository recommends
β1 5.0, β2 0.1 ("The recommended hyper-parameters of SatImp method is beta1=5.0, beta2=0.1",
tmlr-group/SatImp ``README.md:42-44`` at 51314c0, whose command runs ``beta=0.1 hyper_param=5.0``),
and the first author's later OpenUnlearning change (PR #192, ``SatImp.yaml:11-14``: β2 0.1) says the
first defaults "were not effective". No script records what the paper's tables ran. lumebench takes
the authors' stated recommendation, β2 = 0.1, in its default and its ``original`` preset;
``--set beta2=1.0`` gives OpenUnlearning's first config. (The weight p^β1·(1 − p)^β2 peaks at
p = β1/(β1 + β2): 0.98 with β2 0.1, 0.83 with 1.0.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lumebench import checks
from lumebench.checks import setting
from lumebench.methods.base import Method
from lumebench.methods.wga import weighted_ascent, with_retain
from lumebench.registry import METHODS


@dataclass
class SatImpHparams:
    beta1: float = setting(5.0, checks.nonnegative)  # saturation exponent: open-unlearning SatImp.yaml:11, satimp.py:7, README.md:7
    beta2: float = setting(0.1, checks.nonnegative)  # importance exponent: tmlr-group/SatImp README.md:42-44 (1.0 in SatImp.yaml:12: see above)
    gamma: float = setting(1.0, checks.nonnegative)  # forget weight: satimp.py:7, README.md:9 (SatImp.yaml:14 says 0.1: swapped, see above)
    alpha: float = setting(0.1, checks.nonnegative)  # retain NLL weight: satimp.py:7, README.md:7,9 (SatImp.yaml:13 says 1.0: swapped)


@METHODS.register("satimp", help="SatImp: gradient ascent with each forget token weighted by "
                                 "p^beta1*(1-p)^beta2 (5, 0.1) + alpha*NLL(retain) (0.1)")
class SatImp(Method):
    Hparams = SatImpHparams
    source: ClassVar[str] = ("locuslab/open-unlearning src/trainer/unlearn/satimp.py + configs/trainer/SatImp.yaml; "
                             "Yang et al. 2025 arXiv 2505.11953 (code tmlr-group/SatImp)")
    #: the authors' recipe (tmlr-group/SatImp ``forget_sat.py`` with ``config/forget_sat.yaml``, the
    #: command of its ``README.md:44``), Llama-2-7B setting. bf16 there (``forget_sat.py:96``):
    #: lumebench's mixed_precision "auto" is bf16 on a GPU. Optimiser paged_adamw_32bit
    #: (``forget_sat.py:101``) = AdamW, the trainer's default; its betas there are HF's (0.9, 0.999)
    #: (lumebench's default is (0.9, 0.95)).
    preset_defaults: ClassVar[dict] = {"original": {
        "beta1": 5.0, "beta2": 0.1, "gamma": 1.0, "alpha": 0.1,  # as the Hparams (see the module docstring)
        "lr": 1e-5,           # Llama-2-7B (2e-5 for Phi-1.5): open-unlearning community/methods/SatImp/README.md:7
        "epochs": 5,          # tmlr-group/SatImp config/forget_sat.yaml:13; SatImp.yaml:8
        "batch_size": 2,      # README.md:44 batch_size=2 ...
        "grad_accum": 8,      # ... gradient_accumulation_steps=8 -> effective 16 (open-unlearning README.md:7)
        "warmup_ratio": 0.2,  # warmup_steps = one epoch of five (forget_sat.py:84,93)
        "lr_schedule": "linear",  # HF TrainingArguments' default lr_scheduler_type (forget_sat.py sets none)
        "weight_decay": 0.0,  # README.md:44 weight_decay=0.0; config/forget_sat.yaml:25
        "max_grad_norm": 1.0,  # forget_sat.py:111
        "adam_betas": [0.9, 0.999],  # HF TrainingArguments' AdamW default (forget_sat.py sets none)
    }, "lumebench": {}}  # lumebench's SatImp is the source's: no variant

    def loss(self, ctx, forget, retain):
        b1, b2 = self.hp.beta1, self.hp.beta2
        loss_f, logs = weighted_ascent(ctx.model, forget, lambda p: p ** b1 * (1.0 - p) ** b2)
        logs = {"satimp": float(loss_f.detach()), **logs}
        return with_retain(ctx, self.hp.gamma * loss_f, self.hp.alpha, retain, logs)
