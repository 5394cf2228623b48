"""SHA256 (SemEval-2025 Task 4, 1B track 2nd; Agrawal & Huang 2025, "SHA256 at SemEval-2025 Task 4:
Selective Amnesia – Constrained Unlearning for Large Language Models via Knowledge Isolation").

Causal tracing located the memorised associations in the first layers, so only decoder layers 0–5
are updated (clipped to the model's depth), with gradient difference whose retain weight adapts to
how far the retain loss has drifted:

    L = −NLL̄(forget) + α·NLL̄(retain),   α = clip(a·b^ΔL + c, α_min, α_max)

lumebench's default variant (preset ``lumebench`` = the defaults, ``alpha_rule="gap"``): ΔL is the
*loss gap* of the retain batch — its NLL̄ now minus its NLL̄ under the model before unlearning
(cached once) — from the first step, α_max 2.8 (the paper's number), attention and MLP of layers
0–5 trained, batches of forget paired with retain.

The source (LAB-FLAIR/Constrained-Unlearning-for-LLM, ``unlearn.py``) — preset ``original``:

- only the **MLPs** of layers 0–5 (``--trainable_layers "[0,1,2,3,4,5]"``, ``--train_kind mlp``,
  l. 349-350, applied l. 284-294);
- batches drawn from forget and retain together (one dataset, ``RandomSampler``, l. 21-64, 234);
  −CE(forget) + m·CE(retain), each CE the mean over the batch's answer tokens (l. 164-215);
- ``alpha_rule="epoch_baseline"``: m = 1.2 throughout epoch 0 (l. 205), while a running baseline
  collects Σ(batch retain CE) / Σ(retain examples) (l. 206-209 — a sum of batch *means* divided by
  a number of *examples*, as written); from epoch 1 on, a batch whose retain CE is above that
  baseline gets m = clip(round(0.3·6^Δ + 0.8, 1), 1.2, 2.3) with Δ = CE − baseline (l. 210-213),
  any other batch m = 1.2;
- per-device batch 12 × accumulation 10 = 120 examples a step, lr 1.5e-5, 8 epochs (l. 298-301,
  351), the Trainer's AdamW (0.9, 0.999), no weight decay, no warm-up, linear decay, clipping at 1.

- ``prompt_format="chat"`` (a trainer setting): the training prompts are the input as one user turn
  in the chat template with the generation prompt, the output's tokens right after it
  (``apply_chat_template(..., add_generation_prompt=True)`` + ``tokenizer(output)``, l. 34-43);
  lumebench evaluates on the raw prompt either way, as the official evaluation does.

Not reproduced: keeping the best checkpoint by validation loss (``load_best_model_at_end``,
l. 310-311; lumebench keeps the last); the source's target has no EOS appended (lumebench's does).
The baseline is kept in memory: a run resumed after epoch 0 starts its baseline again.

Layers 0–5 on SmolLM2-135M (30 layers) are its first fifth, the first 6 of 30 blocks: the number
comes from causal tracing on OLMo-1B (16 layers) / OLMo-7B (32 layers) — where 0–5 is the first
third / fifth — and was not traced on SmolLM2; on the tiny test target (2-4 layers) it is every layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lumebench import checks
from lumebench.checks import setting
from lumebench.methods.base import IGNORE, Method, forget_ascent, later, mean_nll, sequence_nll
from lumebench.registry import METHODS


@dataclass
class SHA256Hparams:
    a: float = setting(0.3, checks.finite)           # γ = a·b^ΔL + c (SHA256 paper; unlearn.py l. 213)
    b: float = setting(6.0, checks.positive_float)           # (ibid.)
    c: float = setting(0.8, checks.finite)           # (ibid.)
    alpha_min: float = setting(1.2, checks.nonnegative)   # α clipped to [α_min, α_max] (ibid.; unlearn.py l. 205, 213)
    alpha_max: float = setting(2.8, checks.nonnegative)   # the paper's cap; the code's is 2.3 (unlearn.py l. 213)
    last_layer: int = setting(5, checks.nonnegative_int)      # layers 0..5 are updated (ibid., found by causal tracing on OLMo 1B/7B)
    alpha_rule: str = later("gap", checks.one_of("gap", "epoch_baseline"))     # "gap" (lumebench) or "epoch_baseline" (the source), see above
    update: str = later("", lambda v, k: v if v == "" else checks.regex(v, k))            # parameter names trained in layers 0..5 ("" = all; the source: "mlp")
    mixed_batches: bool = later(False)  # forget and retain shuffled together into each batch (the source)


@METHODS.register("sha256", help="SHA256 (SemEval-25 1B 2nd): layers 0-5 only, -NLL(forget) + "
                                 "alpha*NLL(retain) with alpha adapted to the retain loss gap")
class SHA256(Method):
    Hparams = SHA256Hparams
    source: ClassVar[str] = ("LAB-FLAIR/Constrained-Unlearning-for-LLM unlearn.py; Agrawal & Huang 2025 "
                             "(SemEval-2025 Task 4)")
    preset_defaults: ClassVar[dict] = {
        "original": {
            "last_layer": 5, "update": r"\.mlp\.",           # unlearn.py l. 349-350, 284-294
            "alpha_rule": "epoch_baseline", "a": 0.3, "b": 6.0, "c": 0.8,  # l. 205-213
            "alpha_min": 1.2, "alpha_max": 2.3,              # l. 205, 213
            "mixed_batches": True,                           # l. 21-64, 234 (one shuffled dataset)
            "batch_size": 12, "grad_accum": 10,              # l. 298-299
            "lr": 1.5e-5, "epochs": 8,                       # l. 300, 351
            # TrainingArguments (l. 296-315) leave the Trainer's defaults: AdamW (0.9, 0.999), no
            # weight decay, no warm-up, linear decay to 0, gradients clipped at norm 1
            "adam_betas": [0.9, 0.999], "weight_decay": 0.0, "warmup_ratio": 0.0, "lr_schedule": "linear",
            "max_grad_norm": 1.0, "lora": False,
            "prompt_format": "chat",                         # l. 34-43 (apply_chat_template)
        },
        "lumebench": {},
    }

    def default_selection(self, n_layers: int) -> dict:
        sel = {"layers": f"0-{min(self.hp.last_layer, n_layers - 1)}"}
        if self.hp.update:
            sel["params"] = self.hp.update
        return sel

    def setup(self, ctx):
        super().setup(ctx)
        if self.hp.alpha_rule == "gap":
            ctx.cached_reference_nll("retain")
        self.baseline_sum, self.baseline_n, self.baseline = 0.0, 0, 0.0

    def schedule(self, forget, retain, *, batch_size, retain_batch_size, pad_id, seed, epochs):
        if not self.hp.mixed_batches:
            return None
        from lumebench.methods.data import MixedBatches

        return MixedBatches(forget, retain, batch_size, epochs, pad_id, seed)

    def retain_weight(self, gap: float) -> float:
        return min(self.hp.alpha_max, max(self.hp.alpha_min, self.hp.a * self.hp.b ** gap + self.hp.c))

    def source_multiplier(self, nll_r: float, n_retain: int, epoch: int) -> tuple[float, float]:
        """(m, Δ) of the source's rule (unlearn.py l. 204-213), updating the epoch-0 baseline."""
        if epoch == 0:
            self.baseline_sum += nll_r
            self.baseline_n += n_retain
            self.baseline = self.baseline_sum / max(1, self.baseline_n)
            return self.hp.alpha_min, 0.0
        if nll_r > self.baseline:
            gap = nll_r - self.baseline
            m = round(self.hp.a * self.hp.b ** gap + self.hp.c, 1)
            return min(max(m, self.hp.alpha_min), self.hp.alpha_max), gap
        return self.hp.alpha_min, 0.0

    def loss(self, ctx, forget, retain):
        if self.hp.alpha_rule == "epoch_baseline":
            loss_f, nll_f = forget_ascent(ctx.model, forget)
            nll_r = mean_nll(ctx.model, retain)
            n_retain = int(((retain["labels"] != IGNORE).sum(1) > 0).sum())  # rows with answer tokens
            epoch = int(retain["epoch"]) if "epoch" in retain else 0
            alpha, gap = (self.source_multiplier(float(nll_r.detach()), n_retain, epoch) if n_retain
                          else (0.0, 0.0))
            return loss_f + alpha * nll_r, {"forget_nll": nll_f, "retain_nll": float(nll_r.detach()),
                                            "loss_gap": gap, "alpha": alpha}
        loss_f, nll_f = forget_ascent(ctx.model, forget)
        ell, n_tok = sequence_nll(ctx.model, retain)
        nll_r = ell.sum() / n_tok.sum().clamp(min=1)
        ref = ctx.cached_reference_nll("retain")[retain["index"].cpu()].sum() / n_tok.sum().clamp(min=1).cpu()
        gap = float(nll_r.detach().cpu()) - float(ref)
        alpha = self.retain_weight(gap)
        return loss_f + alpha * nll_r, {"forget_nll": nll_f, "retain_nll": float(nll_r.detach()),
                                        "loss_gap": gap, "alpha": alpha}
