"""Shared test fixtures.

``lume_data``: the official LUME files in ``../shared/lume-data`` (found relative to the repo root).
On CI (``CI`` set) a missing directory fails loudly; elsewhere tests that need it are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import lumebench  # noqa: F401  (first: pins the CPU numerics before any test imports torch)

REPO_ROOT = Path(__file__).resolve().parents[1]
LUME_DATA = REPO_ROOT.parent / "shared" / "lume-data"

os.environ.setdefault("LUME_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("LUME_SLOW", "") in ("", "0"):
        skip = pytest.mark.skip(reason="slow test: set LUME_SLOW=1 to run")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def one_thread():
    """One torch thread: numbers measured single-threaded (float sums depend on the thread count),
    and bit-identical between a subprocess and the test process."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def lume_data() -> Path:
    if not LUME_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"official LUME data not found at {LUME_DATA} (CI must have ../shared beside the repo)")
        pytest.skip(f"official LUME data not found at {LUME_DATA}")
    return LUME_DATA


# --- reliability figures (tests/test_hostile_inputs.py, tests/test_faults.py) ---------------------
# Each hostile-input case records (name, seconds) and each injected fault (point, survived); the
# terminal summary prints the totals that the README's reliability section quotes.
_RELIABILITY: dict[str, list] = {"cases": [], "faults": []}


@pytest.fixture(scope="session")
def reliability_log() -> dict[str, list]:
    return _RELIABILITY


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    cases, faults = _RELIABILITY["cases"], _RELIABILITY["faults"]
    if not cases and not faults:
        return
    tr = terminalreporter
    tr.section("reliability")
    if cases:
        handled = [c for c in cases if c["handled"]]
        slowest = max(cases, key=lambda c: c["seconds"])
        tr.write_line(f"hostile inputs: {len(handled)} of {len(cases)} handled (exit 2, one line naming "
                      f"the field); median {sorted(c['seconds'] for c in cases)[len(cases) // 2]:.2f} s, "
                      f"slowest {slowest['seconds']:.2f} s ({slowest['name']})")
    if faults:
        survived = [f for f in faults if f["survived"]]
        tr.write_line(f"faults injected: {len(faults)}, survived with identical results: {len(survived)} "
                      f"({', '.join(f['point'] for f in faults)})")
