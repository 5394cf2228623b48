"""The README's tables and figures from `lume run` are generated from the committed result files in
``docs/results/`` by ``docs/results/readme_tables.py``: its check mode fails when the README differs
from what the results give (a table copied or edited by hand, or results committed without
regenerating the README)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "results" / "readme_tables.py"


def test_readme_generated_sections_match_the_committed_results():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_check_catches_a_hand_edited_table(tmp_path, monkeypatch):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import readme_tables
    finally:
        sys.path.pop(0)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    new, changed = readme_tables.render(text)
    assert changed == [] and new == text
    begin = text.index("<!-- BEGIN GENERATED: default -->")
    row = text.index("| ga |", begin)
    edited = text[:row] + text[row:].replace("| ga |", "| ga (edited) |", 1)
    _, changed = readme_tables.render(edited)
    assert changed == ["default"]
