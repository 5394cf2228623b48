"""The one checkpoint writer: every model lumebench saves goes through :func:`save_checkpoint`.

Why it exists: SemEval submissions were scored in the organisers' environment (transformers 4.45.2,
SPEC.md §2), while lumebench runs on transformers 5. A directory written by 5.x's
``save_pretrained`` is read there wrongly or not at all (measured, issue 9):

- ``tokenizer_config.json`` names ``tokenizer_class: TokenizersBackend``, a class 4.45 does not know
  (the tokenizer does not load);
- ``config.json`` carries the RoPE base only inside ``rope_parameters`` (the 5.x layout), so 4.45
  silently uses its default ``rope_theta`` (10,000; SmolLM2 needs 100,000) and runs another model;
- the dtype is written as ``dtype``, which 4.45 reads as ``torch_dtype``.

:func:`save_checkpoint` writes the usual safetensors checkpoint (weights, config, generation config,
tokenizer files with their special tokens) into a temporary folder, adds the 4.x form of every key
that 5.x renamed or restructured (:func:`make_compatible`), and renames the folder into place, so a
reader never sees half a checkpoint. Keys are only ever added; 5.x reads the result as before.
``tests/test_official_parity.py`` proves, in a side virtualenv with the official versions, that
4.45.2 loads it with bit-identical fp32 logits and the same tokenisation.

Checkpoints written before this fix are repaired by ``lume export SRC --out DST`` (load with 5.x,
save with this writer), or in place, without loading weights, by :func:`make_compatible`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lumebench.errors import LumeError
from lumebench.io import parse_json, usual_permissions

# tokenizer classes of transformers 5 that transformers 4.x does not have, and the 4.x class that
# reads the same tokenizer.json unchanged (the generic fast tokenizer: no class-specific rewriting
# of the post-processor, so tokenisation is exactly what tokenizer.json says in both versions)
_TOKENIZER_CLASS_4X = {"TokenizersBackend": "PreTrainedTokenizerFast"}

_DTYPE_NAMES = {"float32", "float16", "bfloat16"}


def _rope_4x(rope: dict) -> tuple[float | None, dict | None]:
    """(rope_theta, rope_scaling) in the 4.x layout from a 5.x ``rope_parameters`` dict."""
    theta = rope.get("rope_theta")
    kind = rope.get("rope_type", "default")
    scaling = None
    if kind not in (None, "default"):
        scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
        scaling.setdefault("type", kind)  # 4.x accepts both spellings; older 4.x only "type"
    return theta, scaling


def compatible_config(cfg: dict) -> dict:
    """``config.json`` with the 4.x keys added next to their 5.x form (nothing is removed)."""
    out = dict(cfg)
    rope = cfg.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope:
        # one rope_parameters dict for the whole model (a per-layer-type dict has no 4.x form)
        theta, scaling = _rope_4x(rope)
        out["rope_theta"] = theta
        if "rope_scaling" not in cfg or cfg.get("rope_scaling") is None:
            out["rope_scaling"] = scaling
    if "dtype" in cfg and "torch_dtype" not in cfg:
        out["torch_dtype"] = cfg["dtype"]
    return out


def compatible_tokenizer_config(cfg: dict) -> dict:
    out = dict(cfg)
    cls = cfg.get("tokenizer_class")
    if cls in _TOKENIZER_CLASS_4X:
        out["tokenizer_class"] = _TOKENIZER_CLASS_4X[cls]
    return out


def _rewrite_json(path: Path, fix) -> bool:
    if not path.is_file():
        return False
    try:
        data = parse_json(path.read_text(encoding="utf-8"), path)
    except (OSError, ValueError) as e:
        raise LumeError(f"unreadable JSON ({e})", path=str(path)) from None
    if not isinstance(data, dict):
        raise LumeError("expected a JSON object", path=str(path))
    fixed = fix(data)
    if fixed == data:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(fixed, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return True


def make_compatible(directory: str | Path) -> list[str]:
    """Add the transformers-4.x form of the keys 5.x renamed, in place; returns the files changed.
    Only JSON files are touched (the weights are not read)."""
    d = Path(directory)
    changed = []
    if _rewrite_json(d / "config.json", compatible_config):
        changed.append("config.json")
    if _rewrite_json(d / "tokenizer_config.json", compatible_tokenizer_config):
        changed.append("tokenizer_config.json")
    return changed


def save_checkpoint(model, tokenizer, directory: str | Path, *, merge_adapter: bool = True,
                    state_dict: dict | None = None) -> Path:
    """Write ``model`` (+ ``tokenizer`` when given) into ``directory`` as a safetensors checkpoint
    that transformers 4.45 and 5.x load as the same model. A PEFT model is merged into a copy of
    its base first (a usable model, not an adapter) unless ``merge_adapter=False`` (then its
    adapter is written, as ``save_pretrained`` does). Everything is written into a temporary
    sibling folder first, then each file is renamed into place (a reader never sees a half-written
    file), and weight files of an earlier save that the new one does not have are removed. Other
    files in ``directory`` (logs, ``target.json``) are left alone. ``state_dict``: the full weights
    of a model whose own parameters are sharded (FSDP2, :func:`lumebench.train.weights.full_state_dict`);
    not with ``merge_adapter``."""
    from transformers.utils import logging as hf_logging

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.saving"
    shutil.rmtree(tmp, ignore_errors=True)
    to_save = model
    is_peft = hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")
    if merge_adapter and is_peft:
        if state_dict is not None:
            raise ValueError("save_checkpoint: a sharded PEFT model cannot be merged; save its adapter")
        to_save = _merged_copy(model)
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # transformers' own "Writing model shards" bar
    try:
        if state_dict is None:
            to_save.save_pretrained(tmp, safe_serialization=True)
        else:
            to_save.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    finally:
        if was:
            hf_logging.enable_progress_bar()
    make_compatible(tmp)
    written = {p.name for p in tmp.iterdir()}
    for name in written:  # transformers' safetensors writer makes model.safetensors 0600
        usual_permissions(tmp / name)
    for stale in [*out.glob("model*.safetensors*"), *out.glob("adapter_model*.safetensors")]:
        if stale.name not in written:
            stale.unlink()
    for name in sorted(written, key=lambda n: n == "config.json"):  # config last: it marks a model dir
        (tmp / name).replace(out / name)
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def _merged_copy(peft_model):
    """The base model with the adapter merged in, leaving ``peft_model`` itself untouched."""
    import copy

    return copy.deepcopy(peft_model).merge_and_unload()


def stored_dtype(directory: str | Path) -> str | None:
    """The dtype a checkpoint's weights were saved in (``config.json`` ``dtype``/``torch_dtype``)."""
    try:
        cfg = parse_json((Path(directory) / "config.json").read_text(encoding="utf-8"), Path(directory) / "config.json")
    except (OSError, ValueError, LumeError):
        return None
    name = cfg.get("dtype") or cfg.get("torch_dtype") if isinstance(cfg, dict) else None
    return name if name in _DTYPE_NAMES else None
