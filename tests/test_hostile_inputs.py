"""The hostile-input suite: bad input to every command must give exit status 2 and one line
``error: ...`` naming the field, at once (before any model is trained or generates), never a
traceback.

Every case runs ``lume`` in-process (``lumebench.cli.main``) on a real small generated benchmark, a
real saved tiny model and results files written as ``lume eval`` / ``lume unlearn`` write them; each
breaks one thing. The time each case took is recorded (the terminal summary prints the totals; the
bound asserted, 30 s, only catches an error that comes after expensive work). A few cases run as a
real subprocess to show that nothing but that one line reaches stderr.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from lumebench.cli import main as lume

REPO = Path(__file__).resolve().parents[1]
MAX_SECONDS = 30.0  # "seconds, not minutes": catches an error raised after expensive work


# ------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, Path]:
    """Good inputs for every command; each case breaks one of them."""
    from lumebench.data.generate import generate_benchmark
    from lumebench.data.loaders import load_benchmark
    from lumebench.eval.evaluate import row_record
    from lumebench.eval.generation import Generation
    from lumebench.io import atomic_write_json, write_jsonl
    from lumebench.models.tiny import TinyConfig, build_model, build_tokenizer
    from lumebench.pipeline.target import benchmark_texts

    root = tmp_path_factory.mktemp("hostile")
    data = generate_benchmark(root / "data", docs_per_task=1, seed=0)
    bench = load_benchmark(data)
    # a real (untrained) tiny model directory, as `lume finetune` saves one
    tok = build_tokenizer(benchmark_texts(bench), 512)
    model = build_model(tok, TinyConfig(vocab_size=512, hidden_size=32, num_layers=1, num_heads=2,
                                        intermediate_size=64, max_position=256))
    model.save_pretrained(root / "model", safe_serialization=True)
    tok.save_pretrained(root / "model")
    # results files as `lume eval` writes them (gold copied as the generation)
    gens = [row_record(r, Generation(id=r.id, text=r.output, token_ids=[1, 2, 3], stop_reason="eos"))
            for r in bench.rows]
    write_jsonl(root / "eval" / "generations.jsonl", gens)
    write_jsonl(root / "eval" / "mia.jsonl", [{"id": d.id, "member": m, "nll": 2.0 + i / 10}
                                              for m, docs in ((True, bench.mia_members), (False, bench.mia_nonmembers))
                                              for i, d in enumerate(docs)])
    atomic_write_json(root / "eval" / "mmlu.json", {"average_acc": 0.25, "n": 4})
    # a method folder as `lume unlearn` writes it
    res = json.loads(json.dumps({"forget-set": {"overall-regurgitation-score": 0.5}}))
    write_jsonl(root / "method" / "curve.jsonl", [{"epoch": 0, "step": 0, "mmlu_partial": False, "results": res},
                                                  {"epoch": 1, "step": 3, "mmlu_partial": False, "results": res}])
    atomic_write_json(root / "method" / "unlearn.json", {"method": "ga", "status": "finished"})
    (root / "a_file").write_text("not a folder\n")
    (root / "folder").mkdir()
    (root / "config.yaml").write_text("name: ok\nmethods:\n  - {name: ga, overrides: {epochs: 1}}\n")
    return {"root": root, "data": data, "model": root / "model", "gens": root / "eval" / "generations.jsonl",
            "mia": root / "eval" / "mia.jsonl", "mmlu": root / "eval" / "mmlu.json", "method": root / "method",
            "file": root / "a_file", "folder": root / "folder", "config": root / "config.yaml"}


def _copy_data(env, tmp: Path) -> Path:
    d = tmp / "data"
    shutil.copytree(env["data"], d)
    return d


def _rewrite_jsonl(path: Path, edit: Callable[[list[dict]], list[dict]]) -> None:
    rows = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    path.write_text("".join(json.dumps(r) + "\n" for r in edit(rows)))


def _set_first(field: str, value):
    def edit(rows):
        rows[0][field] = value
        return rows
    return edit


def _bad_data(edit_file: str, edit) -> Callable:
    """A copy of the good data with ``edit`` applied to one of its files; argv validates it."""
    def make(env, tmp):
        d = _copy_data(env, tmp)
        p = d / edit_file
        if callable(edit):
            _rewrite_jsonl(p, edit)
        else:
            p.write_bytes(edit)
        return ["data", "validate", str(d)]
    return make


def _bad_gens(edit=None, raw: bytes | None = None, extra: list[str] = ()) -> Callable:
    def make(env, tmp):
        p = tmp / "generations.jsonl"
        shutil.copy(env["gens"], p)
        if raw is not None:
            p.write_bytes(raw)
        elif edit is not None:
            _rewrite_jsonl(p, edit)
        return ["score", str(p), *[a.format(**{k: str(v) for k, v in env.items()}, tmp=tmp) for a in extra]]
    return make


def _bad_mia(edit) -> Callable:
    def make(env, tmp):
        p = tmp / "mia.jsonl"
        shutil.copy(env["mia"], p)
        _rewrite_jsonl(p, edit)
        return ["score", str(env["gens"]), "--mia", str(p)]
    return make


def _bad_mmlu(text: str) -> Callable:
    def make(env, tmp):
        p = tmp / "mmlu.json"
        p.write_text(text)
        return ["score", str(env["gens"]), "--mmlu", str(p)]
    return make


def _bad_config(text: str | bytes, suffix: str = ".yaml") -> Callable:
    def make(env, tmp):
        p = tmp / f"run{suffix}"
        if isinstance(text, bytes):
            p.write_bytes(text)
        else:
            p.write_text(text)
        return ["run", str(p), "--runs-dir", str(tmp / "runs")]
    return make


def _args(*argv: str) -> Callable:
    """argv with ``{data}``, ``{model}``, ``{tmp}``, ... filled in."""
    def make(env, tmp):
        names = {k: str(v) for k, v in env.items()}
        return [a.format(**names, tmp=tmp) for a in argv]
    return make


def _eval(*extra: str) -> Callable:
    return _args("eval", "--model", "{model}", "--data", "{data}", "--out", "{tmp}/out",
                 "--max-new-tokens", "4", *extra)


def _finetune(*extra: str) -> Callable:
    return _args("finetune", "--model", "tiny", "--data", "{data}", "--out", "{tmp}/target", *extra)


def _unlearn(*extra: str) -> Callable:
    return _args("unlearn", "--method", "npo", "--target", "{model}", "--data", "{data}", "--out",
                 "{tmp}/u", *extra)


def _with_method_file(name: str, content: str) -> Callable:
    def make(env, tmp):
        d = tmp / "m"
        shutil.copytree(env["method"], d)
        (d / name).write_text(content)
        return ["report", str(d), "--out", str(tmp / "rep")]
    return make


def _model_dir(setup: Callable[[Path], None], cmd: str = "eval") -> Callable:
    def make(env, tmp):
        m = tmp / "badmodel"
        shutil.copytree(env["model"], m)
        setup(m)
        if cmd == "eval":
            return _eval()(env, tmp)[:2] + [str(m)] + _eval()(env, tmp)[3:]
        return _unlearn()(env, tmp)[:4] + [str(m)] + _unlearn()(env, tmp)[5:]
    return make


def _mia_dir(edit_member=None, edit_nonmember=None, member_dir=False) -> Callable:
    def make(env, tmp):
        d = _copy_data(env, tmp)
        if member_dir:
            (d / "mia" / "member.jsonl").unlink()
            (d / "mia" / "member.jsonl").mkdir()
        if edit_member:
            _rewrite_jsonl(d / "mia" / "member.jsonl", edit_member)
        if edit_nonmember:
            _rewrite_jsonl(d / "mia" / "nonmember.jsonl", edit_nonmember)
        return ["data", "validate", str(d)]
    return make


def _run_dir_with(name: str, content: str) -> Callable:
    def make(env, tmp):
        run = tmp / "run"
        shutil.copytree(env["method"], run / "methods" / "ga" / "seed0")
        (run / name).write_text(content)
        return ["report", str(run)]
    return make


def _truncate(name: str) -> Callable[[Path], None]:
    def f(m: Path):
        p = m / name
        p.write_bytes(p.read_bytes()[:100])
    return f


DEEP = "[" * 200_000 + "]" * 200_000  # issue 29: a RecursionError was reported as a lumebench bug
DEEP_OBJ = '{"a": ' * 100_000 + "1" + "}" * 100_000


def _append_line(text: str):
    """An edit of a jsonl file: one more line, ``text``."""
    def edit(path: Path):
        with open(path, "a") as f:
            f.write(text + "\n")
    return edit


def _gens_file(edit) -> Callable:
    """``lume score`` of a copy of the good generations file with ``edit(path)`` applied."""
    def make(env, tmp):
        p = tmp / "generations.jsonl"
        shutil.copy(env["gens"], p)
        edit(p)
        return ["score", str(p)]
    return make


def _first_gen_row(env) -> dict:
    return json.loads(env["gens"].read_text().splitlines()[0])


def _extra_gen_row(**changes) -> Callable:
    """The good generations with one more row: the first one with ``changes`` (the issue's example:
    ``task: Task9`` moved the forget regurgitation from 1.0 to 0.857 with exit 0)."""
    def make(env, tmp):
        row = {**_first_gen_row(env), **changes}
        return _gens_file(_append_line(json.dumps(row)))(env, tmp)
    return make


def _file_with(make_argv: Callable, rel: str, text: str) -> Callable:
    """``make_argv``'s inputs, then the file ``tmp/rel`` (re)written with ``text``."""
    def make(env, tmp):
        argv = make_argv(env, tmp)
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return argv
    return make


