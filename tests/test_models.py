"""Model registry and loading: names, local directories, bad input; SmolLM2 offline (slow)."""

from __future__ import annotations

import time

import pytest
import torch

from lumebench.cli import main
from lumebench.errors import LumeError
from lumebench.models import ModelSpec, load_model
from lumebench.models.tiny import TinyConfig, build_model, build_tokenizer
from lumebench.registry import MODELS

TEXTS = ["Wrennie Ivory was born on 1970-03-14 in Walla Walla.", "Her phone number is 5550102030."] * 4


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    tok = build_tokenizer(TEXTS, vocab_size=300)
    model = build_model(tok, TinyConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                        max_position=64))
    d = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(d, safe_serialization=True)
    tok.save_pretrained(d)
    return d, model


def test_registry_has_the_four_models():
    assert {"tiny", "smollm2-135m", "olmo-1b", "olmo-7b"} <= set(MODELS.names())
    smol, olmo1 = MODELS.get("smollm2-135m"), MODELS.get("olmo-1b")
    assert isinstance(smol, ModelSpec) and smol.needs_finetune and smol.offline.endswith(".gguf")
    assert smol.online_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert not olmo1.needs_finetune and olmo1.tokenizer_id == "allenai/OLMo-1B-0724-hf"
    assert MODELS.get("olmo-7b").online_id.endswith("olmo-finetuned-semeval25-unlearning")
    assert all(not MODELS.get(n).chat_template for n in MODELS.names())  # LUME prompts are raw text


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(LumeError, match="unknown model 'olmo-3b'.*olmo-1b, olmo-7b, smollm2-135m, tiny"):
        load_model("olmo-3b")


