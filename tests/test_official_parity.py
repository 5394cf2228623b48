"""Parity with the official evaluation environment (issue 9).

The first tests need no side environment: the checkpoint writer's keys, the official CSV round trip,
the row-order means. The rest run inside a side virtualenv with the organisers' versions
(transformers 4.45.2, pandas 2.2.3, rouge_score 0.1.2, scikit-learn 1.5.0 — built once by
``lumebench.parity.official_env`` and cached under the lumebench cache; CI builds it on a fresh
machine): a checkpoint written by lumebench loads there with bit-identical fp32 logits and the same
tokenisation, while a plain transformers-5 ``save_pretrained`` does not; pandas' missing-value list
is the one lumebench emulates; and ``lume parity`` finds identical official scores for a fine-tuned
and an unlearned tiny target, in fp32 and bf16.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from lumebench.cli import main
from lumebench.eval import metrics
from lumebench.models.checkpoint import make_compatible, save_checkpoint

PROBES = ["Paris is the capital of France .", "What is Ivory Magenta's phone number? 5551234567",
          "Héloïse n't 've — 123-45-6789\nnew line", ""]


def _tiny(rope_theta: float = 100_000.0, vocab: int = 300):
    """A small Llama with a non-default RoPE base (as SmolLM2's 100,000) and its BPE tokenizer."""
    from lumebench.models.tiny import TinyConfig, build_model, build_tokenizer

    tok = build_tokenizer([p for p in PROBES if p] * 20 + ["the a of and to in is was"] * 20, vocab)
    model = build_model(tok, TinyConfig(vocab_size=vocab, hidden_size=32, num_layers=2, num_heads=2,
                                        intermediate_size=64, max_position=128))
    model.config.rope_parameters = {"rope_type": "default", "rope_theta": rope_theta}
    model.model.rotary_emb.__init__(model.config)  # recompute inv_freq for the new base
    return model.eval(), tok


# --- without the side environment -----------------------------------------------------------------

def test_writer_adds_the_4x_keys_and_5x_reads_the_same_model(tmp_path):
    from lumebench.models import load_model

    model, tok = _tiny()
    save_checkpoint(model, tok, tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert cfg["rope_theta"] == 100_000.0 and cfg["rope_parameters"]["rope_theta"] == 100_000.0
    assert cfg["torch_dtype"] == cfg["dtype"] == "float32" and cfg["rope_scaling"] is None
    tcfg = json.loads((tmp_path / "ckpt" / "tokenizer_config.json").read_text())
    assert tcfg["tokenizer_class"] == "PreTrainedTokenizerFast" and tcfg["eos_token"] == "<|endoftext|>"
    gen = json.loads((tmp_path / "ckpt" / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tok.eos_token_id
    assert make_compatible(tmp_path / "ckpt") == []  # idempotent
    again, tok2 = load_model(str(tmp_path / "ckpt"), dtype="float32", device="cpu")
    ids = tok(PROBES[0], return_tensors="pt").input_ids
    assert tok2(PROBES[0]).input_ids == ids[0].tolist()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind


def test_writer_replaces_an_earlier_save_and_keeps_other_files(tmp_path):
    model, tok = _tiny()
    out = tmp_path / "target"
    out.mkdir()
    (out / "target.json").write_text("{}")
    (out / "model-00001-of-00002.safetensors").write_bytes(b"stale shard")
    save_checkpoint(model, tok, out)
    assert (out / "target.json").read_text() == "{}" and not (out / "model-00001-of-00002.safetensors").exists()
    assert (out / "model.safetensors").is_file()


def test_pandas_missing_values_are_scored_as_nan():
    # every string pandas.read_csv reads as missing is scored as "nan", as in the official script
    for na in sorted(metrics.PANDAS_NA_STRINGS):
        assert metrics.csv_roundtrip(na) == "nan"
        assert metrics.score_row("qa", "nan", na)["exact_match"] == 1, na
        assert metrics.score_row("qa", "Paris", na)["exact_match"] == 0, na
        assert metrics.score_row("qa", na, "NaN")["exact_match"] == 1, na      # a gold that pandas drops too
        assert metrics.score_row("sc", "nan nan", na)["rougeL_recall"] == 0.5, na
        assert metrics.score_row("qa", "nan", na, official_csv=False)["exact_match"] == int(na.lower() == "nan")
        assert metrics.em_still_possible(na, "xyz")  # no qa early exit when "nan" could still match
    for kept in (" NA", "NA ", "none", "Nan", "N/A.", "0", "-", "nil"):
        assert metrics.csv_roundtrip(kept) == kept
    assert metrics.em_still_possible("NAN", "No")  # "None" would still match "nan" after the round trip
    assert not metrics.em_still_possible("Paris", "Lon")


def test_overall_means_add_in_file_row_order():
    # pandas' mean of the official object columns adds the values one by one in row order; these
    # values give a different float when added in another order, pairwise or compensated
    vals = [0.1, 1e16, 0.3, -1e16, 0.7, 0.2]
    recs = [{"split": "forget", "task": f"Task{1 + i % 3}", "kind": "sc", "rougeL_recall": v, "exact_match": None}
            for i, v in enumerate(vals)]
    seq = 0.0
    for v in vals:
        seq += v
    assert seq != sum(sorted(vals)) and seq != __import__("math").fsum(vals)
    got = metrics.split_scores(recs)["forget-set"]["overall-regurgitation-score"]
    assert got == seq / len(vals)


def test_bad_checkpoints_are_one_line_each(tmp_path, capsys, lume_data):
    model, tok = _tiny()
    pickled = tmp_path / "pickled"
    model.config.save_pretrained(pickled)
    tok.save_pretrained(pickled)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    remote = tmp_path / "remote"
    save_checkpoint(model, tok, remote)
    cfg = json.loads((remote / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (remote / "config.json").write_text(json.dumps(cfg))
    badtok = tmp_path / "badtok"
    save_checkpoint(model, tok, badtok)
    (badtok / "tokenizer.json").write_text("{not json")
    cases = [(pickled, "pickle form (pytorch_model.bin)"), (remote, "field 'auto_map'"),
             (badtok, "unreadable tokenizer")]
    for path, words in cases:
        for argv in (["eval", "--model", str(path), "--data", str(lume_data / "official"), "--out", str(tmp_path / "o")],
                     ["export", str(path), "--out", str(tmp_path / "e")]):
            rc = main(argv)
            err = [l for l in capsys.readouterr().err.strip().splitlines() if not l.startswith("[")]
            assert rc == 2 and len(err) == 1 and err[0].startswith("error:") and words in err[0], (argv, err)
    assert not (tmp_path / "o").exists() and not (tmp_path / "e").exists()


def test_lume_eval_of_a_60_row_sample_gives_the_12_terms_of_parity_s_lumebench_side(tmp_path, capsys, lume_data,
                                                                                    one_thread):
    """``lume parity``'s sample of the official files (30 rows per split: documents' qa rows without
    their sc1 row among them) written as data files: ``lume eval`` scores it (issue 29: it refused
    it, "document ... has no sc1 row") and finds the 12 terms and the overall means that the
    lumebench side of ``lume parity`` finds on that sample (the same model, engine and budget)."""
    from lumebench.data.loaders import load_benchmark
    from lumebench.errors import DataError
    from lumebench.io import write_jsonl
    from lumebench.models.tiny import TinyConfig, build_model, build_tokenizer
    from lumebench.parity.compare import ParityConfig, lumebench_side, official_sample

    sample = official_sample(load_benchmark(lume_data / "official", whole_documents=False), 30, 0, seed=0)
    data = tmp_path / "sample"
    write_jsonl(data / "forget.jsonl", [r.to_official() for r in sample.forget])
    write_jsonl(data / "retain.jsonl", [r.to_official() for r in sample.retain])
    with pytest.raises(DataError, match="has no sc1 row"):  # a sample, not whole documents
        load_benchmark(data)
    tok = build_tokenizer([r.input + " " + r.output for r in sample.rows], 600)
    model = build_model(tok, TinyConfig(vocab_size=600, hidden_size=32, num_layers=2, num_heads=2,
                                        intermediate_size=64, max_position=1024))
    save_checkpoint(model, tok, tmp_path / "model")
    assert main(["eval", "--model", str(tmp_path / "model"), "--data", str(data), "--no-mia",
                 "--max-new-tokens", "16", "--out", str(tmp_path / "eval")]) == 0
    capsys.readouterr()
    got = json.loads((tmp_path / "eval" / "results.json").read_text())
    _, _, side, _ = lumebench_side(tmp_path / "model", sample, ParityConfig(max_new_tokens=16), tmp_path / "side")
    assert len(got["aggregated-terms"]) == 12 and got["aggregated-terms"] == side["aggregated-terms"]
    assert len(set(got["aggregated-terms"])) > 2  # terms that say something (not all 0 or 1)
    for split in ("forget-set", "retain-set"):
        assert got[split] == side[split]
    assert got["meta"]["n_rows"] == 60


# --- inside the official environment ----------------------------------------------------------------

@pytest.fixture(scope="session")
def official_python() -> Path:
    from lumebench.errors import LumeError
    from lumebench.parity.official_env import official_python as build

    try:
        return build()
    except LumeError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"official environment unavailable here: {e}")


def _run_official_probe(py: Path, ckpt: Path, out: Path) -> dict:
    from lumebench.parity.official_env import run_official

    return run_official({"checkpoint": str(ckpt), "dtype": "float32", "probe": PROBES}, out)


def test_lumebench_checkpoint_loads_in_transformers_4_45_with_identical_logits(official_python, tmp_path):
    from safetensors.torch import load_file

    model, tok = _tiny()
    save_checkpoint(model, tok, tmp_path / "ckpt")
    got = _run_official_probe(official_python, tmp_path / "ckpt", tmp_path / "run")
    assert got["versions"]["transformers"] == "4.45.2"
    logits = load_file(str(tmp_path / "run" / "official" / "probe.safetensors"))
    with torch.no_grad():
        for i, text in enumerate(PROBES):
            ids = tok(text).input_ids
            assert got["probe_ids"][i] == ids  # same tokenisation
            if ids:
                assert torch.equal(logits[f"logits_{i}"], model(torch.tensor([ids])).logits[0])  # bit-identical

    # the control: transformers 5's own save_pretrained, tokenizer class repaired by hand, is read
    # by 4.45 as another model (RoPE base 10,000 instead of 100,000) — the test can fail
    plain = tmp_path / "plain"
    model.save_pretrained(plain)
    tok.save_pretrained(plain)
    tcfg = json.loads((plain / "tokenizer_config.json").read_text())
    assert tcfg["tokenizer_class"] == "TokenizersBackend"
    tcfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    (plain / "tokenizer_config.json").write_text(json.dumps(tcfg))
    _run_official_probe(official_python, plain, tmp_path / "run-plain")
    wrong = load_file(str(tmp_path / "run-plain" / "official" / "probe.safetensors"))
    with torch.no_grad():
        ref = model(torch.tensor([tok(PROBES[0]).input_ids])).logits[0]
    assert (wrong["logits_0"] - ref).abs().max() > 1e-5  # (the correct checkpoint: exactly 0 above)


def test_bf16_load_gives_the_official_bf16_logits(official_python, tmp_path):
    # the official script loads bf16 with from_pretrained(torch_dtype=bf16), which keeps RoPE's
    # inv_freq buffer in float32; load_model must too (a plain model.to(bf16) rounds it)
    from safetensors.torch import load_file

    from lumebench.models import load_model

    model, tok = _tiny()
    save_checkpoint(model, tok, tmp_path / "ckpt")
    texts = [" ".join(PROBES[:3]) * 3, PROBES[0]]
    from lumebench.parity.official_env import run_official

    got = run_official({"checkpoint": str(tmp_path / "ckpt"), "dtype": "bfloat16", "probe": texts}, tmp_path / "run")
    official = load_file(str(tmp_path / "run" / "official" / "probe.safetensors"))
    mine, _ = load_model(str(tmp_path / "ckpt"), dtype="bfloat16", device="cpu")
    assert next(mine.parameters()).dtype == torch.bfloat16
    assert mine.model.rotary_emb.inv_freq.dtype == torch.float32
    plain, _ = load_model(str(tmp_path / "ckpt"), dtype="float32", device="cpu")
    plain.to(torch.bfloat16)  # the control: inv_freq rounded to bf16
    assert plain.model.rotary_emb.inv_freq.dtype == torch.bfloat16
    with torch.no_grad():
        for i, text in enumerate(texts):
            ids = torch.tensor([got["probe_ids"][i]])
            assert torch.equal(official[f"logits_{i}"], mine(ids).logits[0].float())  # bit-identical
        ids = torch.tensor([got["probe_ids"][0]])
        assert not torch.equal(official["logits_0"], plain(ids).logits[0].float())


def test_fast_engines_run_one_at_a_time_in_bf16():
    from lumebench.data.records import Row
    from lumebench.eval.generation import GenerationStats, generate
    from lumebench.eval.mia import one_at_a_time

    model, tok = _tiny()
    assert not one_at_a_time(model)
    rows = [Row.from_fields(f"{i}qa0", "Task3", "forget", text, "Paris") for i, text in enumerate(PROBES[:3])]
    fp32 = GenerationStats()
    generate(model, tok, rows, max_new_tokens=6, early_exit=False, stats=fp32)
    assert fp32.rows_per_forward > fp32.forwards  # batched in fp32
    model.to(torch.bfloat16)
    assert one_at_a_time(model)
    low = GenerationStats()
    fast = generate(model, tok, rows, max_new_tokens=6, early_exit=False, stats=low)
    assert low.rows_per_forward == low.forwards and low.prefills == len(rows) and low.draft_proposed == 0
    ref = generate(model, tok, rows, engine="reference", max_new_tokens=6)
    assert [g.token_ids for g in fast] == [g.token_ids for g in ref]


def test_a_lora_model_passes_the_kv_cache_under_its_base_models_keyword():
    """PEFT's ``forward`` takes ``**kwargs``: the engines name the KV cache as the base model does, so
    transformers' "past_key_values is deprecated" warning stays out of the run logs (seen on a GPU)."""
    import warnings

    from peft import LoraConfig, get_peft_model

    from lumebench.data.records import Row
    from lumebench.eval.batching import cache_kwarg
    from lumebench.eval.generation import generate

    model, tok = _tiny()
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert cache_kwarg(lora) == cache_kwarg(model) == "cache"
    rows = [Row.from_fields(f"{i}qa0", "Task3", "forget", text, "Paris") for i, text in enumerate(PROBES[:3])]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        gens = generate(lora, tok, rows, max_new_tokens=6, early_exit=False)
    assert [g.token_ids for g in gens] == [g.token_ids for g in generate(model, tok, rows, max_new_tokens=6,
                                                                          early_exit=False)]


def test_pandas_na_list_and_csv_round_trip_match_the_official_pandas(official_python, tmp_path):
    import random

    rng = random.Random(0)
    alphabet = ["NA", "nan", "None", "", " ", "null", "N/A", "x", "Paris.", '"q"', "a,b", "é", "\n", "\t", "0"]
    texts = sorted(metrics.PANDAS_NA_STRINGS) + ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3)))
                                                 for _ in range(300)]
    script = ("import sys, json, pandas as pd\n"
              "from pandas._libs.parsers import STR_NA_VALUES\n"
              "t = json.load(open(sys.argv[1]))\n"
              "pd.DataFrame({'id': [f'{i}qa0' for i in range(len(t))], 'model_output': t}).to_csv(sys.argv[2], index=False)\n"
              "back = [str(v) for v in pd.read_csv(sys.argv[2])['model_output'].tolist()]\n"
              "print(json.dumps({'na': sorted(STR_NA_VALUES), 'back': back}))\n")
    (tmp_path / "t.json").write_text(json.dumps(texts))
    done = subprocess.run([str(official_python), "-c", script, str(tmp_path / "t.json"), str(tmp_path / "t.csv")],
                          capture_output=True, text=True, check=True)
    got = json.loads(done.stdout)
    assert set(got["na"]) == metrics.PANDAS_NA_STRINGS
    assert got["back"] == [metrics.csv_roundtrip(t) for t in texts]


@pytest.fixture(scope="module")
def small_target(tmp_path_factory):
    """A tiny target fine-tuned (``lume finetune``'s ``build_target``) on a generated benchmark."""
    from lumebench.data.generate import generate_benchmark
    from lumebench.data.loaders import load_benchmark
    from lumebench.pipeline.target import FinetuneConfig, build_target

    base = tmp_path_factory.mktemp("parity")
    data = generate_benchmark(base / "data", docs_per_task=2, seed=0)
    cfg = FinetuneConfig.for_base("tiny", dict(epochs=25, min_steps=0, eval_from=25, mixed_precision="no",
                         tiny={"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128,
                               "vocab_size": 1024, "max_position": 512}))
    return data, build_target("tiny", load_benchmark(data), cfg, base / "targets")


def _parity(model: Path, data: Path, out: Path, *extra: str) -> tuple[int, dict]:
    rc = main(["parity", "--model", str(model), "--data", str(data), "--per-split", "8", "--mia-docs", "4",
               "--max-new-tokens", "48", "--mmlu-subjects", "anatomy", "--mmlu-limit", "3", "--out", str(out),
               *extra])
    return rc, json.loads((out / "parity.json").read_text())


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_parity_of_a_finetuned_target(official_python, small_target, tmp_path, dtype, capsys):
    data, target = small_target
    rc, rep = _parity(target, data, tmp_path / "p", "--dtype", dtype)
    out = capsys.readouterr().out
    assert rc == 0 and rep["ok"] and "PARITY: identical official scores" in out, out
    assert len(rep["rows"]) == 16 and all(r["same_text"] or r["early_exit_prefix"] for r in rep["rows"])
    assert rep["mia"]["same"] and rep["mmlu"]["questions"] == 3 and rep["mmlu"]["same"]
    assert sum(t["lumebench"] is not None for t in rep["terms"]) >= 8


def test_parity_of_an_unlearned_model(official_python, small_target, tmp_path, capsys):
    data, target = small_target
    assert main(["unlearn", "--method", "ga", "--target", str(target), "--data", str(data),
                 "--out", str(tmp_path / "u"), "--epochs", "1", "--max-new-tokens", "8", "--no-mia"]) == 0
    capsys.readouterr()
    rc, rep = _parity(tmp_path / "u" / "model", data, tmp_path / "p")
    assert rc == 0 and rep["ok"], capsys.readouterr().out


def test_fast_engine_refuses_decoding_it_does_not_apply():
    from lumebench.data.records import Row
    from lumebench.errors import LumeError
    from lumebench.eval.generation import generate

    model, tok = _tiny()
    row = Row.from_fields("1qa0", "Task3", "forget", "Paris is", "the capital")
    for name, value in (("num_beams", 2), ("penalty_alpha", 0.6), ("dola_layers", "high"),
                        ("repetition_penalty", 1.3), ("stop_strings", ["."])):
        original = getattr(model.generation_config, name)
        setattr(model.generation_config, name, value)
        if name == "penalty_alpha":
            model.generation_config.top_k = 4
        with pytest.raises(LumeError, match=name):
            generate(model, tok, [row], max_new_tokens=4)
        setattr(model.generation_config, name, original)
    model.generation_config.temperature = 0.7  # sampling-only: inert under the official do_sample=False
    model.generation_config.top_k = 50
    assert generate(model, tok, [row], max_new_tokens=4)[0].n_new_tokens >= 1


def _readme_parity_argv(checkpoint: Path, lume_data: Path, out: Path) -> list[str]:
    """The README's ``lume parity`` command, as a user copies it, on ``checkpoint``."""
    import re
    import shlex

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    command = re.search(r"^lume parity --model CHECKPOINT .*?(?<!\\)$", text, re.M | re.S).group(0)
    argv = shlex.split(command.replace("\\\n", " "))[1:]
    return [str(checkpoint) if a == "CHECKPOINT" else
            str(out) if a == "parity" and argv[i - 1] == "--out" else
            a.replace("../shared/lume-data", str(lume_data)) for i, a in enumerate(argv)]


def test_the_readme_parity_command_on_a_tiny_target_exits_0(
        official_python, small_target, lume_data, tmp_path, capsys):
    """Issue 29: on a tiny target the README's command found "MMLU predictions 18 of 20 same": the
    official side's MMLU header had one space after "about" where Open-Instruct has two. Now every
    row, term, mean and MMLU prediction agrees. The MIA AUC did not (0.4825 vs 0.4675): this target
    was built for 512 positions, official MIA documents are longer, and lumebench truncated them
    where the official protocol runs them whole. A rotary model has no position table to run past,
    so lumebench now runs them whole too (eval/mia.py), and the command exits 0."""
    _, target = small_target
    argv = _readme_parity_argv(target, lume_data, tmp_path / "p")
    assert "--mmlu-subjects" in argv and str(lume_data / "official") in argv
    rc = main(argv)
    out = capsys.readouterr().out
    rep = json.loads((tmp_path / "p" / "parity.json").read_text())
    assert rep["mmlu"]["questions"] == 20 and rep["mmlu"]["same"], out
    assert len(rep["rows"]) == 60 and all((r["same_text"] or r["early_exit_prefix"]) and r["same_score"]
                                          for r in rep["rows"]), out
    assert all(t["same"] for t in rep["terms"] + rep["overall"]) and rep["harmonic_mean"]["same"], out
    n_tokens = [json.loads(l)["n_tokens"] for l in (tmp_path / "p" / "lumebench" / "mia.jsonl").read_text().splitlines()]
    assert max(n_tokens) > 512, "the sample must hold a document longer than the target's 512 positions"
    assert rep["mia"]["same"] and rc == 0, out