def _data_line(name: str, text: str) -> Callable:
    """``lume data validate`` of a copy of the good data with ``text`` appended to ``name``."""
    def make(env, tmp):
        d = _copy_data(env, tmp)
        _append_line(text)(d / name)
        return ["data", "validate", str(d)]
    return make


def _model_file(name: str, text: str, cmd: str = "eval") -> Callable:
    return _model_dir(lambda m: (m / name).write_text(text), cmd=cmd)


def _adapter_dir(text: str) -> Callable:
    """A LoRA adapter folder whose adapter_config.json is ``text``."""
    def make(env, tmp):
        a = tmp / "adapter"
        a.mkdir()
        (a / "adapter_model.safetensors").write_bytes(b"")
        (a / "adapter_config.json").write_text(text)
        return _eval()(env, tmp)[:2] + [str(a)] + _eval()(env, tmp)[3:]
    return make


def _attack(name: str, *extra: str) -> Callable:
    """``lume attack NAME`` on the good model and data (relearn: the model is its own target)."""
    target = ("--target", "{model}") if name == "relearn" and "--no-target" not in extra else ()
    return _args("attack", name, "--model", "{model}", "--data", "{data}", "--out", "{tmp}/attack",
                 "--max-new-tokens", "4", *target, *(e for e in extra if e != "--no-target"))


def _probes(edit) -> Callable:
    """``lume attack paraphrase --paraphrase FILE`` with the generated probes of the good data, edited."""
    def make(env, tmp):
        from lumebench.data.loaders import load_benchmark
        from lumebench.data.paraphrase import paraphrase_records

        recs = edit(paraphrase_records(load_benchmark(env["data"]).rows), env)
        p = tmp / "probes.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in recs))
        return _attack("paraphrase", "--paraphrase", str(p))(env, tmp)
    return make


def _first_probe(**changes):
    def edit(recs, env):
        return [{**recs[0], **changes}] + recs[1:]
    return edit


def _probe_repeats_a_prompt(recs, env):
    row = json.loads((env["data"] / "forget.jsonl").read_text().splitlines()[1])  # a qa row
    return [{**recs[0], "id": row["id"][:-1] + "9", "input": row["input"], "output": row["output"],
             "task": row["task"], "split": "forget"}] + recs[1:]


