"""NPO training speed: reference log-probs cached once vs recomputed every step.

Most unlearning code bases (TOFU, open-unlearning, the SemEval baselines) run the frozen reference
model on every forget batch to get log π_ref(y|x). It never changes, so lumebench computes it once
before training (one forward pass over the forget set) and looks it up by example index. This script
trains the same model on the same batches both ways, in the same process, alternating the two in
several rounds (the machine may be shared: only the ratio within one run means something), and
prints training tokens/s of each and their ratio — with the one-off caching pass charged to the
cached variant.

    python benchmarks/unlearn_speed.py                     # tiny model, generated data, CPU
    python benchmarks/unlearn_speed.py --target DIR --data DIR --steps 20 --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from lumebench.methods.base import sequence_nll
from lumebench.methods.npo import NPO, npo_loss


class NPORecomputed(NPO):
    """NPO as other frameworks implement it: ℓ_ref from a reference forward pass on every step."""

    needs_reference_model = True

    def setup(self, ctx):
        ctx.ensure_reference()  # the frozen copy other frameworks keep; no cache

    def npo_term(self, ctx, forget):
        ell, _ = sequence_nll(ctx.model, forget)
        with ctx.reference() as ref:
            ell_ref, _ = sequence_nll(ref, forget)
        return npo_loss(ell, ell_ref, self.hp.beta), {}


def run_once(method, model, forget, retain, pad_id, steps, batch_size, out_dir) -> dict:
    from lumebench.methods.base import UnlearnContext
    from lumebench.methods.data import PairedBatches
    from lumebench.train.loop import TrainConfig, train

    ctx = UnlearnContext(model=model, forget=forget, retain=retain, pad_id=pad_id, batch_size=batch_size)
    t0 = time.perf_counter()
    method.setup(ctx)
    setup_s = time.perf_counter() - t0
    batches = PairedBatches(forget, retain, batch_size, batch_size, pad_id, seed=0, total=steps, chunk=steps)

    def loss_fn(m, batch):
        ctx.model = m
        loss, logs = method.loss(ctx, batch["forget"], batch["retain"])
        # count the forget tokens only: NPO does not use the retain batch
        return loss, {"tokens": int(batch["forget"]["attention_mask"].sum())}

    res = train(model, loss_fn, batches, TrainConfig(lr=1e-4, epochs=1, batch_size=batch_size,
                                                     mixed_precision="no", log_every=10**9),
                out_dir=out_dir, resume=False)
    train_s = res.tokens / max(res.tokens_per_s, 1e-9)
    step_s = [h["tokens"] / h["tokens_per_s"] for h in res.history]
    return {"tokens": res.tokens, "train_s": train_s, "setup_s": setup_s, "step_s": step_s,
            "tok_s_train": res.tokens / train_s, "tok_s_total": res.tokens / (train_s + setup_s)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", help="a model directory (default: a fresh tiny model; speed does not "
                                     "depend on what the weights have memorised)")
    ap.add_argument("--data", help="benchmark directory (default: generated, 6 documents per task)")
    ap.add_argument("--steps", type=int, default=20, help="training steps per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of both variants")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared machine)")
    args = ap.parse_args(argv)
    os.environ.setdefault("LUME_QUIET", "1")
    torch.set_num_threads(args.threads)

    from lumebench.data.loaders import load_benchmark
    from lumebench.methods.data import tokenize_rows

    tmp = Path(tempfile.mkdtemp(prefix="lume-unlearn-speed-"))
    if args.data:
        bench = load_benchmark(args.data)
    else:
        from lumebench.data.generate import generate_benchmark
        bench = load_benchmark(generate_benchmark(tmp / "data", docs_per_task=6, seed=0))
    if args.target:
        from lumebench.models import load_model
        base, tok = load_model(args.target)
    else:
        from lumebench.models.tiny import build_model, build_tokenizer
        from lumebench.pipeline.target import benchmark_texts
        tok = build_tokenizer(benchmark_texts(bench))
        base = build_model(tok)
    forget, retain = tokenize_rows(bench.forget, tok), tokenize_rows(bench.retain, tok)
    n_params = sum(p.numel() for p in base.parameters())
    print(f"model: {args.target or 'tiny (fresh)'}, {n_params / 1e6:.1f}M parameters; forget set "
          f"{len(forget)} examples, {sum(len(e.ids) for e in forget)} tokens; {args.steps} steps of "
          f"batch {args.batch_size}, {args.rounds} rounds, {torch.get_num_threads()} thread(s)")

    results: dict[str, list[dict]] = {"cached": [], "recomputed": []}
    for r in range(args.rounds):
        for name, method in (("cached", NPO()), ("recomputed", NPORecomputed())):
            model = copy.deepcopy(base)
            rec = run_once(method, model, forget, retain, tok.pad_token_id, args.steps, args.batch_size,
                           tmp / f"{name}{r}")
            results[name].append(rec)
            print(f"  round {r + 1} {name:10s}: {rec['tok_s_train']:8,.0f} training tokens/s "
                  f"({rec['tok_s_total']:,.0f} with the {rec['setup_s']:.2f} s setup)")
    # per-step ratios: both variants see the same batches in the same order, so step i of one is
    # compared with step i of the other in the same round (robust to load bursts on a shared machine)
    ratios = [rc / ca for a, b in zip(results["cached"], results["recomputed"])
              for ca, rc in zip(a["step_s"], b["step_s"])]
    step_ratio = statistics.median(ratios)
    med_step = {k: statistics.median(t for x in v for t in x["step_s"]) for k, v in results.items()}
    setup = statistics.median(x["setup_s"] for x in results["cached"])
    tokens_per_step = results["cached"][0]["tokens"] / args.steps
    print(f"NPO, reference cached once : {tokens_per_step / med_step['cached']:,.0f} tokens/s "
          f"(median step {med_step['cached']:.3f} s; one-off caching pass {setup:.2f} s "
          f"= {setup / med_step['cached']:.1f} steps)")
    print(f"NPO, reference every step  : {tokens_per_step / med_step['recomputed']:,.0f} tokens/s "
          f"(median step {med_step['recomputed']:.3f} s)")
    epoch_steps = -(-len(forget) // args.batch_size)
    for epochs in (1, 10):
        n = epochs * epoch_steps
        t_c = med_step["cached"]
        whole = n * t_c * step_ratio / (n * t_c + setup)
        print(f"  a {epochs:2d}-epoch run ({n} steps), caching pass included: x{whole:.2f}")
    print(f"speed-up per step: x{step_ratio:.2f} (median of {len(ratios)} paired steps); the cache also "
          f"saves the reference copy's memory under full fine-tuning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
