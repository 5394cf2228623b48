"""What every run records so that it can be reproduced: seed, versions, data fingerprint, machine."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import sys
import time
from importlib import metadata
from typing import Any

PACKAGES = ("lumebench", "torch", "transformers", "accelerate", "peft", "tokenizers", "rouge-score",
            "scikit-learn", "numpy")


def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine() -> dict[str, Any]:
    """The machine and its numerics (:func:`lumebench.numerics.numerics_record`: CPU model and ISA,
    ATen kernels, MKL/oneDNN versions and modes, threads, GPU and its determinism flags)."""
    from lumebench.numerics import numerics_record

    info: dict[str, Any] = {"platform": platform.platform(), "cpu_count": os.cpu_count()}
    try:
        import torch
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    info["numerics"] = numerics_record()
    return info


def fingerprint(obj: Any) -> str:
    """A stable short content hash of any JSON-serialisable object (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy as np
        np.random.seed(seed % 2**32)
    except ImportError:
        pass
    try:
        import torch
        torch.manual_seed(seed)
    except ImportError:
        pass


def run_meta(seed: int | None = None, config: dict | None = None, data_fingerprint: str | None = None) -> dict:
    return {
        "seed": seed,
        "config": config,
        "data_fingerprint": data_fingerprint,
        "versions": package_versions(),
        "machine": machine(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"a.b": 1, "c": [1, 2]}`` (lists stay values)."""
    if not isinstance(obj, dict):
        return {prefix: obj}
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(flatten(v, key) if isinstance(v, dict) and v else {key: v})
    return out
