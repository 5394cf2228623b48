"""The training loop's checkpoint: one folder ``out_dir/checkpoint/`` in safetensors + JSON, no pickle.

It holds the usable model (written by the loop's ``save_model``), the trainable parameters, the AdamW
state, the scheduler, the RNG state and the loop's counters and logs (``trainer_state.json``); it is
written atomically (a temp folder, then renames) and read back by :func:`restore_training_state` for
an exact resume. Sharded (FSDP2) runs write one file per process for the tensors
(``trainable.rank<R>.safetensors``, ...), the main process writes the model and the JSON.

:class:`LastGood` keeps what a divergence rolls back to: the trainable parameters at the start of the
epoch (in memory) or, when the last checkpoint holds that state, the checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from lumebench.errors import LumeError
from lumebench.io import atomic_write_json, parse_json, usual_permissions
from lumebench.train.weights import full_state_dict, local_shard

CHECKPOINT = "checkpoint"
STATE_JSON = "trainer_state.json"
TRAINABLE = "trainable.safetensors"
OPTIMIZER = "optimizer.safetensors"
RNG = "rng.safetensors"
# the order of trainer_state.json's entries
STATE_KEYS = ("status", "step", "epochs_done", "total_steps", "config", "optimizer", "scheduler", "rng",
              "rng_per_rank", "sharded_world", "history", "epoch_logs", "tokens", "skipped_steps", "train_s",
              "wall_s")


@dataclass(frozen=True)
class CheckpointFiles:
    """The tensor files this process reads and writes: ``trainable.safetensors``, ... or, in a sharded
    checkpoint, one file per process (``trainable.rank<R>.safetensors``, ...)."""

    trainable: str = TRAINABLE
    optimizer: str = OPTIMIZER
    rng: str = RNG

    @classmethod
    def of_process(cls, rank: int, sharded: bool) -> "CheckpointFiles":
        suffix = f".rank{rank}" if sharded else ""
        return cls(*(f"{name[:-12]}{suffix}.safetensors" for name in (TRAINABLE, OPTIMIZER, RNG)))


# ---------------------------------------------------------------------------------------------
# optimizer and RNG state as tensors + JSON


def _optimizer_to_files(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
    for idx, st in sd["state"].items():
        meta["state"][str(idx)] = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{idx}.{k}"] = local_shard(v).detach().cpu().contiguous()
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


def retire_checkpoint(out_dir: str | os.PathLike) -> None:
    """Drop ``out_dir/checkpoint/`` once the step that trained is marked done: its weights and AdamW
    state (three copies of the trainable weights: 2.1 GB for SmolLM2-135M) only served a resume.
    Its ``trainer_state.json`` (the loop's counters, config and per-step history up to that
    checkpoint: the last step of a finished run, the rollback point of a diverged one) is kept as
    ``out_dir/trainer_state.json``, beside ``train_log.jsonl`` (every step that ran)."""
    out_dir = Path(out_dir)
    ckpt = find_checkpoint(out_dir)
    if ckpt is None:
        return
    os.replace(ckpt / STATE_JSON, out_dir / STATE_JSON)
    for name in (CHECKPOINT, CHECKPOINT + ".old", f".{CHECKPOINT}.tmp"):
        shutil.rmtree(out_dir / name, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# reading


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
        return parse_json((ckpt / STATE_JSON).read_text(encoding="utf-8"), ckpt / STATE_JSON)
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
            local = local_shard(p)
            if tensors[n].shape != local.shape:
                raise LumeError(f"checkpoint tensor {n} has shape {tuple(tensors[n].shape)}, the model "
                                f"has {tuple(local.shape)}", path=str(ckpt / filename))
            local.copy_(tensors[n].to(local.device, local.dtype))


def check_resumable(st: dict, ckpt: Path, comparable: dict, ignored: tuple[str, ...],
                    sharded_world: int | None) -> None:
    """Refuse a checkpoint (state ``st``) written with other hyperparameters (``comparable``: this
    run's config without the ``ignored`` keys) or sharded otherwise (``sharded_world``: the number of
    processes of this FSDP2 run, None when it is not sharded)."""
    old = {k: v for k, v in st.get("config", {}).items() if k not in ignored}
    if old != comparable:
        diff = sorted(k for k in set(old) | set(comparable) if old.get(k) != comparable.get(k))
        raise LumeError(f"the checkpoint was written with other hyperparameters ({', '.join(diff)}); "
                        f"use another output directory or start over (resume=False / --no-resume)",
                        path=str(ckpt))
    had_world = st.get("sharded_world")
    if had_world != sharded_world:
        had = f"sharded over {had_world} processes" if had_world else "not sharded"
        now = f"sharded over {sharded_world} processes" if sharded_world else "not sharded"
        raise LumeError(f"the checkpoint is {had} and this run is {now}; resume it the way it was "
                        f"started (distributed=fsdp and the same number of processes)", path=str(ckpt))


def restore_training_state(ckpt: Path, st: dict, *, params: list[torch.nn.Parameter], names: list[str],
                           optimizer, scheduler, files: CheckpointFiles, rank: int | None) -> None:
    """Load the trainable parameters, the optimizer, the scheduler and the RNG state of ``ckpt``
    (``st``: its ``trainer_state.json``); ``rank``: this process's, in a sharded checkpoint."""
    _load_trainable(ckpt, params, names, files.trainable)
    opt_state = _optimizer_from_files(_load_safetensors(ckpt / files.optimizer), st["optimizer"])
    opt_params = [p for g in optimizer.param_groups for p in g["params"]]
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
    rng_meta = st["rng"] if rank is None else st["rng_per_rank"][rank]
    _set_rng_state(_load_safetensors(ckpt / files.rng), rng_meta)


