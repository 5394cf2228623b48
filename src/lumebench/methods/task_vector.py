"""Task vector negation (Ilharco et al. 2023, "Editing Models with Task Arithmetic"; a MUSE / LUME-era
unlearning baseline): fine-tune on the forget set (plain NLL descent), then subtract the change:

    θ_unlearned = θ0 − α·(θ_ft − θ0)

Training updates θ_ft as usual (so checkpoints and resume are the trainer's); every evaluation and the
saved model see θ0 − α·(θ − θ0). Only the trained tensors change. Under LoRA the update is the adapter
(θ0 of ``lora_B`` is 0), so the negation scales ``lora_B`` by −α and leaves ``lora_A``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar

import torch

from lumebench import checks
from lumebench.checks import setting
from lumebench.methods.base import Method, mean_nll
from lumebench.registry import METHODS


@dataclass
class TaskVectorHparams:
    alpha: float = setting(1.0, checks.nonnegative)  # negation scale λ: 1 = plain negation (Ilharco et al. 2023 tune λ on held-out data)


@METHODS.register("task_vector", help="task vector: fine-tune on forget, then theta0 - alpha*(theta_ft - theta0)")
class TaskVector(Method):
    Hparams = TaskVectorHparams
    source: ClassVar[str] = "Ilharco et al. 2023 'Editing Models with Task Arithmetic' §3 (forgetting via negation)"
    #: the paper's negation: θ0 − λ·τ with τ the fine-tuning update (§3); λ is tuned on held-out data
    #: there (no single value), 1 = plain negation. The paper publishes no trainer for this setting:
    #: the fine-tuning uses the literature trainer (TOFU's, UnlearnConfig.train_defaults).
    preset_defaults: ClassVar[dict] = {"original": {"alpha": 1.0}, "lumebench": {}}

    def _negated(self, ctx):
        for name, p in ctx.model.named_parameters():
            if p.requires_grad and (not ctx.lora or "lora_B" in name):
                yield name.removeprefix("module."), p  # the same keys under a DDP wrapper

    def setup(self, ctx):
        super().setup(ctx)
        # the model is still θ0 here (a resumed run loads its checkpoint after setup)
        self.theta0 = {n: p.detach().clone() for n, p in self._negated(ctx)}

    def _apply(self, ctx) -> dict:
        saved = {}
        with torch.no_grad():
            for n, p in self._negated(ctx):
                saved[n] = p.detach().clone()
                t0 = self.theta0[n].to(p.device, p.dtype)
                p.copy_(t0 - self.hp.alpha * (p - t0))
        return saved

    @contextlib.contextmanager
    def evaluated(self, ctx):
        saved = self._apply(ctx)
        try:
            yield ctx.model
        finally:
            with torch.no_grad():
                for n, p in self._negated(ctx):
                    p.copy_(saved[n])

    def finalize(self, ctx):
        self._apply(ctx)

    def loss(self, ctx, forget, retain):
        nll = mean_nll(ctx.model, forget)
        return nll, {"forget_nll": float(nll.detach())}
