"""RMU — Representation Misdirection for Unlearning (Li et al. 2024, "The WMDP Benchmark").

On forget tokens, push the hidden state after decoder layer L toward a fixed random direction u
(unit vector, uniform entries then normalised, seeded) scaled by the steering coefficient c; on retain
tokens keep the hidden state equal to the frozen model's (the reference: a frozen copy, or the base
with the adapter disabled under LoRA):

    L = MSE(h_θ^L(forget), c·u) + α·MSE(h_θ^L(retain), h_ref^L(retain))

(means over the real tokens and the hidden dimensions). Only a few layers' MLP output weights
train: unless ``--layers`` / ``--params`` / ``--lora`` say otherwise, layers L−2..L ``mlp.down_proj``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from lumebench import checks
from lumebench.checks import setting
from lumebench.methods.base import Method
from lumebench.registry import METHODS


@dataclass
class RMUHparams:
    # steered layer; None = 7/32 of the depth (layer 7 of Zephyr-7B's 32 in the published recipe)
    layer: int | None = setting(None, checks.nonnegative_int)
    steering_coef: float = setting(6.5, checks.positive_float)   # c: 6.5 for Zephyr-7B (WMDP); scales with the model's hidden-state norm
    alpha: float = setting(1200.0, checks.nonnegative)        # retain MSE weight (WMDP, Zephyr-7B)
    direction_seed: int = setting(0, checks.seed)      # seed of the random direction u (not "seed": that is the trainer's)
    update: str = setting(r"mlp\.down_proj", checks.regex)  # weights trained in layers L-2..L (WMDP: the MLP output projection)


def decoder_layer(model, layer: int):
    """The ``layer``-th decoder block (``*.layers.<layer>``) of a model, a PeftModel or a DDP wrapper."""
    for name, module in model.named_modules():
        if name.endswith(f"layers.{layer}") and name.split(".")[-2] == "layers":
            return module
    raise ValueError(f"the model has no decoder layer {layer}")


def _hidden(model, batch, layer: int) -> torch.Tensor:
    """The output of decoder layer ``layer`` (the residual stream after it), read by a forward hook.

    Not ``output_hidden_states``: in transformers 5 its last entry is taken *after* the final norm, so
    steering the last layer through it would steer the normed state, not the layer's output.
    """
    seen = []

    def hook(_module, _inputs, output):
        seen.append(output[0] if isinstance(output, tuple) else output)
        raise _Reached  # the layers above and the LM head are not needed

    handle = decoder_layer(model, layer).register_forward_hook(hook)
    try:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    except _Reached:
        pass
    finally:
        handle.remove()
    return seen[-1]


class _Reached(Exception):
    """Raised by the hook once the steered layer has run."""


def _masked_mse(h: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.bool()
    return F.mse_loss(h[m].float(), target.expand_as(h)[m].float())


@METHODS.register("rmu", help="RMU: steer forget hidden states at layer L to a random direction, keep retain ones")
class RMU(Method):
    Hparams = RMUHparams
    needs_reference_model = True
    source: ClassVar[str] = "centerforaisafety/wmdp rmu/unlearn.py; Li et al. 2024 'The WMDP Benchmark' §5, App. B"
    #: published recipe (Zephyr-7B): lr 5e-5, batches of 4 (used with the literature preset)
    trainer_defaults: ClassVar[dict] = {"lr": 5e-5, "batch_size": 4}
    #: the tiny target (hidden 128-256, residual norms ~10x Zephyr's per dimension): c 6.5 / α 1200 /
    #: lr 1e-3 on down_proj leave it untouched (forget regurgitation 1.00 -> 1.00 after 10 epochs).
    #: Measured on the test target (2 layers, 10 epochs): c 50, α 100, lr 3e-2 on the steered layers'
    #: whole MLP takes forget regurgitation 1.00 -> 0.21 with retain regurgitation 0.94 -> 0.94.
    #: SmolLM2-135M: its residual stream after the steered layer 7 has a mean token norm of 129
    #: (median 113, on the science config's forget rows), 20x the recipe's c 6.5, so c is scaled to
    #: ~1.2x that norm (as adaptive RMU does, Dang et al. 2025) with the tiny preset's alpha and
    #: whole-MLP update of layers 5-7. The recipe (c 6.5, lr 5e-5) and c 150 at lr 5e-4 leave every
    #: cell at 1.00 after 25 steps; at lr 5e-3 forget falls to 0.69 +- 0.06 with retain 0.94 +- 0.05
    #: (configs/smollm2-science.yaml, 5 epochs of batch 4, 3 seeds on an H100; README). A probe of the
    #: base model found the same lr threshold (5e-4 moves neither NLL, 5e-3 does, 3e-2 diverges).
    preset_defaults: ClassVar[dict] = {
        "tiny": {"lr": 3e-2, "steering_coef": 50.0, "alpha": 100.0, "update": "mlp"},
        "smollm2": {"lr": 5e-3, "steering_coef": 150.0, "alpha": 100.0, "update": "mlp"},
        # The published Zephyr-7B recipe (WMDP paper App. B; SPEC.md §4): steered layer 7, layers 5-7
        # ``mlp.down_proj`` updated (wmdp rmu/unlearn.py l. 26, as OpenUnlearning's configs/trainer/
        # RMU.yaml l. 14 cites it), c 6.5, alpha 1200, lr 5e-5, batches of 4 (150 of them: set
        # max_steps for that), AdamW (torch's defaults: betas 0.9 / 0.999, weight decay 0.01), no lr
        # schedule, no clipping. The WMDP repository could not be read from here: the optimizer
        # settings are from the paper's description, not re-checked against the file.
        "original": {"layer": 7, "update": r"mlp\.down_proj", "steering_coef": 6.5, "alpha": 1200.0,
                     "lr": 5e-5, "batch_size": 4, "grad_accum": 1, "adam_betas": [0.9, 0.999],
                     "weight_decay": 0.01, "warmup_ratio": 0.0, "lr_schedule": "constant", "max_grad_norm": None,
                     "lora": False},
        "lumebench": {},
    }

    def steered_layer(self, n_layers: int) -> int:
        layer = self.hp.layer if self.hp.layer is not None else round(7 / 32 * n_layers)
        return max(0, min(layer, n_layers - 1))

    def default_selection(self, n_layers: int) -> dict:
        layer = self.steered_layer(n_layers)
        return {"layers": f"{max(0, layer - 2)}-{layer}", "params": self.hp.update}

    def setup(self, ctx):
        super().setup(ctx)
        from lumebench.methods.params import num_layers

        self.layer = self.steered_layer(num_layers(ctx.model))
        hidden = ctx.model.config.hidden_size
        g = torch.Generator().manual_seed(self.hp.direction_seed)
        u = torch.rand(hidden, generator=g)
        self.control = self.hp.steering_coef * u / u.norm()

    def loss(self, ctx, forget, retain):
        h_f = _hidden(ctx.model, forget, self.layer)
        forget_loss = _masked_mse(h_f, self.control.to(h_f.device, h_f.dtype), forget["attention_mask"])
        h_r = _hidden(ctx.model, retain, self.layer)
        with ctx.reference() as ref:
            h_ref = _hidden(ref, retain, self.layer)
        retain_loss = _masked_mse(h_r, h_ref, retain["attention_mask"])
        return forget_loss + self.hp.alpha * retain_loss, {"forget_mse": float(forget_loss.detach()),
                                                           "retain_mse": float(retain_loss.detach())}
