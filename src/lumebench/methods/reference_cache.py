"""The reference-NLL cache: ℓ_ref of a split's examples under the target, a cached :class:`Step`.

``<run_dir>/reference_nll_<split>/`` holds ``nll.safetensors`` (one float32 value per example, by
example index) and the step's ``done.json`` marker, keyed by the fingerprint of the tokenised
examples and the target's weights digest. A resumed run (whose model on disk has already moved)
reads the values back; other examples, another target, or a file damaged or cut short by a crash
are computed again. Under several processes each computes its share of the examples and the values
are gathered; the main process writes the file and the marker.
"""

from __future__ import annotations

from pathlib import Path

import torch

from typing import Callable, Sequence

from lumebench import distributed
from lumebench.io import atomic_save_safetensors
from lumebench.progress import log
from lumebench.provenance import fingerprint
from lumebench.step import Step

FILE = "nll.safetensors"


def examples_fingerprint(examples: Sequence) -> str:
    """The content of tokenised examples (:class:`lumebench.methods.base.Example`): index, target length, ids."""
    return fingerprint([[e.index, e.n_target, list(e.ids)] for e in examples])


def reference_nll_step(run_dir: Path, split: str, examples: Sequence, target_digest: str | None) -> Step:
    """The cache's step: ``<run_dir>/reference_nll_<split>/`` keyed by the examples and the target."""
    key = {"examples": examples_fingerprint(examples), "target": str(target_digest)}
    return Step(Path(run_dir) / f"reference_nll_{split}", key, what=f"reference NLL of the {split} split")


def cached_reference_nll(run_dir: Path, split: str, examples: Sequence, target_digest: str | None,
                         compute_values: Callable[[], torch.Tensor]) -> torch.Tensor:
    """ℓ_ref of ``examples`` read from the step in ``run_dir`` when it is done for these examples and
    this target and its file is sound; otherwise ``compute_values()`` (the model is still the
    reference then) and stored."""
    step = reference_nll_step(run_dir, split, examples, target_digest)
    if step.done() is not None:
        values = read_reference_nll(step.folder / FILE, len(examples))
        if values is not None:
            log.info("%s: already done in %s, reused", step.what, step.folder)
            return values
        step.discard()
    computed: dict[str, torch.Tensor] = {}

    def compute() -> dict:
        computed["values"] = values = compute_values()
        with distributed.main_only() as writer:
            if writer:
                atomic_save_safetensors(step.folder / FILE, {"nll": values.contiguous()})
        return {"file": FILE, "n": len(examples)}

    step.run(compute, on_other_key="redo")
    return computed["values"]


def read_reference_nll(path: Path, n: int) -> torch.Tensor | None:
    """The ``n`` stored values, or None (compute again) when the file is missing, cannot be read (cut
    short by a crash, or damaged) or does not hold ``n`` finite values."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            values = f.get_tensor("nll")
    except Exception as e:  # safetensors raises several types for a missing, truncated or corrupt file
        log.warning("the reference cache %s is unreadable (%s); computing it again", path, type(e).__name__)
        return None
    if tuple(values.shape) != (n,) or not torch.isfinite(values).all():
        log.warning("the reference cache %s does not fit these examples; computing it again", path)
        return None
    return values
