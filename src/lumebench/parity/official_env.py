"""A side virtualenv with the official SemEval evaluation environment, built once and cached.

The organisers pinned (``requirements.txt`` of the evaluation script, SPEC.md §2): torch 2.5.0,
transformers 4.45.2, accelerate 1.0.0, datasets 3.0.1, pandas 2.2.3, rouge_score 0.1.2,
scikit-learn 1.5.0, numpy 2.1.2. Everything but torch installs here as pinned; torch 2.5.0 is not
served to this machine, so the side environment uses torch 2.13.0 (the CPU build the project pins),
which transformers 4.45.2 runs with. ``tokenizers<0.21`` is what transformers 4.45.2 requires.

Location: ``$LUME_OFFICIAL_ENV`` or ``<lumebench cache>/official-env/<hash of the pins>``. The
build runs ``python -m venv`` + ``pip install`` (PyPI only), takes 1-3 minutes, and is marked
complete only when everything installed (a half-built environment is rebuilt). A lock keeps two
processes from building it at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from lumebench.errors import LumeError
from lumebench.progress import log

OFFICIAL_PINS = (
    "torch==2.13.0",          # official: 2.5.0 (not served here); the project's pinned CPU build
    "transformers==4.45.2",
    "tokenizers<0.21",
    "accelerate==1.0.0",
    "datasets==3.0.1",
    "pandas==2.2.3",
    "numpy==2.1.2",
    "rouge-score==0.1.2",
    "scikit-learn==1.5.0",
    "safetensors",
)
_MARKER = "lumebench-official-env.json"


def env_dir() -> Path:
    from lumebench.models.loading import cache_root

    if os.environ.get("LUME_OFFICIAL_ENV"):
        return Path(os.environ["LUME_OFFICIAL_ENV"]).expanduser()
    key = hashlib.sha256("\n".join(OFFICIAL_PINS).encode()).hexdigest()[:10]
    return cache_root() / "official-env" / key


def _python(d: Path) -> Path:
    return d / "bin" / "python"


def official_python() -> Path:
    """The side environment's python, building the environment first if needed."""
    d = env_dir()
    if (d / _MARKER).is_file() and _python(d).is_file():
        return _python(d)
    d.parent.mkdir(parents=True, exist_ok=True)
    with open(d.parent / f".{d.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (d / _MARKER).is_file() and _python(d).is_file():
            return _python(d)
        log.info("building the official evaluation environment (transformers 4.45.2, pandas 2.2.3, "
                 "rouge_score 0.1.2, ...) once, in %s", d)
        shutil.rmtree(d, ignore_errors=True)
        steps = ([sys.executable, "-m", "venv", str(d)],
                 [str(_python(d)), "-m", "pip", "install", "-q", "--disable-pip-version-check", *OFFICIAL_PINS])
        for cmd in steps:
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
                raise LumeError(f"could not build the official environment in {d}: {' '.join(cmd[:4])} "
                                f"failed: {tail[0][:200]}")
        (d / _MARKER).write_text(json.dumps({"pins": OFFICIAL_PINS}, indent=2))
    return _python(d)


def run_official(spec: dict, workdir: Path, *, timeout: float | None = None) -> dict:
    """Run ``official_protocol.py`` on ``spec`` in the side environment; return its JSON output."""
    py = official_python()
    workdir.mkdir(parents=True, exist_ok=True)
    spec = dict(spec, workdir=str(workdir / "official"))
    spec_path, out_path = workdir / "official_spec.json", workdir / "official_out.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    script = Path(__file__).with_name("official_protocol.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    done = subprocess.run([str(py), str(script), str(spec_path), str(out_path)], capture_output=True,
                          text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        last = [l for l in (done.stderr or "").strip().splitlines() if l.strip()][-1:] or ["(no output)"]
        (workdir / "official_stderr.txt").write_text(done.stderr or "")
        raise LumeError(f"the official protocol failed in the official environment: {last[0][:300]} "
                        f"(full log: {workdir / 'official_stderr.txt'})")
    return json.loads(out_path.read_text(encoding="utf-8"))