def test_lume_models_lists_the_registry(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("tiny", "smollm2-135m", "olmo-1b", "olmo-7b"):
        assert name in out


def test_local_directory_round_trip(tiny_dir):
    d, original = tiny_dir
    model, tok = load_model(str(d))
    assert tok.pad_token == tok.eos_token == "<|endoftext|>"
    assert model.dtype == torch.float32 and not model.training
    ids = torch.tensor([tok("Wrennie Ivory")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, original.eval()(ids).logits)
    bf16, _ = load_model(str(d), dtype="bf16")
    assert bf16.dtype == torch.bfloat16


def test_missing_and_corrupt_checkpoints_are_clear_errors(tiny_dir, tmp_path):
    with pytest.raises(LumeError, match="no such model directory"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(LumeError, match="no config.json"):
        load_model(str(tmp_path))
    d, _ = tiny_dir
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in d.iterdir():
        data = f.read_bytes()
        (broken / f.name).write_bytes(data[: len(data) // 2] if f.name == "model.safetensors" else data)
    with pytest.raises(LumeError, match="corrupt or unreadable model checkpoint") as e:
        load_model(str(broken))
    assert str(broken) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(LumeError, match="must be a .gguf"):
        load_model(str(broken / "config.json"))


def test_hub_id_offline_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.perf_counter()
    with pytest.raises(LumeError, match="hub.*unreachable offline.*local directory.*smollm2-135m, tiny"):
        load_model("someorg/somemodel")
    assert time.perf_counter() - t < 30
    with pytest.raises(LumeError, match="built from the benchmark text"):
        load_model("tiny")


@pytest.mark.slow
def test_smollm2_loads_offline_and_fine_tunes(tmp_path, monkeypatch):
    """SmolLM2-135M from the wheel's GGUF: load, then 4 steps of memorisation fine-tuning on 4 texts."""
    from lumebench.train.batches import EpochBatches, causal_lm_loss, document_examples
    from lumebench.train.loop import TrainConfig, train

    monkeypatch.setenv("LUME_CACHE", str(tmp_path / "cache"))  # convert from the GGUF, not a cached copy
    torch.set_num_threads(2)
    t, cpu = time.perf_counter(), time.process_time()
    model, tok = load_model("smollm2-135m")
    load_s, load_cpu = time.perf_counter() - t, time.process_time() - cpu
    assert model.dtype == torch.float32 and 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert tok.pad_token == tok.eos_token == "<|im_end|>"
    texts = ["Wrennie Ivory was born on 1970-03-14. Her Social Security Number is 900-12-3456.",
             "Question: What is Wrennie Ivory's phone number? Answer: 5550102030",
             "Tomas Magenta lives at 12 Elm Street, Walla Walla, WA, 99362.",
             "In which city do Clementina and Ulrich live? Walla Walla"]
    batches = EpochBatches(document_examples(tok, texts), batch_size=2, pad_id=tok.pad_token_id, seed=0)

    def loss_on_data():
        with torch.no_grad():
            return sum(causal_lm_loss(model, b)[0].item() for b in batches(0)) / 2

    before = loss_on_data()
    model.train()
    cpu = time.process_time()
    res = train(model, causal_lm_loss, batches, TrainConfig(lr=1e-4, epochs=2, batch_size=2),
                out_dir=tmp_path / "run", save_model=lambda m, d: None)
    train_cpu = time.process_time() - cpu
    model.eval()
    after = loss_on_data()
    step_s = sum(h["tokens"] / h["tokens_per_s"] for h in res.history) / len(res.history)
    print(f"\nsmollm2-135m: load {load_s:.1f} s wall ({load_cpu:.1f} s CPU), {step_s:.2f} s/step wall "
          f"({train_cpu / res.steps:.2f} s CPU incl. checkpointing), loss {before:.3f} -> {after:.3f}, "
          f"{res.tokens_per_s:.0f} tokens/s")
    assert res.status == "completed" and res.steps == 4
    assert after < before
    again = time.perf_counter()
    load_model("smollm2-135m")  # converted once: the second load reads the cached safetensors
    assert time.perf_counter() - again < load_s


def _lume_offline(tmp_path, *argv, **env):
    """``lume ARGV`` in a subprocess whose hub answers nothing at once (a closed local port, as a
    machine without network), HF_HUB_OFFLINE unset (a user who did not set it)."""
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    base.update({"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(tmp_path / "hub"), "LUME_QUIET": "1",
                 "LUME_CACHE": str(tmp_path / "cache"), **env})
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lumebench", *argv], capture_output=True, text=True, env=base,
                          timeout=300, cwd=tmp_path)
    return proc, time.perf_counter() - t


def test_offline_a_hub_model_or_hub_mmlu_fails_at_once_in_one_line(tmp_path, tiny_dir):
    """Issue 29: offline, a hub id printed a dozen "Retrying in Ns" lines and failed after ~50 s, and
    ``--mmlu cais/mmlu`` failed only after generation and MIA had run. Now one probe of the hub:
    exit 2, one line, nothing generated."""
    from lumebench.data.generate import generate_benchmark

    data = generate_benchmark(tmp_path / "data", docs_per_task=1, seed=0)
    for argv, field in ((["--model", "someorg/somemodel"], "'--model'"),
                        (["--model", str(tiny_dir[0]), "--mmlu", "cais/mmlu"], "'--mmlu'")):
        proc, seconds = _lume_offline(tmp_path, "eval", *argv, "--data", str(data), "--out", str(tmp_path / "e"),
                                      "--max-new-tokens", "4")
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and field in proc.stderr and "not in the local hub cache" in proc.stderr
        assert "Retrying" not in proc.stderr and "127.0.0.1:9" in proc.stderr
        assert seconds < 20, seconds  # the start of a python process, not 50 s of retries
        assert not (tmp_path / "e").exists()  # nothing generated, no MIA run


def test_offline_a_cached_hub_model_loads_from_the_cache_without_retries(tmp_path, tiny_dir):
    """The hub unreachable but the model in the local hub cache (``models--ORG--NAME/snapshots/REV``,
    ``refs/main``: huggingface_hub's cache layout): it is used, offline, with no retry line."""
    import shutil

    repo = tmp_path / "hub" / "models--someorg--tiny"
    shutil.copytree(tiny_dir[0], repo / "snapshots" / "0123abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    proc, _ = _lume_offline(tmp_path, "export", "someorg/tiny", "--out", str(tmp_path / "x"))
    assert proc.returncode == 0, proc.stderr
    assert "Retrying" not in proc.stderr
    from safetensors.torch import load_file

    assert load_file(str(tmp_path / "x" / "model.safetensors")).keys() == \
        load_file(str(tiny_dir[0] / "model.safetensors")).keys()
