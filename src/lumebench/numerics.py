"""The machine's numerics, pinned so that the same seed gives the same bits on every x86 CPU.

PyTorch's CPU results depend on the machine in three places, each measured on this project's
machines (``benchmarks/numerics_pin.py``, ``tests/test_golden.py``):

* **ATen's kernels** are chosen at the first operation by the CPU's instruction set (DEFAULT, AVX2,
  AVX512): softmax, ``scaled_dot_product_attention``, norms and the optimizer's vector code round
  differently under AVX2 and AVX-512, and 1,600 training steps turn the last bit into another model.
  ``ATEN_CPU_CAPABILITY=avx2`` selects the AVX2 kernels on every CPU that has AVX2 (x86-64-v3: every
  Intel CPU since Haswell, every AMD CPU since Excavator/Zen).
* **MKL's matrix products** (the ``sgemm`` behind every linear layer) dispatch by vendor and
  instruction set. ``MKL_CBWR=AVX2,STRICT`` (conditional numerical reproducibility, oneMKL developer
  guide) makes Intel CPUs run MKL's AVX2 branch, and STRICT makes ``gemm`` bit-identical whatever
  the thread count. MKL ignores CNR branches on non-Intel CPUs: MKL_VERBOSE reports ``CNR:AUTO,STRICT``
  on an AMD EPYC, where AVX2, AVX512, AVX, SSE4_2 and AUTO all gave the same bits
  (``benchmarks/numerics_pin.py``), so AMD CPUs run MKL's AUTO path. Intel documents one mode as
  equal on Intel and AMD, ``COMPATIBLE``: measured here it costs about 2x (1.94x-1.97x) the CPU time of training the
  tiny model (the pin with AVX2,STRICT: 0.93x-1.07x, within the rounds' noise), which would put the default ``lume run`` far over its budget, and it
  is thread-count dependent (1, 2, 4 threads agree, 3, 5, 8 do not). So it is the user's choice:
  ``MKL_CBWR=COMPATIBLE`` set before starting is kept (and recorded); the default is AVX2,STRICT.
  Whether MKL's AUTO path on AMD equals its AVX2 branch on Intel is what ``tests/test_golden.py``
  checks on every machine CI runs on.
* **oneDNN** (bf16 matrix products, convolutions) dispatches to AVX-512/AMX where it can:
  ``ONEDNN_MAX_CPU_ISA=AVX2`` caps it.

:func:`pin` sets these variables; it must run before torch is imported (``import lumebench`` does
it, so every entry point — the ``lume`` command, ``python -m lumebench``, worker processes, each
process that ``torchrun``/``accelerate launch`` start, the test suite — is pinned). A program
that imported torch first gets one warning line naming what is not pinned. ``--native-kernels``
(or ``LUME_NATIVE_KERNELS=1``) leaves the machine's own kernels and threads: faster on AVX-512,
not reproducible elsewhere, and the run record says so. On other architectures (ARM, Apple
silicon) and on GPUs the bits differ by construction: the record says so
(:func:`numerics_record`), and claims there rest on spreads over seeds and target builds.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
import warnings

#: the environment that fixes the kernels (before torch is imported)
PIN: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2,STRICT",
    "MKL_DYNAMIC": "FALSE",
    "OMP_DYNAMIC": "FALSE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
#: torch threads of a process that was not told how many to use: a fixed number, not the core
#: count (2: the project's reference machine). ``OMP_NUM_THREADS`` set by the user is taken instead
#: (a fixed number too); ``--threads`` / a run config's ``threads`` set it per command.
DEFAULT_THREADS = 2
NATIVE_ENV = "LUME_NATIVE_KERNELS"

_state: dict = {"pinned": False, "native": False, "torch_was_imported": False, "set_late": False, "replaced": {},
                "before": {}}


def _x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def native_requested() -> bool:
    return os.environ.get(NATIVE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def pin() -> None:
    """Set :data:`PIN` in the environment (once; a no-op under ``LUME_NATIVE_KERNELS=1``). A value
    the user set to something else is replaced, and the record names it. Torch imported already:
    one warning line naming what cannot be pinned any more."""
    if _state["pinned"] or _state["native"]:
        return
    if native_requested():
        _state["native"] = True
        return
    _state["torch_was_imported"] = "torch" in sys.modules
    # torch's default intra-op thread count is OMP_NUM_THREADS: a fixed number, not the cores
    _state["before"]["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS")
    os.environ.setdefault("OMP_NUM_THREADS", str(DEFAULT_THREADS))
    for key, value in PIN.items():
        old = os.environ.get(key)
        _state["before"][key] = old
        if key == "MKL_CBWR" and old and old.split(",")[0].strip().upper() == "COMPATIBLE":
            continue  # Intel's cross-vendor mode, slower: the user's choice is kept
        if old is not None and old != value:
            _state["replaced"][key] = old
        os.environ[key] = value
    _state["pinned"] = True
    # torch loaded first matters only where the pin changed a variable (a process started with the
    # pinned environment, e.g. a worker or a subprocess of a pinned one, is pinned whatever it imports first)
    _state["set_late"] = _state["torch_was_imported"] and any(
        _state["before"].get(k) != os.environ.get(k) for k in PIN)
    if _state["set_late"]:
        missing = unpinned()
        if missing:
            warnings.warn("lumebench: torch was imported before lumebench, so its CPU numerics are not pinned ("
                          + "; ".join(missing) + "): results may differ from other machines' bits; import "
                          "lumebench first, or set " + " ".join(f"{k}={v}" for k, v in PIN.items())
                          + " before starting Python", RuntimeWarning, stacklevel=2)


def unpin_for_native() -> None:
    """``--native-kernels``: give the environment back as it was (torch must not be imported yet)."""
    if "torch" in sys.modules and _state["pinned"]:
        from lumebench.errors import LumeError

        raise LumeError("--native-kernels must be chosen before torch is loaded (set LUME_NATIVE_KERNELS=1 "
                        "in the environment instead)", field="--native-kernels")
    for key, old in _state["before"].items():
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old
    os.environ[NATIVE_ENV] = "1"  # worker processes and launched ranks follow
    _state.update(pinned=False, native=True, replaced={}, before={})


def is_pinned() -> bool:
    return _state["pinned"] and not unpinned()


def unpinned() -> list[str]:
    """What of the pin is not in force in this process (empty when pinned): the ATen capability in
    use, and the variables torch had read before they were set."""
    out = []
    if not _x86():
        out.append(f"{platform.machine()} is not x86: its kernels differ from x86's by construction")
        return out
    try:
        import torch

        cap = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - torch missing or too old
        return out
    if cap not in ("AVX2",) and _cpu_has("avx2"):
        out.append(f"ATen CPU kernels {cap}, not AVX2")
    elif not _cpu_has("avx2"):
        out.append(f"this CPU has no AVX2 (ATen kernels {cap})")
    if _state.get("set_late"):
        out.append("MKL_CBWR/ONEDNN_MAX_CPU_ISA set after torch was imported")
    return out


def pinned_threads(requested: int | None) -> int | None:
    """The torch threads to use: ``requested``, else :data:`DEFAULT_THREADS` under the pin (a
    fixed number, so that results do not depend on the core count), else None (torch's default)."""
    if requested:
        return requested
    if not _state["pinned"]:
        return None
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", DEFAULT_THREADS)))
    except ValueError:
        return DEFAULT_THREADS


def apply_threads(requested: int | None) -> None:
    """Set this process's torch threads (see :func:`pinned_threads`)."""
    n = pinned_threads(requested)
    if n:
        import torch

        torch.set_num_threads(n)


def cache_tag() -> str:
    """What a cached result's bits depend on besides its inputs: ``portable-avx2-mklavx2`` under
    the pin (the same on every x86 CPU with AVX2), else this machine's kernels (and GPU)."""
    try:
        import torch
    except ImportError:
        return "no-torch"
    gpu = f"+cuda:{torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    if is_pinned():
        mkl = os.environ.get("MKL_CBWR", "").split(",")[0].strip().lower()
        return f"portable-avx2-mkl{mkl}" + gpu
    cpu = cpu_info()
    return (f"native:{cpu['arch']}:{cpu['vendor']}:{torch.backends.cpu.get_cpu_capability()}:"
            f"mkl={os.environ.get('MKL_CBWR', 'AUTO')}" + gpu)


# ------------------------------------------------------------------------------------- the record

_ISA_PREFIXES = ("sse4_2", "avx", "fma", "f16c", "amx", "avx512")


def cpu_info() -> dict:
    """CPU model, vendor and its vector-ISA flags (Linux ``/proc/cpuinfo``; elsewhere ``platform``),
    read once a process (every cache key asks through :func:`cache_tag`)."""
    info = _cpu_info()
    return {**info, "isa": list(info["isa"])}


@functools.lru_cache(maxsize=1)
def _cpu_info() -> dict:
    info = {"arch": platform.machine(), "model": platform.processor() or None, "vendor": None, "isa": []}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read(200_000)
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and not info.get("_model"):
            info["model"], info["_model"] = value, True
        elif key == "vendor_id" and not info["vendor"]:
            info["vendor"] = value
        elif key in ("flags", "Features") and not info["isa"]:
            info["isa"] = sorted(f for f in value.split() if f.startswith(_ISA_PREFIXES))
    info.pop("_model", None)
    return info


def _cpu_has(flag: str) -> bool:
    if not _x86():
        return False
    isa = cpu_info()["isa"]
    return flag in isa if isa else True  # no /proc/cpuinfo: assume a current x86


def _library_versions(config: str) -> dict:
    out = {}
    for line in config.splitlines():
        line = line.strip(" -")
        if "Math Kernel Library Version" in line:
            out["mkl"] = line.split("Version", 1)[1].strip().split(" for ")[0]
        elif line.startswith("Intel(R) MKL-DNN") or "oneDNN" in line.split("(")[0]:
            out["onednn"] = line.split(" v", 1)[-1].split(" ")[0] if " v" in line else line
    return out


def numerics_record() -> dict:
    """Everything of this process that decides its floating-point bits: CPU model and ISA flags,
    the ATen capability in use, MKL/oneDNN versions and modes, thread counts, and on a GPU the
    device, driver, CUDA/cuDNN versions and the determinism flags. ``portable`` says whether the
    bits should equal those of another machine with the same record's pin."""
    rec: dict = {"cpu": cpu_info(), "mode": "native" if _state["native"] else ("pinned" if _state["pinned"] else "unset"),
                 "env": {k: os.environ.get(k) for k in (*PIN, NATIVE_ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    if _state["replaced"]:
        rec["replaced_by_pin"] = dict(_state["replaced"])
    try:
        import torch
    except ImportError:
        return rec
    rec["aten_capability"] = torch.backends.cpu.get_cpu_capability()
    cbwr = os.environ.get("MKL_CBWR") or "AUTO"
    intel = (rec["cpu"].get("vendor") or "").startswith("GenuineIntel")
    rec["mkl_cnr"] = cbwr if intel or cbwr.upper().startswith("COMPATIBLE") else (
        f"AUTO{',STRICT' if 'STRICT' in cbwr.upper() else ''} (MKL_CBWR={cbwr}; MKL ignores CNR branches "
        f"other than COMPATIBLE on non-Intel CPUs)")
    rec.update(_library_versions(torch.__config__.show()))
    rec["threads"] = {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}
    rec["onednn_enabled"] = bool(torch.backends.mkldnn.enabled)
    rec["float32_matmul_precision"] = torch.get_float32_matmul_precision()
    rec["deterministic_algorithms"] = torch.are_deterministic_algorithms_enabled()
    if torch.cuda.is_available():
        gpus = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2**30, 1)})
        rec["gpu"] = {"devices": gpus, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                      "driver": _cuda_driver(), "cublas": _cublas_version(),
                      "cudnn_deterministic": torch.backends.cudnn.deterministic,
                      "cudnn_benchmark": torch.backends.cudnn.benchmark,
                      "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                      "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}
    problems = unpinned() if _state["pinned"] else ["native kernels chosen" if _state["native"] else "not pinned"]
    if torch.cuda.is_available():
        problems.append("GPU kernels: bits are specific to the GPU model and library versions")
    rec["portable"] = not problems
    if problems:
        rec["not_portable_because"] = problems
    return rec


def _cuda_driver() -> str | None:
    try:
        import ctypes

        v = ctypes.c_int()
        ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(v))
        return f"{v.value // 1000}.{v.value % 1000 // 10}"
    except Exception:  # noqa: BLE001 - no driver library
        return None


def _cublas_version() -> str | None:
    """The cuBLAS wheel's version (pip CUDA builds of torch ship it as ``nvidia-cublas-*``)."""
    from importlib import metadata

    for name in ("nvidia-cublas-cu12", "nvidia-cublas-cu13", "nvidia-cublas", "nvidia-cublas-cu11"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None