LAUNCH = (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29500"))  # what torchrun sets besides the ranks


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable  # (env, tmp) -> argv
    field: str      # what the one error line must name
    environ: tuple = ()  # (variable, value) pairs set for the case (a launcher's, the hub's)


NO_CUDA = not __import__("torch").cuda.is_available()

CASES = [
    # --- flags: numbers and options out of range or of the wrong type ---------------------------
    Case("finetune --epochs 0", _finetune("--epochs", "0"), "--epochs"),
    Case("finetune --epochs -3", _finetune("--epochs", "-3"), "--epochs"),
    Case("finetune --batch-size 0", _finetune("--batch-size", "0"), "--batch-size"),
    Case("finetune --grad-accum 0", _finetune("--grad-accum", "0"), "--grad-accum"),
    Case("finetune --lr -1", _finetune("--lr", "-1"), "--lr"),
    Case("finetune --lr nan", _finetune("--lr", "nan"), "--lr"),
    Case("finetune --lr abc", _finetune("--lr", "abc"), "--lr"),
    Case("finetune --threads -1", _finetune("--threads", "-1"), "--threads"),
    Case("finetune --seed -1", _finetune("--seed", "-1"), "--seed"),
    Case("finetune --eval-every 0", _finetune("--eval-every", "0"), "--eval-every"),
    Case("unlearn --set lr=abc", _unlearn("--set", "lr=abc"), "'lr'"),
    Case("unlearn --set beta=0", _unlearn("--set", "beta=0"), "'beta'"),
    Case("unlearn --set batch_size=0", _unlearn("--set", "batch_size=0"), "'batch_size'"),
    Case("unlearn --set seed=abc", _unlearn("--set", "seed=abc"), "'seed'"),
    Case("unlearn --set lora_r=0", _unlearn("--lora", "--set", "lora_r=0"), "'lora_r'"),
    Case("unlearn --set max_length=1", _unlearn("--set", "max_length=1"), "'max_length'"),
    Case("unlearn --set warmup_ratio=2", _unlearn("--set", "warmup_ratio=2"), "'warmup_ratio'"),
    Case("unlearn --set lr=inf", _unlearn("--set", "lr=inf"), "'lr'"),
    Case("unlearn --set loss_on=no", _unlearn("--set", "loss_on=no"), "'loss_on'"),
    Case("unlearn --set distributed=zero3", _unlearn("--set", "distributed=zero3"), "'distributed'"),
    Case("unlearn --set typo", _unlearn("--set", "bta=0.5"), "'bta'"),
    Case("unlearn --set without =", _unlearn("--set", "beta"), "--set"),
    Case("unlearn --params '['", _unlearn("--params", "["), "'params'"),
    Case("unlearn --layers a-b", _unlearn("--layers", "a-b"), "'layers'"),
    Case("unlearn --epochs 0", _unlearn("--epochs", "0"), "--epochs"),
    Case("unlearn --lr=-1e-5", _unlearn("--lr=-1e-5"), "--lr"),
    Case("unlearn --eval-every x", _unlearn("--eval-every", "x"), "--eval-every"),
    Case("unlearn --method unknown", _args("unlearn", "--method", "forgetall", "--target", "{model}",
                                           "--data", "{data}", "--out", "{tmp}/u"), "'--method'"),
    Case("unlearn --mmlu-limit 0", _unlearn("--mmlu-limit", "0"), "--mmlu-limit"),
    Case("eval --max-new-tokens 0", _eval("--max-new-tokens", "0"), "--max-new-tokens"),
    Case("eval --mmlu-limit 0", _eval("--mmlu-limit", "0"), "--mmlu-limit"),
    Case("eval --batch-size 0", _eval("--batch-size", "0"), "--batch-size"),
    Case("eval --batch-size many", _eval("--batch-size", "many"), "--batch-size"),
    Case("eval --limit-rows 0", _eval("--limit-rows", "0"), "--limit-rows"),
    Case("eval --seed -1", _eval("--seed", "-1"), "--seed"),
    Case("eval --engine bogus", _eval("--engine", "bogus"), "--engine"),
    Case("eval --dtype fp8", _eval("--dtype", "fp8"), "--dtype"),
    Case("eval --mmlu bogus", _eval("--mmlu", "bogus"), "--mmlu"),
    Case("data generate --docs-per-task 0", _args("data", "generate", "--out", "{tmp}/g", "--docs-per-task", "0"),
         "--docs-per-task"),
    Case("data generate --docs-per-task 100000",
         _args("data", "generate", "--out", "{tmp}/g", "--docs-per-task", "100000"), "--docs-per-task"),
    Case("data generate --seed -5", _args("data", "generate", "--out", "{tmp}/g", "--seed", "-5"), "--seed"),
    Case("unknown flag", _eval("--temperature", "0.7"), "--temperature"),
    Case("missing required flag", _args("eval", "--model", "{model}", "--data", "{data}"), "--out"),
    # --- devices ---------------------------------------------------------------------------------
    Case("eval --device nonsense", _eval("--device", "nonsense"), "--device"),
    Case("eval --device cuda:99", _eval("--device", "cuda:99"), "--device"),
    *([Case("eval --device cuda without CUDA", _eval("--device", "cuda"), "--device")] if NO_CUDA else []),
    # --- paths -----------------------------------------------------------------------------------
    Case("eval --out is a file", _args("eval", "--model", "{model}", "--data", "{data}", "--out", "{file}"), "--out"),
    Case("data generate --out below a file", _args("data", "generate", "--out", "{file}/sub"), "--out"),
    Case("data generate --out under /proc", _args("data", "generate", "--out", "/proc/lume"), "--out"),
    Case("run --runs-dir is a file", _args("run", "{config}", "--runs-dir", "{file}"), "--runs-dir"),
    Case("score --out is a directory", _args("score", "{gens}", "--out", "{folder}"), "--out"),
    Case("report --out is a file", _args("report", "{method}", "--out", "{file}"), "--out"),
    Case("report folder missing", _args("report", "{tmp}/nothing"), "run_dir"),
    Case("unlearn --out below a file", _unlearn("--out", "{file}/u"), "--out"),
    Case("finetune --out is a file", _finetune("--out", "{file}"), "--out"),
    # --- model directories -----------------------------------------------------------------------
    Case("eval --model unknown name", _args("eval", "--model", "gpt-7", "--data", "{data}", "--out", "{tmp}/o"),
         "--model"),
    Case("eval --model missing directory", _args("eval", "--model", "./no/such/model", "--data", "{data}",
                                                 "--out", "{tmp}/o"), "--model"),
    Case("eval --reference-model missing", _eval("--reference-model", "/no/such/ref"), "--reference-model"),
    Case("finetune --model unknown", _args("finetune", "--model", "tiny2", "--data", "{data}", "--out", "{tmp}/t"),
         "--model"),
    Case("unlearn --target missing", _args("unlearn", "--method", "ga", "--target", "/no/such/target",
                                           "--data", "{data}", "--out", "{tmp}/u"), "--target"),
    Case("model dir without config.json", _model_dir(lambda m: (m / "config.json").unlink()), "'--model'"),
    Case("model dir without weights", _model_dir(lambda m: (m / "model.safetensors").unlink()), "'--model'"),
    Case("model dir with truncated safetensors", _model_dir(_truncate("model.safetensors")), "'--model'"),
    Case("model dir with malformed config.json", _model_dir(_truncate("config.json")), "'--model'"),
    Case("model dir without tokenizer", _model_dir(
        lambda m: [p.unlink() for p in m.glob("tokenizer*")]), "'--model'"),
    Case("unlearn target with truncated weights", _model_dir(_truncate("model.safetensors"), cmd="unlearn"),
         "'target'"),
    Case("model dir with only pytorch_model.bin (a pickle)", _model_dir(
        lambda m: (m / "model.safetensors").rename(m / "pytorch_model.bin")), "'--model'"),
    Case("model dir asking for remote code", _model_dir(lambda m: (m / "config.json").write_text(json.dumps(
        {**json.loads((m / "config.json").read_text()), "auto_map": {"AutoModelForCausalLM": "evil.Model"}}))),
        "'auto_map'"),
    Case("unlearn target with only a pickle", _model_dir(
        lambda m: (m / "model.safetensors").rename(m / "pytorch_model.bin"), cmd="unlearn"), "'target'"),
    Case("export --out is a file", _args("export", "{model}", "--out", "{file}"), "--out"),
    Case("export model missing", _args("export", "/no/such/model", "--out", "{tmp}/x"), "'model'"),
    Case("parity --per-split -1", _args("parity", "--model", "{model}", "--data", "{data}", "--out", "{tmp}/p",
                                        "--per-split", "-1"), "--per-split"),
    Case("parity --threads 0", _args("parity", "--model", "{model}", "--data", "{data}", "--out", "{tmp}/p",
                                     "--threads", "0"), "--threads"),
    Case("parity --out below a file", _args("parity", "--model", "{model}", "--data", "{data}", "--out",
                                            "{file}/p"), "--out"),
    Case("eval --model a non-gguf file", _args("eval", "--model", "{file}", "--data", "{data}", "--out", "{tmp}/o"),
         "'--model'"),
    # --- data files ------------------------------------------------------------------------------
    Case("data: malformed JSON line", _bad_data("forget.jsonl", b'{"id": 1,\n'), "malformed JSON"),
    Case("data: not UTF-8", _bad_data("forget.jsonl", b'\xff\xfe{"id": "x"}\n'), "UTF-8"),
    Case("data: missing field", _bad_data("forget.jsonl", lambda rows: [{k: v for k, v in r.items() if k != "output"}
                                                                          for r in rows]), "'output'"),
    Case("data: number where text is meant", _bad_data("retain.jsonl", _set_first("output", 123)), "'output'"),
    Case("data: unknown task", _bad_data("forget.jsonl", _set_first("task", "Task4")), "'task'"),
    Case("data: id breaks the grammar", _bad_data("forget.jsonl", _set_first("id", "abcsc1")), "'id'"),
    Case("data: id with a trailing newline", _bad_data("forget.jsonl", lambda rows: [
        {**r, "id": r["id"] + "\n"} if i == 0 else r for i, r in enumerate(rows)]), "'id'"),
    Case("data: duplicate id", _bad_data("forget.jsonl", lambda rows: rows + rows[:1]), "'id'"),
    Case("data: empty prompt", _bad_data("forget.jsonl", _set_first("input", "  ")), "'input'"),
    Case("data: empty gold text", _bad_data("retain.jsonl", _set_first("output", "")), "'output'"),
    Case("data: document without sc1", _bad_data("forget.jsonl", lambda rows: rows[1:]), "'id'"),
    Case("data: forget/retain leak", lambda env, tmp: _leak(env, tmp), "'id'"),
    Case("data: empty split", _bad_data("retain.jsonl", b""), "retain"),
    Case("data: MIA member file is a directory", _mia_dir(member_dir=True), "directory"),
    Case("data: MIA document in both sides", lambda env, tmp: _mia_overlap(env, tmp), "'id'"),
    Case("data: MIA empty document", _mia_dir(edit_member=_set_first("document", "")), "'document'"),
    Case("data: MIA id is a boolean", _mia_dir(edit_member=_set_first("id", True)), "'id'"),
    Case("data: single file without split", lambda env, tmp: ["data", "validate", str(_single_file(env, tmp))],
         "'split'"),
    Case("data: corrupt parquet", lambda env, tmp: _corrupt_parquet(tmp), "parquet"),
    Case("data: path does not exist", _args("data", "validate", "{tmp}/nothing"), "not found"),
    Case("eval: data folder without data", _args("eval", "--model", "{model}", "--data", "{folder}", "--out",
                                                 "{tmp}/o"), "no LUME data"),
    # --- generations, MIA and MMLU files (lume score) ---------------------------------------------
    Case("score: duplicated row", _bad_gens(lambda rows: rows + rows[:1]), "'id'"),
    Case("score: missing field", _bad_gens(lambda rows: [{k: v for k, v in r.items() if k != "gold"}
                                                         for r in rows]), "'gold'"),
    Case("score: gold is a number", _bad_gens(_set_first("gold", 123)), "'gold'"),
    Case("score: unknown kind", _bad_gens(_set_first("kind", "mc")), "'kind'"),
    Case("score: unknown split", _bad_gens(_set_first("split", "test")), "'split'"),
    Case("score: generated is null", _bad_gens(_set_first("generated", None)), "'generated'"),
    Case("score: not UTF-8", _bad_gens(raw=b"\xc3\x28\n"), "UTF-8"),
    Case("score: generations is a directory", _args("score", "{folder}"), "directory"),
    Case("score: empty file", _bad_gens(raw=b"\n"), "no generations"),
    Case("score --mia: NaN loss", _bad_mia(_set_first("nll", float("nan"))), "'nll'"),
    Case("score --mia: loss is text", _bad_mia(_set_first("nll", "2.0")), "'nll'"),
    Case("score --mia: member is 'yes'", _bad_mia(_set_first("member", "yes")), "'member'"),
    Case("score --mia: only members", _bad_mia(lambda rows: [r for r in rows if r["member"]]), "'member'"),
    Case("score --mmlu: accuracy 1.5", _bad_mmlu('{"average_acc": 1.5}'), "'average_acc'"),
    Case("score --mmlu: accuracy NaN", _bad_mmlu('{"average_acc": NaN}'), "'average_acc'"),
    Case("score --mmlu: accuracy negative", _bad_mmlu('{"average_acc": -0.1}'), "'average_acc'"),
    Case("score --mmlu: accuracy as text", _bad_mmlu('{"average_acc": "0.5"}'), "'average_acc'"),
    Case("score --mmlu: a list", _bad_mmlu("[0.5]"), "JSON object"),
    # --- run configs -----------------------------------------------------------------------------
    Case("config: duplicate key (YAML)", _bad_config("name: a\nname: b\n"), "duplicate key"),
    Case("config: duplicate key (JSON)", _bad_config('{"name": "a", "name": "b"}', ".json"), "duplicate key"),
    Case("config: no where text is meant", _bad_config("name: no\n"), "'name'"),
    Case("config: unknown key", _bad_config("name: x\nmehtods: []\n"), "'mehtods'"),
    Case("config: max_new_tokens 0", _bad_config("eval: {max_new_tokens: 0}\n"), "'eval.max_new_tokens'"),
    Case("config: subset -1", _bad_config("eval: {subset: -1}\n"), "'eval.subset'"),
    Case("config: mmlu_limit 0", _bad_config("eval: {mmlu_limit: 0}\n"), "'eval.mmlu_limit'"),
    Case("config: mmlu_source bogus", _bad_config("eval: {mmlu_source: bogus}\n"), "'eval.mmlu_source'"),
    Case("config: engine bogus", _bad_config("eval: {engine: turbo}\n"), "'eval.engine'"),
    Case("config: method override typo", _bad_config("methods:\n  - {name: npo, overrides: {bta: 0.5}}\n"),
         "'methods[0].overrides.bta'"),
    Case("config: method override lr=abc", _bad_config("methods:\n  - {name: ga, overrides: {lr: abc}}\n"),
         "'methods[0].overrides.lr'"),
    Case("config: unknown method", _bad_config("methods:\n  - {name: ga}\n  - {name: gx}\n"), "'methods[1].name'"),
    Case("config: finetune epochs -3", _bad_config("target: {finetune: {epochs: -3}}\n"),
         "'target.finetune.epochs'"),
    Case("config: finetune setting typo", _bad_config("target: {finetune: {epoch: 3}}\n"), "'target.finetune.epoch'"),
    Case("config: target model unknown", _bad_config("target: {model: gpt-7}\n"), "'target.model'"),
    Case("config: run name with a newline", _bad_config('name: "x\\n"\n'), "'name'"),
    Case("run --name with a path", _args("run", "{config}", "--runs-dir", "{tmp}/runs", "--name", "../x"), "--name"),
    Case("config: seeds repeated", _bad_config("seeds: [0, 0]\n"), "'seeds'"),
    Case("config: negative seed", _bad_config("seeds: [-1]\n"), "'seeds[0]'"),
    Case("config: threads 0", _bad_config("threads: 0\n"), "'threads'"),
    Case("config: not UTF-8", _bad_config(b"name: \xff\n"), "UTF-8"),
    Case("config: a directory", lambda env, tmp: (tmp / "c.yaml").mkdir() or ["run", str(tmp / "c.yaml")],
         "directory"),
    Case("config: a list", _bad_config("- name: x\n"), "mapping"),
    Case("config: YAML syntax", _bad_config("name: [x\n"), "cannot parse"),
    Case("config: unknown suffix", _bad_config("name: x\n", ".ini"), ".yaml"),
    # --- results files we wrote before (rerun, lume report) --------------------------------------
    Case("report: unlearn.json is a list", _with_method_file("unlearn.json", "[]"), "JSON object"),
    Case("report: curve step is text", _with_method_file(
        "curve.jsonl", '{"epoch": 0, "step": "zero", "results": {}}\n'), "'step'"),
    Case("report: curve without results", _with_method_file("curve.jsonl", '{"epoch": 0, "step": 0}\n'),
         "'results'"),
    Case("report: curve of another schema (no mmlu_partial)", _with_method_file(
        "curve.jsonl", '{"epoch": 0, "step": 0, "results": {}}\n'), "'mmlu_partial'"),
    Case("report: unlearn.json not UTF-8", lambda env, tmp: _method_bytes(env, tmp, "unlearn.json", b"\xff\xfe"),
         "UTF-8"),
    Case("report: run config.json is a list", _run_dir_with("config.json", "[]"), "JSON object"),
    Case("unlearn rerun: unlearn.json is a list", lambda env, tmp: _unlearn_over(env, tmp, "[]"), "JSON object"),
    # --- issue 29: every generations row checked as a data row (lume score) ------------------------
    Case("score: a row of an unknown task (Task9)", _extra_gen_row(id="12345678sc1", task="Task9"), "'task'"),
    Case("score: id breaks the grammar", _bad_gens(_set_first("id", "abcsc1")), "'id'"),
    Case("score: a Task1 id without its quotes", lambda env, tmp: _bad_gens(_set_first(
        "id", _first_gen_row(env)["id"].replace('"', "")))(env, tmp), "'id'"),
    Case("score: id with a trailing newline", lambda env, tmp: _bad_gens(_set_first(
        "id", _first_gen_row(env)["id"] + "\n"))(env, tmp), "'id'"),
    Case("score: kind disagrees with the id", lambda env, tmp: _bad_gens(_set_first(
        "kind", "qa" if _first_gen_row(env)["kind"] == "sc" else "sc"))(env, tmp), "'kind'"),
    Case("score: a document in both splits", lambda env, tmp: _extra_gen_row(
        split="retain" if _first_gen_row(env)["split"] == "forget" else "forget")(env, tmp), "'id'"),
    Case("score: empty gold text", _bad_gens(_set_first("gold", " ")), "'gold'"),
    Case("score: empty prompt", _bad_gens(_set_first("input", "")), "'input'"),
    Case("score: task is a number", _bad_gens(_set_first("task", 1)), "'task'"),
    Case("score: a line is a list", _gens_file(_append_line("[1, 2]")), "JSON object"),
    Case("score: the same row twice in one split", _extra_gen_row(), "'id'"),
    Case("score --mia: missing nll", _bad_mia(lambda rows: [{k: v for k, v in r.items() if k != "nll"}
                                                            for r in rows]), "'nll'"),
    Case("score --mia: attack scores not an object", _bad_mia(_set_first("scores", [1.0])), "'scores'"),
    Case("score --mia: attack score infinite", _bad_mia(_set_first("scores", {"zlib": float("inf")})),
         "'scores.zlib'"),
    Case("score --mia: a line is a string", lambda env, tmp: ["score", str(env["gens"]), "--mia",
                                                              str(_write(tmp / "mia.jsonl", '"member"\n'))],
         "JSON object"),
    Case("score --mia: file missing", _args("score", "{gens}", "--mia", "{tmp}/none.jsonl"), "not found"),
    Case("score --mmlu: missing average_acc", _bad_mmlu('{"n": 4}'), "'average_acc'"),
    Case("score --mmlu: accuracy true", _bad_mmlu('{"average_acc": true}'), "'average_acc'"),
    Case("score --mmlu: malformed JSON", _bad_mmlu('{"average_acc": 0.5'), "malformed JSON"),
    Case("score --mmlu: empty file", _bad_mmlu(""), "malformed JSON"),
    # --- issue 29: nesting deeper than any parser follows, in every JSON / JSONL / YAML / TOML reader --
    Case("deep: data jsonl line", _data_line("forget.jsonl", DEEP), "forget.jsonl:11: nested 200,000 levels"),
    Case("deep: data jsonl object", _data_line("retain.jsonl", DEEP_OBJ), "retain.jsonl:11: nested 100,000"),
    Case("deep: MIA jsonl line", _data_line("mia/member.jsonl", DEEP), "member.jsonl:2: nested"),
    Case("deep: generations line", _gens_file(_append_line(DEEP)), "generations.jsonl:21: nested"),
    Case("deep: MIA results line", lambda env, tmp: ["score", str(env["gens"]), "--mia",
                                                     str(_write(tmp / "mia.jsonl", DEEP + "\n"))],
         "mia.jsonl:1: nested"),
    Case("deep: mmlu.json", _bad_mmlu("\n" + DEEP), "mmlu.json:2: nested"),
    Case("deep: run config YAML (flow)", _bad_config("name: x\nseeds: " + DEEP + "\n"), "run.yaml:2: nested"),
    Case("deep: run config YAML (block)", _bad_config("name: x\nseeds:\n" + "".join(
        "  " * i + "-\n" for i in range(1500))), "run.yaml:1502: nested 1,501"),
    Case("deep: run config JSON", _bad_config('{"name": "x",\n"seeds": ' + DEEP + "}", ".json"), "run.json:2: nested"),
    Case("deep: run config TOML", _bad_config('name = "x"\nseeds = ' + DEEP + "\n", ".toml"), "run.toml:2: nested"),
    Case("deep: sweep config", lambda env, tmp: ["sweep", str(_write(tmp / "sweep.yaml", "grid: " + DEEP + "\n"))],
         "sweep.yaml:1: nested"),
    Case("deep: report curve.jsonl", _with_method_file("curve.jsonl", DEEP + "\n"), "curve.jsonl:1: nested"),
    Case("deep: report unlearn.json", _with_method_file("unlearn.json", DEEP), "unlearn.json:1: nested"),
    Case("deep: report run config.json", _run_dir_with("config.json", DEEP), "config.json:1: nested"),
    Case("deep: unlearn rerun unlearn.json", lambda env, tmp: _unlearn_over(env, tmp, DEEP), "unlearn.json:1: nested"),
    Case("deep: model config.json", _model_file("config.json", DEEP), "config.json:1, field '--model': nested"),
    Case("deep: unlearn target config.json", _model_file("config.json", DEEP, cmd="unlearn"),
         "config.json:1, field 'target': nested"),
    Case("deep: model tokenizer.json", _model_file("tokenizer.json", DEEP), "'--model'"),
    Case("deep: adapter_config.json", _adapter_dir(DEEP), "adapter_config.json:1, field '--model': nested"),
    Case("deep: training checkpoint trainer_state.json", _file_with(
        _unlearn("--max-new-tokens", "2", "--no-mia"), "u/train/checkpoint/trainer_state.json", DEEP),
        "trainer_state.json:1: nested"),
    Case("deep: MMLU source .jsonl", lambda env, tmp: _eval("--no-mia", "--mmlu", str(
        _write(tmp / "mmlu.jsonl", DEEP + "\n")))(env, tmp), "mmlu.jsonl:1: nested"),
    # --- issue 29: the launcher's environment variables set to what no launcher writes -------------
    Case("launcher: RANK=abc", _eval(), "'RANK'", (("RANK", "abc"),)),
    Case("launcher: RANK=-1", _finetune(), "'RANK'", (("RANK", "-1"),)),
    Case("launcher: RANK 2 of WORLD_SIZE 2", _unlearn(), "'RANK'", (("RANK", "2"), ("WORLD_SIZE", "2"), *LAUNCH)),
    Case("launcher: RANK 1 without WORLD_SIZE", _eval(), "'RANK'", (("RANK", "1"),)),
    Case("launcher: WORLD_SIZE=0", _eval(), "'WORLD_SIZE'", (("WORLD_SIZE", "0"),)),
    Case("launcher: WORLD_SIZE=two", _args("data", "generate", "--out", "{tmp}/g"), "'WORLD_SIZE'",
         (("WORLD_SIZE", "two"),)),
    Case("launcher: WORLD_SIZE=1.5", _args("run", "{config}", "--runs-dir", "{tmp}/runs"), "'WORLD_SIZE'",
         (("WORLD_SIZE", "1.5"),)),
    Case("launcher: LOCAL_RANK=x", _eval(), "'LOCAL_RANK'", (("LOCAL_RANK", "x"),)),
    Case("launcher: LOCAL_RANK 4 of LOCAL_WORLD_SIZE 2", _eval(), "'LOCAL_RANK'",
         (("LOCAL_RANK", "4"), ("LOCAL_WORLD_SIZE", "2"), ("RANK", "0"), ("WORLD_SIZE", "2"), *LAUNCH)),
    Case("launcher: LOCAL_WORLD_SIZE above WORLD_SIZE", _eval(), "'LOCAL_WORLD_SIZE'",
         (("LOCAL_WORLD_SIZE", "8"), ("WORLD_SIZE", "2"), ("RANK", "0"), *LAUNCH)),
    Case("launcher: MASTER_PORT=99999", _eval(), "'MASTER_PORT'", (("MASTER_PORT", "99999"),)),
    Case("launcher: MASTER_PORT=http", _finetune(), "'MASTER_PORT'", (("MASTER_PORT", "http"),)),
    Case("launcher: MASTER_ADDR with a space", _eval(), "'MASTER_ADDR'", (("MASTER_ADDR", "local host"),)),
    Case("launcher: WORLD_SIZE 2 without MASTER_ADDR", _eval(), "'MASTER_ADDR'",
         (("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_PORT", "29500"))),
    Case("launcher: WORLD_SIZE 2 without MASTER_PORT", _unlearn(), "'MASTER_PORT'",
         (("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_ADDR", "127.0.0.1"))),
    # --- issue 29: the hub, unreachable here, asked for at the border (not after generation) --------
    Case("eval --mmlu cais/mmlu offline, not cached", _eval("--mmlu", "cais/mmlu"), "--mmlu"),
    Case("unlearn --mmlu cais/mmlu offline, not cached", _unlearn("--mmlu", "cais/mmlu"), "--mmlu"),
    Case("config: mmlu_source cais/mmlu offline, not cached", _bad_config(
        "eval: {mmlu: true, mmlu_source: cais/mmlu}\n"), "'eval.mmlu_source'"),
    Case("eval --model hub id offline, not cached", _args("eval", "--model", "someorg/somemodel", "--data", "{data}",
                                                          "--out", "{tmp}/o"), "--model"),
    Case("config: target model hub id offline, not cached", _bad_config("target: {model: someorg/somemodel}\n"),
         "'target.model'"),
    # --- issue 25: lume attack and a run config's attacks section ----------------------------------
    Case("attack relearn --steps 0", _attack("relearn", "--steps", "0"), "--steps"),
    Case("attack relearn --steps a,b", _attack("relearn", "--steps", "a,b"), "--steps"),
    Case("attack relearn --modes qlora", _attack("relearn", "--modes", "full,qlora"), "--modes"),
    Case("attack relearn --train-fraction 1.5", _attack("relearn", "--train-fraction", "1.5"), "--train-fraction"),
    Case("attack relearn --lr -1", _attack("relearn", "--lr", "-1"), "--lr"),
    Case("attack relearn without --target", _attack("relearn", "--no-target"), "--target"),
    Case("attack relearn --target missing", _attack("relearn", "--no-target", "--target", "{tmp}/nowhere"), "--target"),
    Case("attack relearn --retrain missing", _attack("relearn", "--retrain", "{tmp}/nowhere"), "--retrain"),
    Case("attack quantize --schemes fp3", _attack("quantize", "--schemes", "int8,fp3"), "--schemes"),
    Case("attack quantize --backend gguf", _attack("quantize", "--backend", "gguf"), "--backend"),
    Case("attack quantize --model missing", _args("attack", "quantize", "--model", "{tmp}/none", "--data", "{data}",
                                                  "--out", "{tmp}/a"), "--model"),
    Case("attack logit-lens --out inside the model", _args("attack", "logit-lens", "--model", "{model}", "--data",
                                                           "{data}", "--out", "{model}/lens"), "--out"),
    Case("attack logit-lens --out a file", _args("attack", "logit-lens", "--model", "{model}", "--data", "{data}",
                                                 "--out", "{file}"), "--out"),
    Case("attack logit-lens --split both", _attack("logit-lens", "--split", "both"), "--split"),
    Case("attack paraphrase: probe of an unknown document", _probes(_first_probe(id="99999999qa0", task="Task3")),
         "'id'"),
    Case("attack paraphrase: probe repeats a benchmark prompt", _probes(_probe_repeats_a_prompt), "'input'"),
    Case("attack paraphrase: probe type unknown", _probes(_first_probe(probe="cloze")), "'probe'"),
    Case("attack paraphrase: probe in the other split", _probes(_first_probe(split="retain")), "'split'"),
    Case("attack paraphrase: probe without output", _probes(lambda r, e: [{k: v for k, v in r[0].items()
                                                                           if k != "output"}] + r[1:]), "'output'"),
    Case("attack paraphrase: probe id twice", _probes(lambda r, e: [r[0], r[0]] + r[1:]), "'id'"),
    Case("config: attacks.relearn.steps [0]", _bad_config("attacks: {relearn: {steps: [0]}}\n"),
         "'attacks.relearn.steps'"),
    Case("config: attacks.relearn typo", _bad_config("attacks: {relearn: {stepz: [1]}}\n"), "'attacks.relearn.stepz'"),
    Case("config: attacks.relearn.lr text", _bad_config("attacks: {relearn: {lr: fast}}\n"), "'attacks.relearn.lr'"),
    Case("config: attacks.quantize.schemes fp3", _bad_config("attacks: {quantize: {schemes: [fp3]}}\n"),
         "'attacks.quantize.schemes'"),
    Case("config: attacks.logit_lens.split both", _bad_config("attacks: {logit_lens: {split: both}}\n"),
         "'attacks.logit_lens.split'"),
    Case("config: attacks.paraphrase.file missing", _bad_config("attacks: {paraphrase: {file: /nowhere.jsonl}}\n"),
         "'attacks.paraphrase.file'"),
    Case("config: attacks with no attack", _bad_config("attacks: {max_new_tokens: 8}\n"), "'attacks'"),
    Case("config: attacks.max_new_tokens 0", _bad_config("attacks: {logit_lens: {}, max_new_tokens: 0}\n"),
         "'attacks.max_new_tokens'"),
]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _leak(env, tmp):
    d = _copy_data(env, tmp)
    forget = [json.loads(l) for l in (d / "forget.jsonl").read_text().splitlines()]
    with open(d / "retain.jsonl", "a") as f:
        f.write(json.dumps(forget[0]) + "\n")
    return ["data", "validate", str(d)]


def _mia_overlap(env, tmp):
    d = _copy_data(env, tmp)
    member = (d / "mia" / "member.jsonl").read_text().splitlines()[0]
    with open(d / "mia" / "nonmember.jsonl", "a") as f:
        f.write(member + "\n")
    return ["data", "validate", str(d)]


def _single_file(env, tmp):
    p = tmp / "all.jsonl"
    p.write_text((env["data"] / "forget.jsonl").read_text())
    return p


def _corrupt_parquet(tmp):
    d = tmp / "pq"
    d.mkdir()
    for name in ("forget_train-00000.parquet", "retain_train-00000.parquet",
                 "forget_validation-00000.parquet", "retain_validation-00000.parquet"):
        (d / name).write_bytes(b"PAR1 not really")
    return ["data", "validate", str(d)]


def _method_bytes(env, tmp, name, data: bytes):
    d = tmp / "m"
    shutil.copytree(env["method"], d)
    (d / name).write_bytes(data)
    return ["report", str(d), "--out", str(tmp / "rep")]


def _unlearn_over(env, tmp, content):
    (tmp / "u").mkdir()
    (tmp / "u" / "unlearn.json").write_text(content)
    return _unlearn()(env, tmp)


# ------------------------------------------------------------------------------------- the suite

def _error_lines(stderr: str) -> list[str]:
    """stderr without log lines ("[HH:MM:SS] ...")."""
    return [l for l in stderr.splitlines() if l.strip() and not l.startswith("[")]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_and_exit_2(case, env, tmp_path, capsys, monkeypatch, reliability_log):
    monkeypatch.setenv("LUME_CACHE", str(tmp_path / "cache"))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in case.environ:
        monkeypatch.setenv(name, value)
    argv = case.make(env, tmp_path)
    t0 = time.perf_counter()
    rc = lume(argv)
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    lines = _error_lines(err)
    handled = rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and case.field in lines[0]
    reliability_log["cases"].append({"name": case.name, "seconds": seconds, "handled": handled})
    assert "Traceback" not in err
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert case.field in lines[0], lines[0]
    assert seconds < MAX_SECONDS, f"{case.name}: {seconds:.1f} s"


def test_the_suite_covers_every_command_with_at_least_60_cases():
    assert len(CASES) >= 60
    commands = {c.name.split()[0].rstrip(":") for c in CASES}
    for cmd in ("finetune", "unlearn", "eval", "data", "score", "config", "report", "run", "parity", "export",
                "attack"):
        assert cmd in commands, cmd


# ------------------------------------------------------------------------------------- no traceback

def _lume_subprocess(*argv: str, env_extra: dict | None = None, tmp: Path | None = None):
    env = {**os.environ, "LUME_QUIET": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "lumebench", *argv], capture_output=True, text=True,
                          env=env, timeout=300, cwd=tmp or REPO)