# ---------------------------------------------------------------------------------------------
# writing


def _save_tensors(folder: Path, files: CheckpointFiles, names: list[str], params: list[torch.nn.Parameter],
                  opt_tensors: dict[str, torch.Tensor], rng_tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file({n: local_shard(p).detach().cpu().contiguous() for n, p in zip(names, params)},
              str(folder / files.trainable))
    save_file(opt_tensors, str(folder / files.optimizer))
    save_file(rng_tensors, str(folder / files.rng))
    for name in (files.trainable, files.optimizer, files.rng):  # save_file creates them 0600
        usual_permissions(folder / name)


def _swap_into(tmp: Path, final: Path) -> None:
    """``tmp`` becomes ``final``; a crash between the two renames leaves ``final.old`` (still found)."""
    old = final.parent / (final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def write_checkpoint(out_dir: Path, *, model: torch.nn.Module, unwrapped: torch.nn.Module,
                     params: list[torch.nn.Parameter], names: list[str], optimizer, scheduler,
                     save_model: Callable[..., None], files: CheckpointFiles, sharded_world: int | None,
                     loop_state: Callable[[], dict]) -> Path:
    """Write ``out_dir/checkpoint/`` atomically and return it; every process calls it (FSDP2: the
    full weights are gathered, each process writes its shard; otherwise the main process writes).

    ``model``: the model trained (possibly DDP-wrapped or sharded), ``unwrapped``: the model itself
    (given to ``save_model``); ``loop_state()``: the loop's entries of ``trainer_state.json`` (status,
    step, epochs_done, total_steps, config, history, epoch_logs, tokens, skipped_steps, train_s,
    wall_s), taken when the file is written.
    """
    from lumebench import distributed

    tmp = out_dir / f".{CHECKPOINT}.tmp"
    with distributed.main_only() as writer:
        if writer:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
    sharded = sharded_world is not None
    full = full_state_dict(model)  # FSDP2: gathered on every process (a collective)
    rng_tensors, rng_meta = _rng_state()
    opt_tensors, opt_meta = _optimizer_to_files(optimizer.state_dict())
    if sharded:  # every process writes its shard
        _save_tensors(tmp, files, names, params, opt_tensors, rng_tensors)
    rng_per_rank = distributed.gather([rng_meta]) if sharded else None
    final = out_dir / CHECKPOINT
    with distributed.main_only() as writer:  # one writer; the other processes wait
        if writer:
            if full is None:
                save_model(unwrapped, tmp)
                _save_tensors(tmp, CheckpointFiles(), names, params, opt_tensors, rng_tensors)
            else:
                save_model(unwrapped, tmp, state_dict=full)
            state = {**loop_state(), "optimizer": opt_meta, "scheduler": scheduler.state_dict(),
                     "rng": rng_meta, "rng_per_rank": rng_per_rank, "sharded_world": sharded_world}
            atomic_write_json(tmp / STATE_JSON, {k: state[k] for k in STATE_KEYS})
            _swap_into(tmp, final)
    return final


# ---------------------------------------------------------------------------------------------
# what a divergence rolls back to


class LastGood:
    """The trainable parameters at the start of the current epoch: an in-memory copy taken when the
    epoch starts, or the last checkpoint when it holds that state (it was written at the end of the
    previous epoch, or this run resumed from it)."""

    def __init__(self, params: list[torch.nn.Parameter], names: list[str], trainable_file: str,
                 checkpoint: Path | None):
        self.params, self.names, self.trainable_file = params, names, trainable_file
        self.checkpoint = checkpoint  # the last checkpoint written or resumed from
        self.snapshot: list[torch.Tensor] | None = None
        self.checkpoint_is_fresh = checkpoint is not None  # it holds the state at the start of the next epoch

    def epoch_starts(self) -> None:
        if not self.checkpoint_is_fresh:
            self.snapshot = [local_shard(p).detach().clone().cpu() for p in self.params]

    def epoch_ends(self) -> None:
        self.checkpoint_is_fresh = False

    def checkpointed(self, path: Path) -> None:
        self.checkpoint, self.checkpoint_is_fresh, self.snapshot = path, True, None

    def restore(self) -> None:
        if self.snapshot is not None:  # the start of this epoch (newer than any checkpoint)
            with torch.no_grad():
                for p, s in zip(self.params, self.snapshot):
                    local_shard(p).copy_(s)
        elif self.checkpoint is not None:
            _load_trainable(self.checkpoint, self.params, self.names, self.trainable_file)
