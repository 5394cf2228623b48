"""The trained weights: fp32 master weights, FSDP2 sharding over several processes, the full weights
of a sharded model, and writing the trained model (used by :func:`lumebench.train.loop.train`, its
checkpoint (:mod:`lumebench.train.checkpoint`) and the pipeline jobs)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

import torch


def local_shard(t: torch.Tensor) -> torch.Tensor:
    """This process's shard of a DTensor (FSDP2), the tensor itself otherwise."""
    return t.to_local() if hasattr(t, "to_local") else t


def default_save_model(model: torch.nn.Module, directory: Path, state_dict: dict | None = None) -> None:
    """The checkpoint writer (:func:`lumebench.models.checkpoint.save_checkpoint`) without a
    tokenizer; a PEFT model saves its adapter (the loop's checkpoint resumes training from it).
    ``state_dict``: the full weights when the model itself is sharded (FSDP2, see
    :func:`full_state_dict`)."""
    from lumebench.models.checkpoint import save_checkpoint

    save_checkpoint(model, None, directory, merge_adapter=False, state_dict=state_dict)


def is_sharded(model: torch.nn.Module) -> bool:
    """True when ``fully_shard`` (FSDP2) has sharded the model's parameters."""
    return any(hasattr(p, "to_local") for p in model.parameters())


def fully_shard_model(model: torch.nn.Module, device: torch.device, precision: str) -> None:
    """FSDP2: shard every decoder layer and then the rest over all processes, in place.

    Parameters stay fp32 (the master weights AdamW updates); with ``precision`` bf16/fp16 the layers
    compute in that dtype (``MixedPrecisionPolicy``) and gradients are reduced in fp32.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from lumebench import distributed

    mesh = init_device_mesh(device.type, (distributed.world(),))
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    mp = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32) if low else MixedPrecisionPolicy()
    to_float32(model)  # one dtype for every shard: fp32 master weights
    layers = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)


@contextlib.contextmanager
def unsharded(model: torch.nn.Module):
    """Every process holds the whole (FSDP2) model for the duration, so that each can run its own
    share of an evaluation (different numbers of forward passes, no collective). A no-op otherwise."""
    mods = [m for m in model.modules() if hasattr(m, "unshard") and hasattr(m, "reshard")]
    if not mods or not is_sharded(model):
        yield model
        return
    for m in mods:
        m.set_reshard_after_forward(False)
        m.unshard()
    try:
        yield model
    finally:
        for m in mods:
            m.reshard()
            m.set_reshard_after_forward(True)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The full weights of an FSDP2 model on every process (a collective: all processes call it);
    None for a model that is not sharded (its own ``state_dict`` is already full)."""
    if not is_sharded(model):
        return None
    unique = {n for n, _ in model.named_parameters()}
    tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - unique
    # a tied weight (lm_head = embeddings) is written once, as save_pretrained does
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().cpu()
            for k, v in model.state_dict().items() if k not in tied}


def save_trained(model: torch.nn.Module, directory: Path,
                 save_model: Callable[..., None] | None = None) -> None:
    """Write the trained model once, from the main process, with the one writer (``save_model``,
    default :func:`default_save_model`); an FSDP2 model is gathered first (into one checkpoint)."""
    from lumebench import distributed

    save_model = save_model or default_save_model
    full = full_state_dict(model)
    with distributed.main_only() as writer:
        if writer:
            model = distributed.unwrap(model)
            if full is None:
                save_model(model, Path(directory))
            else:
                save_model(model, Path(directory), state_dict=full)


LOW_PRECISION = (torch.bfloat16, torch.float16)


def upcast_master_weights(model: torch.nn.Module, params: list[torch.nn.Parameter]) -> torch.dtype | None:
    """fp32 master weights: trainable parameters held in bf16/fp16 are converted to fp32 in place
    (AdamW updates of ~1e-5 relative size round away in bf16). The frozen ones follow, so that the
    model has one dtype: bf16 layers next to fp32 ones fail every forward outside autocast (the
    evaluations between epochs). Returns the low dtype found among ``params``, if any."""
    low = next((p.dtype for p in params if p.dtype in LOW_PRECISION), None)
    if low is not None:
        to_float32(model)
    return low


def to_float32(model: torch.nn.Module) -> None:
    """Convert the bf16/fp16 parameters and buffers of ``model`` to fp32, in place."""
    for p in model.parameters():
        if p.dtype in LOW_PRECISION:
            p.data = p.data.float()
    for module in model.modules():
        for name, buf in module.named_buffers(recurse=False):
            if buf is not None and buf.dtype in LOW_PRECISION:
                setattr(module, name, buf.float())