def test_subprocess_bad_flags_print_one_line_and_no_traceback(env, tmp_path):
    for argv, field in ((["finetune", "--model", "tiny", "--data", str(env["data"]), "--out", str(tmp_path / "t"),
                          "--epochs", "0"], "--epochs"),
                        (["eval", "--model", str(env["model"]), "--data", str(env["data"]), "--out",
                          str(tmp_path / "e"), "--device", "nonsense"], "--device"),
                        (["data", "validate", str(env["folder"])], "no LUME data")):
        res = _lume_subprocess(*argv)
        assert res.returncode == 2, res.stderr
        assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ") and field in res.stderr, res.stderr
        assert not res.stdout


def test_an_unexpected_error_is_one_line_with_the_log_file_and_debug_shows_the_traceback(env, tmp_path):
    cache = tmp_path / "cache"
    argv = ("data", "validate", str(env["data"]))
    res = _lume_subprocess(*argv, env_extra={"LUME_FAULT": "raise:cli:handler", "LUME_CACHE": str(cache)})
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    assert "RuntimeError" in res.stderr and "--debug" in res.stderr
    logs = list((cache / "logs").glob("crash-*.log"))
    assert len(logs) == 1 and str(logs[0]) in res.stderr
    text = logs[0].read_text()
    assert "Traceback (most recent call last)" in text and "lume data validate" in text
    res = _lume_subprocess(*argv, "--debug", env_extra={"LUME_FAULT": "raise:cli:handler", "LUME_CACHE": str(cache)})
    assert res.returncode == 1 and "Traceback (most recent call last)" in res.stderr


