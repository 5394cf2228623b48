"""Every kind of bad input is rejected with one line naming file, line and field — by the loaders
and by ``lume data validate`` (exit 2, no traceback). The files are small sets derived from real rows."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lumebench.cli import main
from lumebench.data.loaders import load_benchmark, load_mia
from lumebench.errors import DataError

DOCS_PER_TASK = 2


def _small_split(path: Path) -> list[dict]:
    """All rows of the first DOCS_PER_TASK documents of each task, grouped by task (T1, T2, T3).

    Layout of the result (1-based lines): Task1 1-4 (sc1, qa0 per doc), Task2 5-16 (sc1, qa0-qa4),
    Task3 17-20.
    """
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    out = []
    for task in ("Task1", "Task2", "Task3"):
        docs: list[str] = []
        for r in rows:
            doc = r["id"][:-3]
            if r["task"] == task and doc not in docs and len(docs) < DOCS_PER_TASK:
                docs.append(doc)
        by_doc = sorted((r for r in rows if r["task"] == task and r["id"][:-3] in docs),
                        key=lambda r: (docs.index(r["id"][:-3]), r["id"][-3:] != "sc1", r["id"][-3:]))
        out += by_doc
    return out


@pytest.fixture(scope="module")
def small(lume_data) -> tuple[list[dict], list[dict]]:
    forget = _small_split(lume_data / "official" / "forget.jsonl")
    retain = _small_split(lume_data / "official" / "retain.jsonl")
    assert len(forget) == len(retain) == 20 and forget[0]["id"].endswith("sc1")
    return forget, retain


def _write(d: Path, forget: list, retain: list) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, rows in (("forget.jsonl", forget), ("retain.jsonl", retain)):
        (d / name).write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
                              encoding="utf-8")
    return d


def test_small_set_is_valid(small, tmp_path):
    bench = load_benchmark(_write(tmp_path / "ok", *small))
    assert (len(bench.forget), len(bench.retain)) == (20, 20)
    assert len(bench.documents()) == 12


def _unquote_task1(f, r):
    f[0]["id"] = f[0]["id"].replace('"', "")


def _malformed(f, r):
    f[2] = '{"id": "x", "input": '


def _missing(f, r):
    del f[1]["output"]


def _not_string(f, r):
    f[4]["input"] = 5


def _null(f, r):
    f[4]["task"] = None


def _unknown_task(f, r):
    f[0]["task"] = "Task4"


def _no_digit(f, r):
    f[5]["id"] = f[5]["id"][:-1]


def _task3_not_numeric(f, r):
    f[16]["id"] = "abc" + f[16]["id"]


def _task2_id_under_task3(f, r):
    f[4]["task"] = "Task3"


def _duplicate(f, r):
    f.append(copy.deepcopy(f[2]))


def _no_sc1(f, r):
    del f[0]


def _leak(f, r):
    r += copy.deepcopy(f[16:18])


def _empty(f, r):
    r.clear()


BAD_CASES = {
    # name: (mutation, regex the one-line message must match)
    "malformed JSON": (_malformed, r"forget\.jsonl:3: malformed JSON"),
    "missing field": (_missing, r"forget\.jsonl:2, field 'output': missing field"),
    "non-string field": (_not_string, r"forget\.jsonl:5, field 'input': must be a string, got int"),
    "null field": (_null, r"forget\.jsonl:5, field 'task': must be a string, got null"),
    "unknown task": (_unknown_task, r"forget\.jsonl:1, field 'task': unknown task 'Task4'"),
    "Task1 id without quotes": (_unquote_task1, r"forget\.jsonl:1, field 'id': .*Task1 document id must be a quoted UUID"),
    "id without digit": (_no_digit, r"forget\.jsonl:6, field 'id': .*does not match"),
    "Task3 id not numeric": (_task3_not_numeric, r"forget\.jsonl:17, field 'id'"),
    "Task2 id under Task3": (_task2_id_under_task3, r"forget\.jsonl:5, field 'id': .*numeric page id"),
    "duplicate id": (_duplicate, r"forget\.jsonl:21, field 'id': duplicate id .*first at .*forget\.jsonl:3\)"),
    "document without sc1": (_no_sc1, r"forget\.jsonl:1, field 'id': document .* has no sc1 row"),
    "forget/retain leak": (_leak, r"retain\.jsonl:21, field 'id': document \d+ is in both forget "
                                  r"\(.*forget\.jsonl:17\) and retain"),
    "empty split": (_empty, r"retain\.jsonl: the retain split is empty"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_case_rejected_by_loader_and_cli(case, small, tmp_path, capsys):
    mutate, pattern = BAD_CASES[case]
    forget, retain = copy.deepcopy(small)
    mutate(forget, retain)
    d = _write(tmp_path / "bad", forget, retain)
    with pytest.raises(DataError, match=pattern):
        load_benchmark(d)
    assert main(["data", "validate", str(d)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert captured.out == ""


def test_cli_ok_line(small, tmp_path, capsys):
    d = _write(tmp_path / "ok", *small)
    assert main(["data", "validate", str(d)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("OK ") and "forget 20 rows / 6 documents" in out[0]


def test_validate_false_skips_whole_split_checks_but_not_row_checks(small, tmp_path):
    forget, retain = copy.deepcopy(small)
    _leak(forget, retain)
    bench = load_benchmark(_write(tmp_path / "leak", forget, retain), validate=False)
    assert len(bench.retain) == 22
    forget, retain = copy.deepcopy(small)
    _unknown_task(forget, retain)
    with pytest.raises(DataError, match="unknown task"):
        load_benchmark(_write(tmp_path / "task", forget, retain), validate=False)


# ------------------------------------------------------------------------------------ parquet
def _write_parquet(d: Path, parts: dict[str, list[dict]]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, rows in parts.items():
        pq.write_table(pa.Table.from_pylist(rows), d / f"{name}-00000-of-00001.parquet")
    return d


def _parquet_parts(small) -> dict[str, list[dict]]:
    forget, retain = copy.deepcopy(small)
    for r in forget:
        r["split"] = "forget"
    for r in retain:
        r["split"] = "retain"
    # train = Task1 + Task2, validation = Task3 (whole documents stay together)
    return {"forget_train": forget[:16], "forget_validation": forget[16:],
            "retain_train": retain[:16], "retain_validation": retain[16:]}


def test_parquet_small_set_and_which(small, tmp_path):
    d = _write_parquet(tmp_path / "pq", _parquet_parts(small))
    assert len(load_benchmark(d).forget) == 20
    assert len(load_benchmark(d, which=("validation",)).forget) == 4
    with pytest.raises(DataError, match="no forget_train-\\*.parquet"):
        load_benchmark(_write_parquet(tmp_path / "pq2", {k: v for k, v in _parquet_parts(small).items()
                                                        if k != "forget_train"}))


def test_parquet_null_field_names_file_and_row(small, tmp_path):
    parts = _parquet_parts(small)
    parts["forget_train"][2]["output"] = None
    d = _write_parquet(tmp_path / "pq", parts)
    with pytest.raises(DataError, match=r"forget_train-00000-of-00001\.parquet:3, field 'output': "
                                        r"must be a string, got null"):
        load_benchmark(d)


def test_parquet_duplicate_across_train_and_validation(small, tmp_path, capsys):
    parts = _parquet_parts(small)
    parts["forget_validation"].insert(0, copy.deepcopy(parts["forget_train"][0]))
    d = _write_parquet(tmp_path / "pq", parts)
    with pytest.raises(DataError, match=r"forget_validation-00000-of-00001\.parquet:1, field 'id': "
                                        r"duplicate id .*first at .*forget_train-00000-of-00001\.parquet:1"):
        load_benchmark(d)
    assert main(["data", "validate", str(d)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_parquet_split_field_must_match_file(small, tmp_path):
    parts = _parquet_parts(small)
    parts["retain_train"][3]["split"] = "forget"
    with pytest.raises(DataError, match=r"retain_train-00000-of-00001\.parquet:4, field 'split': "
                                        r"split 'forget' in a retain file"):
        load_benchmark(_write_parquet(tmp_path / "pq", parts))


def test_corrupt_parquet(small, tmp_path):
    d = _write_parquet(tmp_path / "pq", _parquet_parts(small))
    (d / "retain_validation-00000-of-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="retain_validation-00000-of-00001.parquet: not a readable parquet"):
        load_benchmark(d)


# ------------------------------------------------------------------------------------ MIA
@pytest.mark.parametrize("member, pattern", [
    ('{"id": "1"}', r"member\.jsonl:1, field 'document': missing field"),
    ('{"document": "x"}', r"member\.jsonl:1, field 'id': missing field"),
    ('{"id": true, "document": "x"}', r"member\.jsonl:1, field 'id': must be a string or an integer"),
    ('{"id": "1", "document": 3}', r"member\.jsonl:1, field 'document': must be a string, got int"),
    ('{"id": "1", "document": "x"}\n{"id": 1, "document": "y"}', r"member\.jsonl:2, field 'id': duplicate id '1'"),
    ('', r"member\.jsonl: no MIA documents"),
])
def test_bad_mia_files(member, pattern, small, tmp_path, capsys):
    d = _write(tmp_path / "data", *small)
    (d / "mia").mkdir()
    (d / "mia" / "member.jsonl").write_text(member + "\n")
    (d / "mia" / "nonmember.jsonl").write_text('{"id": 5, "document": "z"}\n')
    with pytest.raises(DataError, match=pattern):
        load_mia(d / "mia")
    assert main(["data", "validate", str(d)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_mia_missing_nonmember_file(small, tmp_path):
    d = _write(tmp_path / "data", *small)
    (d / "mia").mkdir()
    (d / "mia" / "member.jsonl").write_text('{"id": 1, "document": "x"}\n')
    with pytest.raises(DataError, match=r"nonmember\.jsonl: file not found"):
        load_benchmark(d)
