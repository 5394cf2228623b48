"""Shared test fixtures.

``lume_data``: the official LUME files in ``../shared/lume-data`` (found relative to the repo root).
On CI (``CI`` set) a missing directory fails loudly; elsewhere tests that need it are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
def lume_data() -> Path:
    if not LUME_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"official LUME data not found at {LUME_DATA} (CI must have ../shared beside the repo)")
        pytest.skip(f"official LUME data not found at {LUME_DATA}")
    return LUME_DATA
