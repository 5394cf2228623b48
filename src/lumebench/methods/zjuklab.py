"""ZJUKLAB (SemEval-2025 Task 4, 2nd place; Xu et al. 2025, "ZJUKLAB at SemEval-2025 Task 4: Unlearning
via Model Merging").

Two LoRA runs with the same objective and different weights — one that over-forgets, one that
under-forgets — merged with TIES (Yadav et al. 2023: trim each task vector to its top-``density``
magnitudes, elect a sign per weight, average the agreeing values):

    L_k = L_NPO(β) + λ_nll,k·NLL̄(retain) + λ_kl,k·KL(p_ref ‖ p_θ)(retain),   k ∈ {0, 1}
    θ = θ0 + TIES(ΔW_0, ΔW_1)

The whole method is one unlearning :class:`~lumebench.pipeline.step.Step` in ``OUT/`` (reused once
done). Each part is a normal, resumable ``unlearn`` run (``hyperparameter part=k``), a step of its
own in ``OUT/parts/part<k>/`` (trained, not evaluated). The merge (seconds, deterministic) is part of
the method's own step: a rerun before its marker merges again, and the evaluations already in
``curve.jsonl`` are not made again. It uses peft's own TIES (:func:`peft.utils.merge_utils.ties`) on
each LoRA module's full update ΔW = B·A·s (its ``get_delta_weight``), added to the base weight. The
merged model is evaluated before (step 0) and after, and saved as a full model in ``OUT/model``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from lumebench.methods.base import forward_logits, kl_to_reference, mean_nll
from lumebench.methods.npo import NPO
from lumebench.registry import METHODS


@dataclass
class ZJUKLABHparams:
    beta: float = 0.1        # NPO inverse temperature (ZJUKLAB, SPEC.md §4)
    # Retain weights of the two runs. The paper gives the two runs' roles (over- / under-forgetting),
    # not numbers we could check; these are lumebench's choice: part 0 lightly, part 1 strongly regularised.
    nll_weight_0: float = 0.5
    kl_weight_0: float = 0.5
    nll_weight_1: float = 2.0
    kl_weight_1: float = 2.0
    density: float = 0.2     # TIES: fraction of each update kept (Yadav et al. 2023's default k = 20 %)
    merge_weight_0: float = 1.0  # TIES weights of the two task vectors (λ = 1 in Yadav et al. 2023)
    merge_weight_1: float = 1.0
    part: int | None = None  # internal: None = the whole method; 0 / 1 = one of its two runs


@METHODS.register("zjuklab", help="ZJUKLAB (SemEval-25 2nd): two LoRA NPO + retain NLL + KL runs "
                                  "(different weights) merged with TIES")
class ZJUKLAB(NPO):
    Hparams = ZJUKLABHparams
    needs_reference_model = True
    recipe: ClassVar[dict] = {"lora": True}  # both runs are LoRA runs (ibid.)
    #: lr 1e-4, 5 epochs (ibid.)
    trainer_defaults: ClassVar[dict] = {"lr": 1e-4, "epochs": 5}

    @property
    def composite(self) -> bool:
        return self.hp.part is None

    def loss(self, ctx, forget, retain):
        k = self.hp.part
        nll_w, kl_w = ((self.hp.nll_weight_0, self.hp.kl_weight_0) if k == 0
                       else (self.hp.nll_weight_1, self.hp.kl_weight_1))
        loss, logs = self.npo_term(ctx, forget)
        logits = forward_logits(ctx.model, retain)
        nll_r = mean_nll(ctx.model, retain, logits)
        kl = kl_to_reference(logits, ctx.reference_logits(retain), retain["labels"])
        logs.update(retain_nll=float(nll_r.detach()), retain_kl=float(kl.detach()))
        return loss + nll_w * nll_r + kl_w * kl, logs

    # ------------------------------------------------------------------ the two runs and the merge

    def unlearn_composite(self, target, benchmark, method, job, *, overrides, eval_cfg, evaluate):
        """The whole method as the computation of its unlearning :class:`~lumebench.pipeline.step.Step`
        ``job`` (``unlearn`` reuses the step once done): the two parts (steps of their own in
        ``parts/part<k>/``, reused when done, resumed when interrupted), then the merge, evaluated
        before and after (an evaluation already in ``curve.jsonl`` is not made again)."""
        from lumebench.io import append_jsonl, atomic_write_json
        from lumebench.models.checkpoint import save_checkpoint
        from lumebench.pipeline import unlearn as U
        from lumebench.pipeline.curve import Evaluation
        from lumebench.progress import log

        out_dir = Path(job.folder)
        overrides = {k: v for k, v in overrides.items() if k != "part"}
        ident, family = U._target_identity(target)
        _, cfg = U.resolve_config(method, overrides, family=family)
        t0 = time.time()
        parts = [U.unlearn(target, benchmark, method, out_dir / "parts" / f"part{k}",
                           overrides={**overrides, "part": k}, eval_cfg=eval_cfg, evaluate=False)
                 for k in (0, 1)]
        state = self._start_state(job, benchmark, method, cfg, ident, parts)
        model, tokenizer = U._load_target(target)
        bench_eval = U.eval_benchmark(benchmark, cfg.eval_subset, cfg.train.seed)
        curve = U.read_curve(out_dir)

        def evaluate_at(step: int, epoch: float, m) -> None:
            if not evaluate or any(r.step == step for r in curve):
                return
            results = U._evaluate(m, tokenizer, bench_eval, eval_cfg, out_dir / "eval" / f"step_{step:06d}")
            rec = Evaluation.of(step, epoch, results)
            append_jsonl(out_dir / U.CURVE, rec.to_json())
            curve.append(rec)

        evaluate_at(0, 0.0, model)
        model = self.merge(model, [Path(p["final_model"]).parent / "adapter" for p in parts])
        steps = max(int(p["steps"]) for p in parts)
        evaluate_at(steps, float(cfg.train.epochs), model)
        final_dir = save_checkpoint(model, tokenizer, out_dir / "model")
        statuses = [p["status"] for p in parts]
        status = "finished" if all(s == "finished" for s in statuses) else \
            "; ".join(f"part {k} {s}" for k, s in enumerate(statuses) if s != "finished")
        curve.sort(key=lambda r: r.step)
        state.update({"status": status, "steps": steps, "epochs": float(cfg.train.epochs),
                      "train_wall_s": round(sum(p.get("train_wall_s") or 0 for p in parts), 1),
                      "wall_s": round(time.time() - t0, 1), "final_model": str(final_dir),
                      "curve": [r.brief() for r in curve],
                      "last_good_step": steps,
                      "final": next((r.brief() for r in curve if r.step == steps), None)})
        atomic_write_json(out_dir / U.RESULT, state)
        log.info("%s %s: two LoRA runs merged with TIES (density %g); results in %s", method, status,
                 self.hp.density, out_dir)
        return state

    def _start_state(self, job, benchmark, method, cfg, ident, parts: list[dict]) -> dict:
        """The content of ``unlearn.json`` while the merge is going (written now)."""
        from lumebench.pipeline.unlearn import start_record

        first = {k: parts[0][k] for k in ("trainable", "n_trainable_tensors", "n_forget_examples",
                                          "n_retain_examples", "steps_per_epoch")}
        return start_record(job, benchmark, method, self.hp, cfg, ident, **first,
                            parts=[{k: p.get(k) for k in ("status", "steps", "train_wall_s", "final_model")}
                                   for p in parts])

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
                    deltas = [module.get_delta_weight(n) for n in names]
                    base = module.get_base_layer().weight
                    merged = ties(deltas, weights.to(deltas[0].device, deltas[0].dtype), self.hp.density)
                    base.add_(merged.to(base.dtype))
        return peft_model.unload()  # drops the adapters, keeps the (merged) base weights
