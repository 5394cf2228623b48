"""The one training loop, shared by memorisation fine-tuning and every unlearning method.

    result = train(model, loss_fn, epoch_batches, TrainConfig(lr=5e-3, epochs=40), out_dir=run_dir)

- ``loss_fn(model, batch) -> (loss, logs)``: the method. ``logs`` is a dict of floats recorded per
  step (a ``"tokens"`` entry, if present, is used for tokens/s; otherwise the ``attention_mask``
  tensors found in the batch are counted).
- ``epoch_batches(epoch) -> list[batch]``: the data, deterministic from the seed and the epoch (see
  :mod:`lumebench.train.batches`). A batch is any nest of dicts/lists/tuples of tensors; tensors are
  moved to the training device.
- ``on_epoch_end(epoch, step, model) -> dict | None``: the caller's evaluation; its numbers are
  stored in the epoch log, and ``{"stop": True}`` ends training (e.g. memorisation target met).

Built on Accelerate (device placement, bf16 autocast where the device supports it; launched on
several processes the model is wrapped in DDP and gradients are averaged, and ``epoch_batches``
should then return each process its own shard, e.g. ``batches[rank::world]``, of equal length). Each epoch ends with a checkpoint in ``out_dir/checkpoint/`` written
atomically (temp dir + rename): the model through ``save_model`` (a usable model for the user) and
the trainer state (trainable parameters, optimizer, scheduler, RNG, step, history) in safetensors +
JSON, no pickle. With ``resume=True`` a rerun continues from it and ends with exactly the weights
and loss trajectory of an uninterrupted run (the batches, the RNG and the optimizer are restored).

Divergence guard: a NaN/inf loss or a gradient norm above ``explode_grad_norm`` stops training
before the bad update is applied, with ``status = "diverged at step N"``; the model is restored to
the state at the start of that epoch (= the last checkpoint, which is never overwritten by a bad
epoch) and the logs so far are kept.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from lumebench.errors import LumeError
from lumebench.io import append_jsonl, atomic_write_json, write_jsonl
from lumebench.progress import bar, log
from lumebench.provenance import seed_everything
from lumebench.train.config import TrainConfig, TrainResult

CHECKPOINT = "checkpoint"
STATE_JSON = "trainer_state.json"
TRAINABLE = "trainable.safetensors"
OPTIMIZER = "optimizer.safetensors"
RNG = "rng.safetensors"
LOG = "train_log.jsonl"

Batch = Any
LossFn = Callable[[torch.nn.Module, Batch], "tuple[torch.Tensor, dict[str, float]]"]


# ---------------------------------------------------------------------------------------------
# small pieces


def resolve_mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def step_outcome(grad_norm: float, *, loss_scaling: bool, explode_grad_norm: float) -> str:
    """What to do with an optimizer step given its gradient norm: "step", "skip" (an fp16 overflow
    under a GradScaler: the scaler skips the update and lowers its scale, training goes on) or
    "diverged" (a non-finite norm without loss scaling, or a norm above the divergence guard)."""
    if not math.isfinite(grad_norm):
        return "skip" if loss_scaling else "diverged"
    return "diverged" if grad_norm > explode_grad_norm else "step"


def lr_lambda(total_steps: int, warmup_ratio: float, schedule: str) -> Callable[[int], float]:
    """Multiplier of the peak lr at optimizer step ``s`` (0-based): linear warm-up, then the schedule."""
    warm = math.ceil(warmup_ratio * total_steps)

    def f(s: int) -> float:
        if s < warm:
            return (s + 1) / (warm + 1)
        if schedule == "constant":
            return 1.0
        progress = (s - warm) / max(1, total_steps - warm)
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def to_device(batch: Batch, device: torch.device) -> Batch:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def count_tokens(batch: Batch) -> int:
    """Real (non-padding) tokens in a batch: the sum of every ``attention_mask`` found in it."""
    if isinstance(batch, dict):
        if isinstance(batch.get("attention_mask"), torch.Tensor):
            return int(batch["attention_mask"].sum())
        if isinstance(batch.get("input_ids"), torch.Tensor):
            return batch["input_ids"].numel()
        return sum(count_tokens(v) for v in batch.values())
    if isinstance(batch, (list, tuple)):
        return sum(count_tokens(v) for v in batch)
    return 0


def default_save_model(model: torch.nn.Module, directory: Path, state_dict: dict | None = None) -> None:
    """The checkpoint writer (:func:`lumebench.models.checkpoint.save_checkpoint`) without a
    tokenizer; a PEFT model saves its adapter (the loop's checkpoint resumes training from it).
    ``state_dict``: the full weights when the model itself is sharded (FSDP2, see
    :func:`full_state_dict`)."""
    from lumebench.models.checkpoint import save_checkpoint

    save_checkpoint(model, None, directory, merge_adapter=False, state_dict=state_dict)


def _param_names(model: torch.nn.Module, params: list[torch.nn.Parameter]) -> list[str]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [names.get(id(p), f"extra.{i}") for i, p in enumerate(params)]


def _float(x) -> float:
    if hasattr(x, "full_tensor"):  # a DTensor (FSDP2 gradient norm)
        x = x.full_tensor()
    return float(x.detach().float().item()) if isinstance(x, torch.Tensor) else float(x)


def _local(t: torch.Tensor) -> torch.Tensor:
    """This process's shard of a DTensor (FSDP2), the tensor itself otherwise."""
    return t.to_local() if hasattr(t, "to_local") else t


# ---------------------------------------------------------------------------------------------
# checkpoint state (safetensors + JSON, no pickle)


def _optimizer_to_files(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
    for idx, st in sd["state"].items():
        meta["state"][str(idx)] = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{idx}.{k}"] = _local(v).detach().cpu().contiguous()
                meta["state"][str(idx)][k] = "__tensor__"
            else:
                meta["state"][str(idx)][k] = v
    return tensors, meta


def _optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state = {}
    for idx, st in meta["state"].items():
        state[int(idx)] = {k: (tensors[f"{idx}.{k}"] if v == "__tensor__" else v) for k, v in st.items()}
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    import numpy as np

    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    py = random.getstate()
    npy = np.random.get_state()
    meta = {"python": [py[0], list(py[1]), py[2]],
            "numpy": [npy[0], npy[1].tolist(), int(npy[2]), int(npy[3]), float(npy[4])]}
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    import numpy as np

    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith("torch_cuda_"))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def find_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The last complete checkpoint in ``out_dir`` (also one left as ``checkpoint.old`` by a crash
    between the two renames of a checkpoint swap)."""
    out_dir = Path(out_dir)
    for name in (CHECKPOINT, CHECKPOINT + ".old"):
        d = out_dir / name
        if (d / STATE_JSON).is_file():
            return d
    return None


def read_checkpoint_state(ckpt: Path) -> dict:
    try:
        return json.loads((ckpt / STATE_JSON).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise LumeError(f"corrupt training checkpoint ({e}); delete it to start over",
                        path=str(ckpt / STATE_JSON)) from None


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types for truncated/corrupt files
        raise LumeError(f"corrupt training checkpoint ({type(e).__name__}: {e}); delete it to start over",
                        path=str(path)) from None


def _load_trainable(ckpt: Path, params: list[torch.nn.Parameter], names: list[str],
                    filename: str = TRAINABLE) -> None:
    tensors = _load_safetensors(ckpt / filename)
    missing = [n for n in names if n not in tensors]
    if missing:
        raise LumeError(f"checkpoint does not match the model (missing {missing[0]} and "
                        f"{len(missing) - 1} more); delete it or train into another directory",
                        path=str(ckpt / TRAINABLE))
    with torch.no_grad():
        for p, n in zip(params, names):
            local = _local(p)
            if tensors[n].shape != local.shape:
                raise LumeError(f"checkpoint tensor {n} has shape {tuple(tensors[n].shape)}, the model "
                                f"has {tuple(local.shape)}", path=str(ckpt / filename))
            local.copy_(tensors[n].to(local.device, local.dtype))


# ---------------------------------------------------------------------------------------------
# several processes: FSDP2 sharding, full weights, master weights


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
    for p in model.parameters():  # one dtype for every shard: fp32 master weights
        if p.dtype != torch.float32:
            p.data = p.data.float()
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


def upcast_master_weights(params: list[torch.nn.Parameter]) -> torch.dtype | None:
    """fp32 master weights: trainable parameters held in bf16/fp16 are converted to fp32 in place
    (AdamW updates of ~1e-5 relative size round away in bf16). Returns the low dtype found, if any."""
    low = next((p.dtype for p in params if p.dtype in (torch.bfloat16, torch.float16)), None)
    for p in params:
        if p.dtype in (torch.bfloat16, torch.float16):
            p.data = p.data.float()
    return low


def _start_trackers(accelerator, cfg: "TrainConfig", out_dir: Path) -> bool:
    if not cfg.log_with:
        return False
    accelerator.init_trackers(out_dir.parent.name or "lumebench", config={
        k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in cfg.to_dict().items()})
    return True


# ---------------------------------------------------------------------------------------------
# the loop


def train(model: torch.nn.Module, loss_fn: LossFn, epoch_batches: Callable[[int], list[Batch]],
          cfg: TrainConfig, *, out_dir: str | os.PathLike, params: Iterable[torch.nn.Parameter] | None = None,
          save_model: Callable[..., None] | None = None,
          on_epoch_end: Callable[[int, int, torch.nn.Module], dict | None] | None = None,
          resume: bool = True) -> TrainResult:
    """Train ``model`` in place; see the module docstring. Returns a :class:`TrainResult`.

    ``params``: the parameters to train (default: those with ``requires_grad``). ``save_model(model,
    dir)`` writes the usable model into each checkpoint (default ``save_pretrained``; it also gets
    ``state_dict=`` the gathered weights of an FSDP2 model). ``resume=False`` ignores (and replaces)
    an existing checkpoint. ``epoch_batches`` returns the *global* batches: with several processes
    each takes its share of every batch (:func:`lumebench.distributed.shard_batch`).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from safetensors.torch import save_file

    from lumebench import distributed

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model = save_model or default_save_model
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not params:
        raise LumeError("nothing to train: no parameter requires a gradient")
    names = _param_names(model, params)

    precision = resolve_mixed_precision(cfg.mixed_precision)
    low = upcast_master_weights(params)
    if low is not None and precision == "no":
        precision = "bf16" if low == torch.bfloat16 else "fp16"
    if low is not None:
        log.info("trainable weights were %s: training fp32 master weights with %s autocast",
                 str(low).replace("torch.", ""), precision)
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, precision):
        AcceleratorState._reset_state()  # another run in this process used another precision
    log_with = ([t.strip() for t in cfg.log_with.split(",") if t.strip()] if isinstance(cfg.log_with, str)
                else list(cfg.log_with or [])) or None
    accelerator = Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available(),
                              log_with=log_with, project_dir=str(out_dir) if log_with else None)
    device = accelerator.device
    world, rank = accelerator.num_processes, accelerator.process_index
    fsdp = world > 1 and cfg.distributed == "fsdp"
    if fsdp:
        fully_shard_model(model, device, precision)
        by_name = dict(model.named_parameters())
        params = [by_name[n] for n in names]
    elif not getattr(model, "hf_device_map", None) and params[0].device != device:
        model.to(device)

    n_batches = len(epoch_batches(0))
    if n_batches == 0:
        raise LumeError("no training batches: the training data is empty")
    steps_per_epoch = math.ceil(n_batches / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)

    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.adam_betas,
                                  eps=cfg.adam_eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total_steps, cfg.warmup_ratio, cfg.lr_schedule))
    train_model = (accelerator.prepare_model(model, device_placement=False) if world > 1 and not fsdp
                   else model)
    optimizer = accelerator.prepare_optimizer(optimizer, device_placement=False)
    opt_params = [p for g in optimizer.param_groups for p in g["params"]]
    # a sharded checkpoint holds one file per process: trainable.rank<R>.safetensors, ...
    suffix = f".rank{rank}" if fsdp else ""
    trainable_file, optimizer_file, rng_file = (f"{TRAINABLE[:-12]}{suffix}.safetensors",
                                                f"{OPTIMIZER[:-12]}{suffix}.safetensors",
                                                f"{RNG[:-12]}{suffix}.safetensors")

    # ---- fresh start or resume
    cfg_dict = cfg.to_dict()
    ignored = ("log_every", "log_with", "distributed")
    comparable = {k: v for k, v in cfg_dict.items() if k not in ignored}
    step, start_epoch, history, epoch_logs = 0, 0, [], []
    prior_wall, prior_tokens, prior_train_s, skipped = 0.0, 0, 0.0, 0
    ckpt = find_checkpoint(out_dir) if resume and cfg.save_checkpoints else None
    seed_everything(cfg.seed)
    if ckpt is not None:
        st = read_checkpoint_state(ckpt)
        old = {k: v for k, v in st.get("config", {}).items() if k not in ignored}
        if old != comparable:
            diff = sorted(k for k in set(old) | set(comparable) if old.get(k) != comparable.get(k))
            raise LumeError(f"the checkpoint was written with other hyperparameters ({', '.join(diff)}); "
                            f"use another output directory or start over (resume=False / --no-resume)",
                            path=str(ckpt))
        sharded_world = st.get("sharded_world")
        if sharded_world != (world if fsdp else None):
            had = f"sharded over {sharded_world} processes" if sharded_world else "not sharded"
            now = f"sharded over {world} processes" if fsdp else "not sharded"
            raise LumeError(f"the checkpoint is {had} and this run is {now}; resume it the way it was "
                            f"started (distributed=fsdp and the same number of processes)", path=str(ckpt))
        _load_trainable(ckpt, params, names, trainable_file)
        opt_state = _optimizer_from_files(_load_safetensors(ckpt / optimizer_file), st["optimizer"])
        for idx, entry in opt_state["state"].items():  # FSDP2: the shards back into DTensors
            p = opt_params[idx]
            if hasattr(p, "to_local"):
                from torch.distributed.tensor import DTensor
                for k, v in entry.items():
                    if isinstance(v, torch.Tensor) and v.shape == p.to_local().shape and v.ndim:
                        entry[k] = DTensor.from_local(v.to(p.device), p.device_mesh, p.placements,
                                                      shape=p.shape, stride=p.stride(), run_check=False)
        optimizer.load_state_dict(opt_state)
        scheduler.load_state_dict(st["scheduler"])
        rng_meta = st["rng"] if not fsdp else st["rng_per_rank"][rank]
        _set_rng_state(_load_safetensors(ckpt / rng_file), rng_meta)
        step, start_epoch = st["step"], st["epochs_done"]
        history, epoch_logs = st["history"], st["epoch_logs"]
        prior_wall, prior_tokens, prior_train_s = st["wall_s"], st["tokens"], st["train_s"]
        skipped = st.get("skipped_steps", 0)
        if st.get("status", "running") != "running":
            log.info("training already finished in %s (%s); nothing to do", ckpt, st["status"])
            return TrainResult(st["status"], step, start_epoch, history, epoch_logs,
                               prior_tokens / max(prior_train_s, 1e-9), prior_wall, prior_tokens, str(ckpt),
                               skipped)
        log.info("resuming from %s: epoch %d, step %d", ckpt, start_epoch, step)
    if accelerator.is_main_process:
        write_jsonl(out_dir / LOG, history)
    tracking = _start_trackers(accelerator, cfg, out_dir)

    tokens, train_s = prior_tokens, prior_train_s
    snapshot: list[torch.Tensor] | None = None  # trainable params at the start of the epoch (until a checkpoint exists)
    status = "completed"
    last_ckpt = ckpt
    checkpoint_is_fresh = ckpt is not None  # the checkpoint holds the state at the start of the next epoch
    last_ckpt_time = time.perf_counter()

    def restore_last_good() -> None:
        if snapshot is not None:  # the start of this epoch (newer than any checkpoint)
            with torch.no_grad():
                for p, s in zip(params, snapshot):
                    _local(p).copy_(s)
        elif last_ckpt is not None:
            _load_trainable(last_ckpt, params, names, trainable_file)

    def save_checkpoint(epoch_status: str) -> Path:
        tmp = out_dir / f".{CHECKPOINT}.tmp"
        with distributed.main_only() as writer:
            if writer:
                if tmp.exists():
                    shutil.rmtree(tmp)
                tmp.mkdir()
        full = full_state_dict(train_model)  # FSDP2: gathered on every process (a collective)
        rng_tensors, rng_meta = _rng_state()
        opt_tensors, opt_meta = _optimizer_to_files(optimizer.state_dict())
        if fsdp:  # every process writes its shard
            save_file({n: _local(p).detach().cpu().contiguous() for n, p in zip(names, params)},
                      str(tmp / trainable_file))
            save_file(opt_tensors, str(tmp / optimizer_file))
            save_file(rng_tensors, str(tmp / rng_file))
        rng_per_rank = distributed.gather([rng_meta]) if fsdp else None
        final = out_dir / CHECKPOINT
        with distributed.main_only() as writer:  # one writer; the other processes wait
            if writer:
                unwrapped = accelerator.unwrap_model(train_model)
                if full is None:
                    save_model(unwrapped, tmp)
                    save_file({n: p.detach().cpu().contiguous() for n, p in zip(names, params)},
                              str(tmp / TRAINABLE))
                    save_file(opt_tensors, str(tmp / OPTIMIZER))
                    save_file(rng_tensors, str(tmp / RNG))
                else:
                    save_model(unwrapped, tmp, state_dict=full)
                atomic_write_json(tmp / STATE_JSON, {
                    "status": epoch_status, "step": step, "epochs_done": epoch + 1, "total_steps": total_steps,
                    "config": cfg_dict, "optimizer": opt_meta, "scheduler": scheduler.state_dict(),
                    "rng": rng_meta, "rng_per_rank": rng_per_rank, "sharded_world": world if fsdp else None,
                    "history": history, "epoch_logs": epoch_logs, "tokens": tokens, "skipped_steps": skipped,
                    "train_s": train_s, "wall_s": prior_wall + time.perf_counter() - t_start,
                })
                old = out_dir / (CHECKPOINT + ".old")
                if old.exists():
                    shutil.rmtree(old)
                if final.exists():
                    final.rename(old)
                tmp.rename(final)
                if old.exists():
                    shutil.rmtree(old)
        return final

    def reduce_step(values: list[float], n_tokens: int) -> tuple[list[float], int]:
        """The processes' mean of each value (= the global-batch value) and their total tokens."""
        if world == 1:
            return values, n_tokens
        t = distributed.all_reduce(torch.tensor(values + [float(n_tokens)], dtype=torch.float64, device=device))
        t[:-1] /= world
        return t[:-1].tolist(), int(t[-1].item())

    log.info("training %d steps (%d epochs x %d steps, %d micro-batches per epoch), lr %g, %s precision, on %s",
             total_steps, cfg.epochs, steps_per_epoch, n_batches, cfg.lr, precision, device)
    if world > 1:
        log.info("%d processes (%s): each takes 1/%d of every global batch of %d; effective batch %d x %d "
                 "accumulation = %d examples per optimizer step", world, "FSDP2" if fsdp else "DDP", world,
                 cfg.batch_size, cfg.batch_size, cfg.grad_accum, cfg.batch_size * cfg.grad_accum)
    progress = bar(total=total_steps, initial=step, desc="training", unit="step")
    epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if step >= total_steps:
                break
            if not checkpoint_is_fresh:
                snapshot = [_local(p).detach().clone().cpu() for p in params]
            batches = epoch_batches(epoch)
            train_model.train()
            epoch_losses: list[float] = []
            groups_of = [batches[i:i + cfg.grad_accum] for i in range(0, len(batches), cfg.grad_accum)]
            diverged_at = None
            for group in groups_of:
                if step >= total_steps:
                    break
                t0 = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                step_loss, step_tokens, step_logs = 0.0, 0, {}
                for i, batch in enumerate(group):
                    batch = to_device(distributed.shard_batch(batch), device)
                    # no gradient all-reduce between processes until the last micro-batch of the step
                    sync = accelerator.no_sync(train_model) if i < len(group) - 1 else contextlib.nullcontext()
                    with sync:
                        with accelerator.autocast():
                            loss, logs = loss_fn(train_model, batch)
                        finite = torch.isfinite(loss.detach()).all()
                        if world > 1:  # every process stops together
                            finite = distributed.all_reduce(finite.float().to(device), "min") > 0
                        if not finite:
                            diverged_at = f"loss is {_float(loss)}"
                            break
                        accelerator.backward(loss / len(group))
                    step_loss += _float(loss) / len(group)
                    logs = dict(logs or {})
                    step_tokens += int(logs.pop("tokens", 0) or count_tokens(batch))
                    for k, v in logs.items():
                        step_logs[k] = step_logs.get(k, 0.0) + _float(v) / len(group)
                skip = False
                if diverged_at is None:
                    clip = cfg.max_grad_norm if cfg.max_grad_norm else float("inf")
                    grad_norm = _float(accelerator.clip_grad_norm_(params, clip))
                    outcome = step_outcome(grad_norm, loss_scaling=accelerator.scaler is not None,
                                           explode_grad_norm=cfg.explode_grad_norm)
                    skip = outcome == "skip"
                    if outcome == "diverged":
                        diverged_at = f"gradient norm {grad_norm:.3g} (limit {cfg.explode_grad_norm:g})"
                if diverged_at is not None:
                    status = f"diverged at step {step + 1}"
                    log.warning("%s: %s; the model is back to its state at the start of epoch %d%s",
                                status, diverged_at, epoch + 1,
                                f" (checkpoint {last_ckpt})" if last_ckpt else "")
                    optimizer.zero_grad(set_to_none=True)
                    restore_last_good()
                    break
                lr = scheduler.get_last_lr()[0]
                optimizer.step()
                if skip or accelerator.optimizer_step_was_skipped:
                    skipped += 1
                    log.warning("step %d: fp16 gradient overflow (norm %s); the loss scaler skipped this "
                                "update and lowered its scale (%d skipped so far)", step + 1, grad_norm, skipped)
                else:
                    scheduler.step()
                step += 1
                dt = time.perf_counter() - t0
                keys = sorted(step_logs)
                vals, step_tokens = reduce_step([step_loss] + [step_logs[k] for k in keys], step_tokens)
                step_loss, step_logs = vals[0], dict(zip(keys, vals[1:]))
                train_s += dt
                tokens += step_tokens
                rec = {"step": step, "epoch": epoch + 1, "loss": step_loss, "lr": lr,
                       "grad_norm": grad_norm if math.isfinite(grad_norm) else None,
                       "tokens": step_tokens, "tokens_per_s": step_tokens / max(dt, 1e-9), **step_logs}
                if skip:
                    rec["skipped"] = True
                history.append(rec)
                epoch_losses.append(step_loss)
                if accelerator.is_main_process:
                    append_jsonl(out_dir / LOG, rec)
                if tracking:
                    accelerator.log({f"train/{k}": v for k, v in rec.items()
                                     if isinstance(v, (int, float)) and k != "step"}, step=step)
                progress.update(1)
                progress.set_postfix(loss=f"{step_loss:.3f}", tok_s=f"{tokens / max(train_s, 1e-9):,.0f}",
                                     epoch=epoch + 1)
                if step % cfg.log_every == 0 or step == total_steps:
                    log.info("step %d/%d (epoch %d): loss %.4f, gradient norm %.2f, lr %.2e, %s tokens/s",
                             step, total_steps, epoch + 1, step_loss, grad_norm, lr,
                             f"{tokens / max(train_s, 1e-9):,.0f}")
            if diverged_at is not None:
                break
            ep = {"epoch": epoch + 1, "step": step,
                  "loss": sum(epoch_losses) / max(1, len(epoch_losses))}
            extra = None
            if on_epoch_end:
                with unsharded(train_model):
                    extra = on_epoch_end(epoch, step, accelerator.unwrap_model(train_model))
            train_model.train()
            stop = bool(extra and extra.get("stop"))
            if extra:
                ep.update({k: v for k, v in extra.items() if k != "stop"})
            if tracking:
                accelerator.log({f"eval/{k}": v for k, v in ep.items()
                                 if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"},
                                step=step)
            epoch_logs.append(ep)
            if stop:
                status = f"stopped early at epoch {epoch + 1}" + (f": {extra['reason']}" if extra.get("reason") else "")
            elif step >= total_steps and epoch + 1 < cfg.epochs:
                status = f"completed (max_steps={cfg.max_steps} reached)"
            done = stop or step >= total_steps or epoch + 1 == cfg.epochs
            due = time.perf_counter() - last_ckpt_time >= cfg.checkpoint_interval_s
            if world > 1:  # every process takes the same decision (clocks differ)
                due = distributed.broadcast(due)
            checkpoint_is_fresh = False
            if cfg.save_checkpoints and (done or due):
                last_ckpt = save_checkpoint(status if done else "running")
                last_ckpt_time, checkpoint_is_fresh, snapshot = time.perf_counter(), True, None
            log.info("epoch %d/%d done: mean loss %.4f%s", epoch + 1, cfg.epochs, ep["loss"],
                     "".join(f", {k} {v:.3f}" for k, v in ep.items()
                             if k not in ("epoch", "step", "loss") and isinstance(v, (int, float))))
            if done:
                break
    finally:
        progress.close()
        if tracking:
            accelerator.end_training()
    wall = prior_wall + time.perf_counter() - t_start
    epochs_done = epoch_logs[-1]["epoch"] if epoch_logs else 0
    result = TrainResult(status, step, epochs_done, history, epoch_logs, tokens / max(train_s, 1e-9), wall,
                         tokens, str(last_ckpt) if last_ckpt else None, skipped)
    log.info("training %s: %d steps, %d epochs, %s tokens/s, %.1f s%s", status, step, epochs_done,
             f"{result.tokens_per_s:,.0f}", wall, f", {skipped} fp16 steps skipped" if skipped else "")
    return result
