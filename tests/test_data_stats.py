"""``lume data stats``: counts and word-length percentiles per split and task."""

from __future__ import annotations

import json

import pytest

from lumebench.cli import main
from lumebench.data.loaders import load_benchmark
from lumebench.data.stats import benchmark_stats, format_table, percentile


def test_percentile_interpolates():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 90) == 5
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 10) == pytest.approx(1.9)
    assert percentile([], 50) != percentile([], 50)  # NaN


def test_official_stats(lume_data):
    stats = {(s["split"], s["task"]): s for s in benchmark_stats(load_benchmark(lume_data / "official"))}
    assert [stats[("forget", t)]["documents"] for t in ("Task1", "Task2", "Task3")] == [243, 250, 373]
    assert [stats[("retain", t)]["rows"] for t in ("Task1", "Task2", "Task3")] == [492, 1500, 742]
    # the official sc lengths in words (SPEC.md: Task1 ~134/~33, Task2 ~19/~20, Task3 ~124/~31)
    assert stats[("forget", "Task1")]["sc_in"]["p50"] == 134
    assert stats[("forget", "Task2")]["sc_in"]["p50"] == 19
    assert 120 <= stats[("forget", "Task3")]["sc_in"]["p50"] <= 126
    assert stats[("forget", "Task2")]["qa_out"] == {"p10": 1, "p50": 1, "p90": 7}


def test_cli_table_and_json(lume_data, capsys):
    assert main(["data", "stats", str(lume_data / "official")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:4] == ["split", "task", "docs", "rows"]
    assert lines[3].split()[:4] == ["forget", "Task1", "243", "486"]
    assert len(lines) == 3 + 6
    # aligned: every column starts at the same offset in each row
    starts = [ln.index("Task") for ln in lines[3:]]
    assert len(set(starts)) == 1
    assert main(["data", "stats", "--json", str(lume_data)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mia"] == {"members": 150, "nonmembers": 150}
    assert {(s["split"], s["task"]) for s in data["stats"]} == {
        (sp, t) for sp in ("forget", "retain") for t in ("Task1", "Task2", "Task3")}


def test_format_table_title():
    stats = [{"split": "forget", "task": "Task1", "documents": 1, "rows": 2,
              "sc_in": {"p10": 1, "p50": 2, "p90": 3}, "sc_out": {"p10": 1, "p50": 1, "p90": 1},
              "qa_out": {"p10": 1.5, "p50": 1.5, "p90": 1.5}}]
    text = format_table(stats, "my title")
    assert text.splitlines()[0] == "my title" and "1/2/3" in text and "1.5/1.5/1.5" in text
