"""ZJUKLAB (SemEval-2025 Task 4, 2nd place; Xu et al. 2025, "ZJUKLAB at SemEval-2025 Task 4: Unlearning
via Model Merging").

Two LoRA runs with the same objective and different weights — one that over-forgets, one that
under-forgets — merged with TIES (Yadav et al. 2023: trim each task vector to its top-``density``
magnitudes, elect a sign per weight, average the agreeing values):

    L_k = L_NPO(β) + λ_nll,k·NLL̄(retain) + λ_kl,k·KL(p_ref ‖ p_θ)(retain),   k ∈ {0, 1}
    θ = θ0 + TIES(ΔW_0, ΔW_1)

The whole method is one unlearning :class:`~lumebench.step.Step` in ``OUT/`` (reused once
done). Each part is a normal, resumable ``unlearn`` run (``hyperparameter part=k``), a step of its
own in ``OUT/parts/part<k>/`` (trained, not evaluated). The merge (seconds, deterministic) is part of
the method's own step: a rerun before its marker merges again, and the evaluations already in
``curve.jsonl`` are not made again. It uses peft's own TIES (:func:`peft.utils.merge_utils.ties`) on
each LoRA module's full update ΔW = B·A·s (its ``get_delta_weight``), added to the base weight. The
merged model is evaluated before (step 0) and after, and saved as a full model in ``OUT/model``.

The source (zjunlp/unlearn, ``semeval25/unlearn-merging.py``) — preset ``original`` — differs from
lumebench's default variant (preset ``lumebench`` = the defaults) in:

- the weights: ``ga_ratio·NPO + gd_ratio·KL(retain) + gk_ratio·NLL(retain)`` (l. 250) with
  (0.4, 0.4, 0.2) for the first run (l. 541-543) and (0.3, 0.3, 0.4) for the second (l. 562-564);
  lumebench's default is 1 / 0.5 / 0.5 and 1 / 2 / 2 (lumebench's choice before the code was read);
- ``npo_reduction="batch"``: NPO β 0.1 (l. 154) on the batch-pooled mean token loss —
  ``get_batch_loss`` is the mean over every answer token of the batch (l. 246-249, 425-442) — not
  per sequence;
- ``kl_on="all"``: KL over every position of the retain batch, prompt included
  (``log_softmax(...).view(-1, V)``, ``kl_div(..., "batchmean")``, l. 236-244), not the answer tokens;
- LoRA r 32, α 32, dropout 0.05 (l. 544-546, 565-567) on every linear layer but the LM head
  (``find_all_linear_names``, l. 81, 414-423) — lumebench's default is the trainer's r 16 / α 64;
- ``ties_on="factors"``: peft's ``add_weighted_adapter(["model1", "model2"], [1.0, 1.0], "merge",
  combination_type="ties", density=0.8)`` (l. 607-614) runs TIES on the LoRA **A** factors and,
  separately, on the **B** factors (each weighted by √(w·scaling), into an adapter of scaling 1),
  and the merged update is B_m·A_m — lumebench's default runs TIES on each ΔW = B·A·s at density 0.2;
- per-device batches of 1 × 4 and 2 × 4 (l. 534-535, 555-556), lr 1e-4, 5 epochs, one epoch of
  warm-up (l. 94) then linear decay, weight decay 0.01, paged AdamW (l. 102, betas 0.9 / 0.999).

Not reproduced: the source pads every sequence on the left to 256 tokens (l. 326-341), so its KL
mean also runs over the padding positions (lumebench averages over the real tokens); it pairs
forget example i with retain example i mod |retain| (l. 361-365; lumebench draws retain batches
from a seeded stream); fp16 weights; the number of GPUs (the file does not say: the batches are
per device).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from lumebench import checks
from lumebench.checks import setting
from lumebench.methods.base import forward_logits, kl_all_positions, kl_to_reference, later, mean_nll
from lumebench.methods.npo import NPO
from lumebench.registry import METHODS


@dataclass
class ZJUKLABHparams:
    beta: float = setting(0.1, checks.positive_float)        # NPO inverse temperature (ZJUKLAB, SPEC.md §4)
    # Retain weights of the two runs. The paper gives the two runs' roles (over- / under-forgetting),
    # not numbers we could check; these are lumebench's choice: part 0 lightly, part 1 strongly regularised.
    nll_weight_0: float = setting(0.5, checks.nonnegative)
    kl_weight_0: float = setting(0.5, checks.nonnegative)
    nll_weight_1: float = setting(2.0, checks.nonnegative)
    kl_weight_1: float = setting(2.0, checks.nonnegative)
    density: float = setting(0.2, checks.probability)     # TIES: fraction of each update kept (Yadav et al. 2023's default k = 20 %)
    merge_weight_0: float = setting(1.0, checks.finite)  # TIES weights of the two task vectors (λ = 1 in Yadav et al. 2023)
    merge_weight_1: float = setting(1.0, checks.finite)
    part: int | None = setting(None, lambda v, k: checks.integer(v, k, minimum=0, maximum=1))  # internal: None = the whole method; 0 / 1 = one of its two runs
    npo_weight_0: float = later(1.0, checks.nonnegative)   # NPO weights of the two runs (the source: 0.4 / 0.3)
    npo_weight_1: float = later(1.0, checks.nonnegative)
    npo_reduction: str = later("sequence", checks.one_of("sequence", "token", "batch"))  # "sequence" (lumebench) or "batch" (the source), see above
    kl_on: str = later("target", checks.one_of("target", "all"))       # "target" (lumebench) or "all" (the source: every position)
    ties_on: str = later("delta", checks.one_of("delta", "factors"))      # "delta" (lumebench: ΔW = B·A·s) or "factors" (the source: A and B)
    batch_size_0: int | None = later(None, checks.positive_int)  # forget examples per step of each run (None: the trainer's)
    batch_size_1: int | None = later(None, checks.positive_int)


@METHODS.register("zjuklab", help="ZJUKLAB (SemEval-25 2nd): two LoRA NPO + retain NLL + KL runs "
                                  "(different weights) merged with TIES")
class ZJUKLAB(NPO):
    Hparams = ZJUKLABHparams
    needs_reference_model = True
    recipe: ClassVar[dict] = {"lora": True}  # both runs are LoRA runs (ibid.)
    source: ClassVar[str] = "zjunlp/unlearn semeval25/unlearn-merging.py; Xu et al. 2025 (SemEval-2025 Task 4)"
    #: lr 1e-4, 5 epochs (ibid.)
    trainer_defaults: ClassVar[dict] = {"lr": 1e-4, "epochs": 5}
    preset_defaults: ClassVar[dict] = {
        "original": {  # semeval25/unlearn-merging.py, line numbers in the module docstring's order
            "npo_weight_0": 0.4, "kl_weight_0": 0.4, "nll_weight_0": 0.2,   # l. 541-543, l. 250
            "npo_weight_1": 0.3, "kl_weight_1": 0.3, "nll_weight_1": 0.4,   # l. 562-564
            "beta": 0.1, "npo_reduction": "batch",                           # l. 154, 246-249
            "kl_on": "all",                                                  # l. 236-244
            "lora": True, "lora_r": 32, "lora_alpha": 32, "lora_dropout": 0.05,  # l. 544-546, 565-567
            "density": 0.8, "merge_weight_0": 1.0, "merge_weight_1": 1.0, "ties_on": "factors",  # l. 611-614
            "batch_size_0": 4, "batch_size_1": 8,                            # 1 x 4 (l. 534-535), 2 x 4 (l. 555-556)
            "lr": 1e-4, "epochs": 5,                                         # l. 537, 536
            "warmup_ratio": 0.2, "lr_schedule": "linear",                    # 1 epoch of 5 (l. 94); the Trainer's linear decay
            "weight_decay": 0.01,                                            # l. 538
            "adam_betas": [0.9, 0.999], "max_grad_norm": 1.0,                # paged_adamw_32bit (l. 102), Trainer defaults
            "max_length": 256,                                               # l. 538 (max_length)
        },
        "lumebench": {},
    }

    @property
    def composite(self) -> bool:
        return self.hp.part is None

    def loss(self, ctx, forget, retain):
        k = self.hp.part
        nll_w, kl_w = ((self.hp.nll_weight_0, self.hp.kl_weight_0) if k == 0
                       else (self.hp.nll_weight_1, self.hp.kl_weight_1))
        npo_w = self.hp.npo_weight_0 if k == 0 else self.hp.npo_weight_1
        loss, logs = self.npo_term(ctx, forget)
        logits = forward_logits(ctx.model, retain)
        nll_r = mean_nll(ctx.model, retain, logits)
        if self.hp.kl_on == "all":
            kl = kl_all_positions(logits, ctx.reference_logits(retain), retain["attention_mask"])
        else:
            kl = kl_to_reference(logits, ctx.reference_logits(retain), retain["labels"])
        logs.update(retain_nll=float(nll_r.detach()), retain_kl=float(kl.detach()))
        return npo_w * loss + nll_w * nll_r + kl_w * kl, logs

    # ------------------------------------------------------------------ the two runs and the merge

    def unlearn_composite(self, run) -> dict:
        """The whole method as the computation of its unlearning step, through the pipeline's
        :class:`~lumebench.pipeline.unlearn.CompositeRun` ``run``: the two parts (runs of their own in
        ``parts/part<k>/``, reused when done, resumed when interrupted), then the merge, evaluated
        before and after (an evaluation already in ``curve.jsonl`` is not made again)."""
        from lumebench.progress import log

        overrides = {k: v for k, v in run.overrides.items() if k != "part"}
        cfg = run.config
        t0 = time.time()
        parts = [run.part(k, self.part_overrides(overrides, k)) for k in (0, 1)]
        first = {k: parts[0][k] for k in ("trainable", "n_trainable_tensors", "n_forget_examples",
                                          "n_retain_examples", "steps_per_epoch")}
        state = run.start(**first, parts=[{k: p.get(k) for k in ("status", "steps", "train_wall_s", "final_model")}
                                          for p in parts])
        model, tokenizer = run.load_target()
        run.evaluate_at(0, 0.0, model)
        model = self.merge(model, [Path(p["final_model"]).parent / "adapter" for p in parts])
        steps = max(int(p["steps"]) for p in parts)
        run.evaluate_at(steps, float(cfg.train.epochs), model)
        final_dir = run.save_model(model, tokenizer)
        statuses = [p["status"] for p in parts]
        status = "finished" if all(s == "finished" for s in statuses) else \
            "; ".join(f"part {k} {s}" for k, s in enumerate(statuses) if s != "finished")
        curve = run.curve
        state.update({"status": status, "steps": steps, "epochs": float(cfg.train.epochs),
                      "train_wall_s": round(sum(p.get("train_wall_s") or 0 for p in parts), 1),
                      "wall_s": round(time.time() - t0, 1), "final_model": str(final_dir),
                      "curve": [r.brief() for r in curve],
                      "last_good_step": steps,
                      "final": next((r.brief() for r in curve if r.step == steps), None)})
        log.info("%s %s: two LoRA runs merged with TIES (density %g); results in %s", run.method, status,
                 self.hp.density, run.folder)
        return run.finish(state)

    def part_overrides(self, overrides: dict, k: int) -> dict:
        """The settings of run ``k``: the method's, its own batch size where the recipe has one."""
        batch = self.hp.batch_size_0 if k == 0 else self.hp.batch_size_1
        return {**overrides, "part": k, **({"batch_size": batch} if batch is not None else {})}

    def merge(self, model, adapters: list[Path]):
        """θ0 + TIES(ΔW_0, ΔW_1) on every LoRA module, returned as a plain model (peft's TIES)."""
        from peft import PeftModel
        from peft.tuners.lora import LoraLayer
        from peft.utils.merge_utils import ties

        names = ["part0", "part1"]
        peft_model = PeftModel.from_pretrained(model, str(adapters[0]), adapter_name=names[0])
        peft_model.load_adapter(str(adapters[1]), adapter_name=names[1])
        weights = torch.tensor([self.hp.merge_weight_0, self.hp.merge_weight_1])
        with torch.no_grad():
            for module in peft_model.modules():
                if isinstance(module, LoraLayer) and all(n in module.lora_A for n in names):
                    base = module.get_base_layer().weight
                    if self.hp.ties_on == "factors":
                        merged = ties_on_factors(module, names, weights.tolist(), self.hp.density)
                    else:
                        deltas = [module.get_delta_weight(n) for n in names]
                        merged = ties(deltas, weights.to(deltas[0].device, deltas[0].dtype), self.hp.density)
                    base.add_(merged.to(base.dtype))
        return peft_model.unload()  # drops the adapters, keeps the (merged) base weights


def ties_on_factors(module, names: list[str], weights: list[float], density: float) -> torch.Tensor:
    """The update of peft's ``add_weighted_adapter(names, weights, combination_type="ties", density)``
    on one LoRA module (what ZJUKLAB merges with): TIES on the A factors and, separately, on the B
    factors, each adapter's factor weighted by √|w·scaling| (A also by the sign of w·scaling), into
    an adapter of rank r and α = r (scaling 1); the update is B_m·A_m."""
    import math

    from peft.utils.merge_utils import ties

    ws = [w * module.scaling[n] for w, n in zip(weights, names)]
    w_a = torch.tensor([math.sqrt(abs(w)) * (1 if w >= 0 else -1) for w in ws])
    w_b = torch.tensor([math.sqrt(abs(w)) for w in ws])
    a = ties([module.lora_A[n].weight.detach() for n in names], w_a.to(module.lora_A[names[0]].weight), density)
    b = ties([module.lora_B[n].weight.detach() for n in names], w_b.to(module.lora_B[names[0]].weight), density)
    return b @ a