def test_out_of_memory_is_one_line_that_says_what_to_change_and_writes_no_crash_log(env, tmp_path):
    """A full GPU (8 ``lume run`` workers on one H100 did it) is not a lumebench bug: one line saying
    that the finished results are kept and what to lower, no crash log."""
    cache = tmp_path / "cache"
    res = _lume_subprocess("data", "validate", str(env["data"]),
                           env_extra={"LUME_FAULT": "oom:cli:handler", "LUME_CACHE": str(cache)})
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("error: out of memory (CUDA out of memory. Tried to allocate 426.00 MiB)")
    assert "--workers" in res.stderr and "bug" not in res.stderr
    assert not (cache / "logs").exists()


# ------------------------------------------------------------------------------------- what is not an error

def test_yaml_reads_1e_4_as_the_number_it_looks_like(tmp_path):
    from lumebench.pipeline.config import load_config

    p = tmp_path / "c.yaml"
    p.write_text("methods:\n  - {name: ga, overrides: {lr: 1e-4}}\n")
    assert load_config(p).methods[0].overrides["lr"] == 1e-4


def test_result_files_get_normal_permissions(tmp_path):
    from lumebench.io import atomic_write_json

    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "r.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644


def test_model_and_checkpoint_files_get_normal_permissions(env, tmp_path):
    """Issue 29: every ``model.safetensors`` was 0600 (safetensors' writer), while the README says
    result files are 0666 minus the umask. The model writer and the training checkpoint's tensor
    files follow the umask like every other result file."""
    import torch

    from lumebench.models import load_model
    from lumebench.models.checkpoint import save_checkpoint
    from lumebench.train.checkpoint import CheckpointFiles, _save_tensors

    model, tok = load_model(str(env["model"]), device="cpu")
    for umask, mode in ((0o022, 0o644), (0o077, 0o600)):
        old = os.umask(umask)
        try:
            out = tmp_path / f"m{umask:o}"
            save_checkpoint(model, tok, out)
            (out / "ckpt").mkdir()
            w = torch.nn.Parameter(torch.ones(2))
            _save_tensors(out / "ckpt", CheckpointFiles(), ["w"], [w], {"m": torch.zeros(2)}, {"r": torch.ones(1)})
        finally:
            os.umask(old)
        files = [p for p in out.rglob("*") if p.is_file()]
        assert {p.name for p in files} >= {"model.safetensors", "config.json", "trainable.safetensors"}
        assert {p.name: p.stat().st_mode & 0o777 for p in files} == {p.name: mode for p in files}


