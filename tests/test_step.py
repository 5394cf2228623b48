"""The one cached-step primitive (lumebench.step): compute-or-reuse keyed by the inputs, an
atomic completion marker, and an interrupted step computed again (resuming what it left)."""

from __future__ import annotations

import json

import pytest

from lumebench.errors import LumeError
from lumebench.step import MARKER, Step


def test_a_done_step_is_reused_and_a_new_key_is_computed_or_refused(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        (tmp_path / "s" / "out.txt").write_text("x")
        return {"n": len(calls)}

    step = Step(tmp_path / "s", {"a": 1}, what="test step")
    first = step.run(compute)
    assert first["result"] == {"n": 1} and calls == [1]
    marker = json.loads((tmp_path / "s" / MARKER).read_text())
    assert marker["key"] == step.fingerprint and marker["result"] == {"n": 1} and "wall_s" in marker
    assert Step(tmp_path / "s", {"a": 1}).run(compute)["result"] == {"n": 1} and calls == [1]  # reused
    with pytest.raises(LumeError, match="other inputs"):
        Step(tmp_path / "s", {"a": 2}).run(compute)            # the folder holds other finished work
    assert Step(tmp_path / "s", {"a": 2}).run(compute, on_other_key="redo")["result"] == {"n": 2}
    assert Step(tmp_path / "s", {"a": 1}).done() is None       # the marker now holds the new key


def test_an_interrupted_step_has_no_marker_and_is_computed_again(tmp_path):
    step = Step(tmp_path / "s", {"a": 1})

    def crash():
        (tmp_path / "s" / "partial").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        step.run(crash)
    assert step.record() is None and (tmp_path / "s" / "partial").exists()
    rec = step.run(lambda: {"resumed_from": (tmp_path / "s" / "partial").read_text()})
    assert rec["result"] == {"resumed_from": "half"} and rec["resumed"] is True


def test_a_discarded_completion_is_computed_again(tmp_path):
    step = Step(tmp_path / "s", {"a": 1})
    assert step.run(lambda: 1)["result"] == 1
    step.discard()  # e.g. its output was found damaged
    assert step.done() is None and step.run(lambda: 2)["result"] == 2 and step.done()["result"] == 2
    step.discard()
    step.discard()  # a marker already gone is no error (every process may discard)


def test_a_foreign_marker_is_one_line_error(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / MARKER).write_text("{}")
    with pytest.raises(LumeError, match="not a completion marker"):
        Step(tmp_path / "s", {"a": 1}).run(dict)


def test_the_packaged_default_is_the_one_default():
    from pathlib import Path

    from lumebench.pipeline.config import DEFAULT_FILE

    shipped = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    assert shipped.resolve() == DEFAULT_FILE.resolve()  # a link, not a copy
