"""Progress bars outside a terminal (issue 29): ``lume run > run.log`` wrote thousands of ``\\r``
updates into the log. A stream that is not a terminal gets plain lines at a low rate instead."""

from __future__ import annotations

import io

from lumebench import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(monkeypatch, stream, n=1000):
    monkeypatch.delenv("LUME_QUIET", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(progress.sys, "stderr", stream)
    with progress.bar(total=n, desc="generating", unit="row", mininterval=0, miniters=1) as p:
        for _ in range(n):
            p.update(1)  # every update asks for a redraw (mininterval 0): the class decides what is written
    return stream.getvalue()


def test_outside_a_terminal_a_plain_line_every_10_percent(monkeypatch):
    text = _run(monkeypatch, io.StringIO())
    lines = text.splitlines()
    assert "\r" not in text and text.endswith("\n")
    assert len(lines) == 11, lines  # 0 %, 10 %, ..., 100 %
    assert [int(l.split("|")[2].split("/")[0]) for l in lines] == list(range(0, 1001, 100))
    assert lines[-1].startswith("generating: 100%") and "1000/1000" in lines[-1]


def test_outside_a_terminal_a_line_every_30_s_without_a_total(monkeypatch):
    clock = iter(range(0, 10_000, 7))  # 7 s between updates
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    monkeypatch.delenv("LUME_QUIET", raising=False)
    stream = io.StringIO()
    monkeypatch.setattr(progress.sys, "stderr", stream)
    with progress.bar(desc="training", unit="step", mininterval=0, miniters=1) as p:
        for _ in range(20):
            p.update(1)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert 3 <= len(lines) <= 7, lines  # 20 updates x 7 s = 140 s: a line every 30 s, and the end
    assert lines[-1].startswith("training: 20")


def test_on_a_terminal_the_bar_redraws_in_place(monkeypatch):
    text = _run(monkeypatch, _Terminal(), n=50)
    assert "\r" in text
