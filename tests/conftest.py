"""Shared test fixtures.

``lume_data``: the official LUME files in ``../shared/lume-data`` (found relative to the repo root).
On CI (``CI`` set) a missing directory fails loudly; elsewhere tests that need it are skipped.
"""

from __future__ import annotations

import os
import dataclasses
import json
from pathlib import Path

import pytest

import lumebench  # noqa: F401  (first: pins the CPU numerics before any test imports torch)
from lumebench.data.records import Benchmark  # noqa: E402

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


# --- the shared memorised tiny target of the unlearning and attack tests (built once per session) --
# The benchmark is the offline generator's (2 documents per task and split) with the sentence-completion
# prompts shortened to their last 20 words and the continuations to 20 words, so that the tiny model
# memorises it in a few hundred steps; every official score cell (split x task x kind) is present.

TINY = {"hidden_size": 128, "num_layers": 2, "num_heads": 4, "intermediate_size": 256,
        "vocab_size": 1024, "max_position": 512}


def _short(row, n=20):
    if row.kind != "sc":
        return row
    return dataclasses.replace(row, input=" ".join(row.input.split()[-n:]), output=" ".join(row.output.split()[:n]))


@pytest.fixture(scope="session")
def bench_dir(tmp_path_factory) -> Path:
    from lumebench.data.generate import generate_benchmark

    return generate_benchmark(tmp_path_factory.getbasetemp() / "unlearn-data", docs_per_task=2, seed=0)


@pytest.fixture(scope="session")
def bench(bench_dir) -> Benchmark:
    from lumebench.data.loaders import load_benchmark

    b = load_benchmark(bench_dir)
    return Benchmark([_short(r) for r in b.forget], [_short(r) for r in b.retain], b.mia_members,
                     b.mia_nonmembers, "generated-short")


@pytest.fixture(scope="session")
def short_bench_dir(bench, bench_dir, tmp_path_factory) -> Path:
    """The shortened benchmark as files (official jsonl + MIA), for the CLI."""
    import shutil

    out = tmp_path_factory.getbasetemp() / "unlearn-data-short"
    out.mkdir(exist_ok=True)  # the same files whichever module's copy of this fixture asks first
    for split in ("forget", "retain"):
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r.to_official()) + "\n" for r in bench.split(split)))
    shutil.copytree(bench_dir / "mia", out / "mia", dirs_exist_ok=True)
    return out


@pytest.fixture(scope="session")
def target(bench, tmp_path_factory, one_thread) -> str:
    from lumebench.pipeline.target import FinetuneConfig, build_target

    cfg = FinetuneConfig.for_base("tiny", {"epochs": 40, "min_steps": 0, "eval_from": 40, "tiny": TINY,
                                            "mixed_precision": "no"})
    path = build_target("tiny", bench, cfg, cache_dir=tmp_path_factory.getbasetemp() / "unlearn-targets")
    info = json.loads((path / "target.json").read_text())
    mem = info["memorisation"]
    assert mem["forget_regurgitation"] > 0.9 and mem["retain_regurgitation"] > 0.9, mem
    return str(path)
