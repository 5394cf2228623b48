"""The golden reproducibility test: a short fixed pipeline (``tests/golden_pipeline.py``: generated
data, the tiny target, 4 steps of gradient ascent, one evaluation) must give the weight and score
digests committed in ``tests/golden.json`` on every x86 CPU with AVX2 — CI runs on machines of
different instruction sets and vendors over time, so this test is what shows that the pinned
numerics (``lumebench.numerics``) hold. The second test shows it would catch a change of kernels:
the same pipeline with the machine's native kernels (or ATen's DEFAULT ones) gives other weights.

A legitimate change of the numerics (a new training loop, another torch) regenerates the constants:
``python tests/golden_pipeline.py tests/golden.json`` (and says so in the commit).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
GOLDEN = json.loads((HERE / "golden.json").read_text())
DIGESTS = ("data", "target_weights", "unlearned_weights", "scores")


def _pipeline(tmp_path: Path, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS",
                          "LUME_NATIVE_KERNELS", "MKL_DYNAMIC", "OMP_DYNAMIC")}
    out = tmp_path / "golden.json"
    proc = subprocess.run([sys.executable, str(HERE / "golden_pipeline.py"), str(out)], env={**clean, **env,
                          "LUME_QUIET": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


def test_golden_pipeline_gives_the_committed_bits(tmp_path):
    got = _pipeline(tmp_path)
    assert got["numerics"] == {"mode": "pinned", "aten_capability": "AVX2", "portable": True}, got["numerics"]
    assert {k: got[k] for k in DIGESTS} == {k: GOLDEN[k] for k in DIGESTS}


def test_golden_pipeline_catches_other_kernels_without_the_pin(tmp_path):
    got = _pipeline(tmp_path, LUME_NATIVE_KERNELS="1", ATEN_CPU_CAPABILITY="default")
    assert got["numerics"]["mode"] == "native" and got["numerics"]["aten_capability"] == "DEFAULT"
    assert got["numerics"]["portable"] is False
    assert got["data"] == GOLDEN["data"]  # the data generator is pure Python: no kernels involved
    assert got["target_weights"] != GOLDEN["target_weights"]
    assert got["unlearned_weights"] != GOLDEN["unlearned_weights"]


def test_importing_torch_first_warns_in_one_line_what_is_not_pinned():
    code = "import torch, torch.nn.functional as F; F.softmax(torch.randn(64), 0); import lumebench"
    clean = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "LUME_NATIVE_KERNELS")}
    proc = subprocess.run([sys.executable, "-W", "always", "-c", code], env=clean, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "not pinned" in ln]
    cap = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                         env=clean, capture_output=True, text=True, timeout=120).stdout.strip()
    if cap == "AVX2":
        pytest.skip("this CPU's own kernels are the AVX2 ones: nothing differs to warn about but the MKL mode")
    assert len(lines) == 1 and f"ATen CPU kernels {cap}" in lines[0], proc.stderr


def test_native_kernels_flag_is_recorded_as_not_portable(tmp_path):
    code = ("import sys; from lumebench.cli import main; "
            "sys.exit(main(['--native-kernels', 'data', 'generate', '--out', sys.argv[1], '--docs-per-task', '1']))")
    out = tmp_path / "d"
    clean = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "LUME_NATIVE_KERNELS")}
    proc = subprocess.run([sys.executable, "-c", code + "; ", str(out)], env=clean, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    rec = subprocess.run([sys.executable, "-c", "import json, lumebench.numerics as n; n.unpin_for_native(); "
                          "import torch; torch.ones(2).sum(); print(json.dumps(n.numerics_record()))"],
                         env=clean, capture_output=True, text=True, timeout=120)
    record = json.loads(rec.stdout)
    assert record["mode"] == "native" and record["portable"] is False
    assert "native kernels chosen" in record["not_portable_because"]
