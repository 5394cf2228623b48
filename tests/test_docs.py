"""The documentation site (issue 26): ``mkdocs build --strict`` passes (broken links, pages missing from
the navigation and bad markup fail it), and the contributing page's recipe is real: its method, as
written on the page, registers, runs and gives the loss its formula says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_docs_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for page in ("index", "methods", "scoring", "contributing", "reproducibility"):
        assert (tmp_path / "site" / (page if page == "index" else f"{page}/index") ).with_suffix(".html").is_file() \
            or (tmp_path / "site" / page / "index.html").is_file()
    methods = (tmp_path / "site" / "methods" / "index.html").read_text(encoding="utf-8")
    assert "ails_ntua" in methods and "original" in methods


def test_every_page_is_in_the_navigation():
    import yaml
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    listed = {next(iter(item.values())) for item in nav}
    assert listed == {p.name for p in (ROOT / "docs").glob("*.md")}


RECIPE_CHECK = textwrap.dedent('''
    import sys, torch
    import lumebench
    exec(open(sys.argv[1]).read())
    from lumebench.data.records import Row
    from lumebench.methods.base import UnlearnContext, collate, mean_nll
    from lumebench.methods.data import tokenize_rows
    from lumebench.models.tiny import TinyConfig, build_model, build_tokenizer
    from lumebench.pipeline.unlearn_config import resolve_config
    from lumebench.registry import METHODS
    assert "weighted_gd" in METHODS.names()
    texts = [("Who wrote the letter?", "Mara Voss"), ("Where was it found?", "in Oslo"),
             ("When did she leave?", "in 1991"), ("What was his job?", "a baker")]
    tok = build_tokenizer([q + " " + a for q, a in texts], vocab_size=300)
    rows = [Row.from_fields(f"{100 + i}qa{i % 2}", "Task3", "forget", q, a) for i, (q, a) in enumerate(texts)]
    ex = tokenize_rows(rows, tok)
    torch.manual_seed(0)
    model = build_model(tok, TinyConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                        max_position=128, seed=0))
    method, cfg = resolve_config("weighted_gd", {"preset": "original", "alpha": 0.5})
    ctx = UnlearnContext(model=model, forget=ex, retain=ex, pad_id=tok.pad_token_id, lora=False,
                         tokenizer=tok, batch_size=2)
    method.setup(ctx)
    F, R = collate(ex[:2], tok.pad_token_id), collate(ex[2:], tok.pad_token_id)
    loss, logs = method.loss(ctx, F, R)
    def nll(batch):  # the usual LM loss, written out: mean over the answer tokens
        logits = model(input_ids=batch["input_ids"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        m = labels != -100
        lp = torch.log_softmax(logits, -1).gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        return -(lp * m).sum() / m.sum()
    want = -nll(F) + 0.5 * nll(R)
    assert abs(loss.item() - want.item()) < 1e-5, (loss.item(), want.item())
    assert cfg.settings()["lr"] == 1e-05 and method.hp.alpha == 0.5
    print("recipe ok", float(loss))
''')


def test_the_contributing_recipe_adds_a_working_method(tmp_path):
    page = (ROOT / "docs" / "contributing.md").read_text(encoding="utf-8")
    block = re.search(r"## Add a method.*?```python\n(.*?)```", page, re.S).group(1)
    (tmp_path / "weighted_gd.py").write_text(block)
    (tmp_path / "check.py").write_text(RECIPE_CHECK)
    proc = subprocess.run([sys.executable, str(tmp_path / "check.py"), str(tmp_path / "weighted_gd.py")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0 and "recipe ok" in proc.stdout, proc.stdout + proc.stderr


METRIC_CHECK = textwrap.dedent('''
    import json, sys, tempfile, torch
    from pathlib import Path
    import lumebench
    exec(open(sys.argv[1]).read())
    from lumebench.data.generate import generate_benchmark
    from lumebench.data.loaders import load_benchmark
    from lumebench.eval.commands import summary_line
    from lumebench.eval.evaluate import EvalConfig, evaluate
    from lumebench.metrics_table import curve_summary
    from lumebench.models.tiny import TinyConfig, build_model, build_tokenizer
    torch.set_num_threads(1)
    d = Path(tempfile.mkdtemp())
    bench = load_benchmark(generate_benchmark(d / "data", docs_per_task=1, seed=0))
    tok = build_tokenizer([r.input + " " + r.output for r in bench.rows], vocab_size=300)
    model = build_model(tok, TinyConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                        max_position=2048, seed=0)).eval()
    forget = [r for r in bench.rows if r.split == "forget"][:3]
    rows = forget + [r for r in bench.rows if r.split == "retain"][:1]
    cfg = EvalConfig(max_new_tokens=2, mia=False, mmlu=None, rows=[r.id for r in rows], metrics=["answer_nll"])
    res = evaluate(model, tok, bench, cfg, d / "eval")
    want = []
    for r in forget:  # the model's own loss with the question masked out
        p, y = tok(r.input)["input_ids"], tok(r.output, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            want.append(float(model(torch.tensor([p + y]), labels=torch.tensor([[-100] * len(p) + y])).loss))
    assert abs(res["forget_answer_nll"] - sum(want) / len(want)) < 1e-5, (res["forget_answer_nll"], want)
    mtime = (d / "eval" / "metric-answer_nll.json").stat().st_mtime_ns
    again = evaluate(model, tok, bench, cfg, d / "eval")  # the one reuse rule: read back, not recomputed
    assert (d / "eval" / "metric-answer_nll.json").stat().st_mtime_ns == mtime
    assert again["forget_answer_nll"] == res["forget_answer_nll"]
    assert json.loads((d / "eval" / "results.json").read_text())["meta"]["stages"]["metric:answer_nll"]
    assert curve_summary(res)["answer_nll"] == res["forget_answer_nll"]
    assert "forget answer NLL" in summary_line(res)
    print("metric recipe ok", res["forget_answer_nll"])
''')

SOURCE_CHECK = textwrap.dedent('''
    import csv, json, sys, tempfile
    from pathlib import Path
    import lumebench
    exec(open(sys.argv[1]).read())
    from lumebench.data.loaders import load_benchmark
    from lumebench.errors import LumeError
    official = Path(sys.argv[2])
    d = Path(tempfile.mkdtemp())
    fields = ["id", "task", "split", "input", "output"]
    records = [{**json.loads(line), "split": split} for split in ("forget", "retain")
               for line in (official / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
    with open(d / "official.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(records)
    got, want = load_benchmark(str(d / "official.csv")), load_benchmark(official)
    assert got.rows == want.rows and len(got.rows) == len(records) and got.fingerprint() == want.fingerprint()
    records[1]["task"] = "Task9"
    with open(d / "bad.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(records)
    try:
        load_benchmark(str(d / "bad.csv"))
        raise SystemExit("a bad task was accepted")
    except LumeError as e:
        assert "bad.csv" in str(e) and ":3" in str(e) and "task" in str(e) and "\\n" not in str(e), str(e)
    print("source recipe ok", len(got.rows))
''')


def _run_recipe(tmp_path, heading: str, check: str, *args: str) -> str:
    page = (ROOT / "docs" / "contributing.md").read_text(encoding="utf-8")
    block = re.search(rf"## {heading}.*?```python\n(.*?)```", page, re.S).group(1)
    (tmp_path / "recipe.py").write_text(block)
    (tmp_path / "check.py").write_text(check)
    proc = subprocess.run([sys.executable, str(tmp_path / "check.py"), str(tmp_path / "recipe.py"), *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "LUME_QUIET": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_the_contributing_recipe_adds_a_working_metric(tmp_path):
    assert "metric recipe ok" in _run_recipe(tmp_path, "Add a metric", METRIC_CHECK)


def test_the_contributing_recipe_adds_a_data_source_that_load_benchmark_uses(tmp_path, lume_data):
    assert "source recipe ok" in _run_recipe(tmp_path, "Add a data source", SOURCE_CHECK, str(lume_data / "official"))