def test_nan_is_never_written_into_json(tmp_path):
    from lumebench.io import append_jsonl, atomic_write_json, write_jsonl

    atomic_write_json(tmp_path / "a.json", {"score": float("nan"), "list": [float("inf"), 1.0]})
    write_jsonl(tmp_path / "b.jsonl", [{"x": float("-inf")}])
    append_jsonl(tmp_path / "c.jsonl", {"x": float("nan")})
    strict = lambda t: json.loads(t, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))  # noqa: E731
    assert strict((tmp_path / "a.json").read_text()) == {"score": None, "list": [None, 1.0]}
    assert strict((tmp_path / "b.jsonl").read_text()) == {"x": None}
    assert strict((tmp_path / "c.jsonl").read_text()) == {"x": None}


def test_two_processes_writing_one_folder_the_second_is_refused(env, tmp_path, capsys):
    from lumebench.io import output_lock

    out = tmp_path / "shared"
    with output_lock(out):  # another process holds the folder (a lock is per open file, as across processes)
        t0 = time.perf_counter()
        rc = lume(["data", "generate", "--out", str(out), "--docs-per-task", "1"])
        err = capsys.readouterr().err
        assert rc == 2 and "another lume process" in err and str(os.getpid()) in err, err
        assert time.perf_counter() - t0 < MAX_SECONDS
    # released: the same command now works
    assert lume(["data", "generate", "--out", str(out), "--docs-per-task", "1"]) == 0
    assert (out / "forget.jsonl").is_file()


def test_score_output_is_strict_json_and_the_same_rows_score_once(env, tmp_path, capsys):
    out = tmp_path / "res.json"
    assert lume(["score", str(env["gens"]), "--mia", str(env["mia"]), "--mmlu", str(env["mmlu"]),
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(c))
    assert res["forget-set"]["overall-regurgitation-score"] == 1.0  # gold == generated
    assert res["mmlu_average"] == 0.25
