"""The official LUME metrics (SPEC.md §2), exactly as the SemEval-2025 Task 4 script computes them.

Per row:
- ``rougeL_recall`` / ``rouge1_recall`` (sc rows): ``rouge_score`` with the Porter stemmer,
  ``score(target=gold, prediction=generated)``. :func:`rouge_recalls_reference` calls the library;
  :func:`rouge_recalls` is an exact re-implementation (same tokenizer regexes, same NLTK Porter
  stemmer, stems cached, one LCS row in memory) that is several times faster; tests check the two
  agree on every official sc row.
- ``exact_match`` (qa rows): ``int(gold.strip().lower() == generated.strip().lower())``.

Aggregation (:func:`aggregate`): per split and task means; the 12 terms in the official order
[forget T1 reg, T1 kno, T2 reg, T2 kno, T3 reg, T3 kno, retain T1 reg, ..., T3 kno] with the six
forget terms replaced by ``1 - v``; ``statistics.harmonic_mean`` (0 when any term is 0);
``mia_final_score = 1 - 2|AUC - 0.5|``; final ``aggregate-score`` = mean(task aggregate, MMLU,
MIA score).

The result dict has the official keys (``evaluate_generations.py``): ``forget-set`` /
``retain-set`` each hold ``overall-regurgitation-score``, ``overall-knowledge-score`` and one entry
per task, ``"Task1": {"regurgitation-score": .., "knowledge-score": ..}`` (the official
``df.groupby('task').mean().to_dict(orient='index')``). Where the official script writes ``-1``
for a final score it cannot compute, we write ``None``: a part that was not run (MIA, MMLU) is
``None`` and so is ``aggregate-score`` unless all three parts exist.
"""

from __future__ import annotations

import re
import statistics
from functools import lru_cache
from typing import Iterable, Mapping

from lumebench.data.records import ROW_KINDS, SPLITS, TASKS

MMLU_THRESHOLD = 0.371  # 75 % of the 7B target's MMLU (0.495): below it a run is not eligible

# --- decoding clean-up ---------------------------------------------------------------------------

_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
            (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def clean_up_tokenization(text: str) -> str:
    """transformers-4 ``clean_up_tokenization`` (what ``clean_up_tokenization_spaces=True`` did in
    the official environment, transformers 4.45.2). transformers 5 ignores the flag for BPE
    tokenizers, so decoders call this explicitly. It only ever deletes spaces."""
    for a, b in _CLEANUP:
        text = text.replace(a, b)
    return text


# --- ROUGE ---------------------------------------------------------------------------------------

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_SPACES = re.compile(r"\s+")
_VALID = re.compile(r"^[a-z0-9]+$")


@lru_cache(maxsize=1)
def _stemmer():
    from nltk.stem import porter  # the stemmer rouge_score uses (its dependency)

    return porter.PorterStemmer()


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    # rouge_score stems only words longer than 3 characters
    return _stemmer().stem(word) if len(word) > 3 else word


def rouge_tokens(text: str) -> list[str]:
    """``rouge_score.tokenize.tokenize(text, PorterStemmer())`` with cached stems."""
    words = _SPACES.split(_NON_ALNUM.sub(" ", text.lower()))
    return [t for t in (_stem(w) for w in words) if _VALID.match(t)]


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (one DP row, O(len(a)·len(b)))."""
    if not a or not b:
        return 0
    if len(b) > len(a):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else (cur[j] if cur[j] > prev[j + 1] else prev[j + 1]))
        prev = cur
    return prev[-1]


def _recalls_from_tokens(gold_toks: list[str], gen_toks: list[str]) -> tuple[float, float]:
    if not gold_toks or not gen_toks:
        return 0.0, 0.0
    lcs = lcs_length(gold_toks, gen_toks)
    counts: dict[str, int] = {}
    for t in gen_toks:
        counts[t] = counts.get(t, 0) + 1
    gold_counts: dict[str, int] = {}
    for t in gold_toks:
        gold_counts[t] = gold_counts.get(t, 0) + 1
    overlap = sum(min(c, counts.get(t, 0)) for t, c in gold_counts.items())
    return lcs / len(gold_toks), overlap / len(gold_toks)


def rouge_recalls(gold: str, generated: str) -> tuple[float, float]:
    """(ROUGE-L recall, ROUGE-1 recall) of ``generated`` against ``gold``; exact, fast."""
    return _recalls_from_tokens(rouge_tokens(gold), rouge_tokens(generated))


@lru_cache(maxsize=1)
def _reference_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)


def rouge_recalls_reference(gold: str, generated: str) -> tuple[float, float]:
    """The official call: ``RougeScorer(['rouge1','rougeL'], use_stemmer=True).score(gold, gen)``."""
    s = _reference_scorer().score(str(gold), str(generated))
    return s["rougeL"].recall, s["rouge1"].recall


def rougeL_recall(gold: str, generated: str) -> float:
    return rouge_recalls(gold, generated)[0]


def rouge1_recall(gold: str, generated: str) -> float:
    return rouge_recalls(gold, generated)[1]


def exact_match(gold: str, generated: str) -> int:
    """The official knowledge score: strip + lowercase only, nothing else normalised."""
    return int(gold.strip().lower() == generated.strip().lower())


# --- the official CSV round trip -------------------------------------------------------------------
# The official script writes the generations to CSV and reads them back with pandas before scoring.
# pandas.read_csv turns a cell equal to one of these strings into NaN (the default ``na_values`` of
# pandas 2.2.3, ``pandas._libs.parsers.STR_NA_VALUES``; matched whole, no stripping), and the script
# then scores ``str(NaN) == "nan"``. tests/test_official_parity.py checks this list against the
# official environment's pandas.
PANDAS_NA_STRINGS = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                               "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})


def csv_roundtrip(text: str) -> str:
    """The string the official script scores for ``text`` after its CSV round trip: a cell pandas
    reads as missing becomes ``"nan"``; every other cell comes back unchanged. (Not emulated:
    pandas' whole-column type inference, which applies only when every cell of a split's column
    parses as a number — never on LUME data with both kinds of row — and its misreading of a bare
    carriage return inside a quoted cell; :func:`csv_hazards` reports both.)"""
    return "nan" if text in PANDAS_NA_STRINGS else text


_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


def csv_hazards(golds: list[str], generated: list[str]) -> list[str]:
    """What in one split's texts the official pandas round trip would read differently from the
    per-cell rule of :func:`csv_roundtrip` (each a sentence for the log; usually none)."""
    out = []
    for name, col in (("gold", golds), ("generated", generated)):
        cells = [t for t in col if t not in PANDAS_NA_STRINGS]
        if cells and all(_NUMBER.match(t) for t in cells):
            out.append(f"every {name} text of the split is a number: the official pandas round trip "
                       f"reads the column as numbers (e.g. leading zeros dropped), lumebench keeps text")
        if any("\r" in t.replace("\r\n", "") for t in col):
            out.append(f"a {name} text holds a bare carriage return, which the official pandas CSV "
                       f"reader misparses; lumebench scores the text as it is")
    return out


def em_early_exit_safe(gold: str) -> bool:
    """Whether the qa early exit may be used for ``gold``: not when a generation that pandas reads
    as missing (scored as "nan") could still match it."""
    return gold not in PANDAS_NA_STRINGS and gold.strip().lower() != "nan"


def score_row(kind: str, gold: str, generated: str, *, official_csv: bool = True) -> dict:
    """The per-row metric fields stored in ``generations.jsonl`` (None where the official is NaN).
    ``official_csv``: score the texts as the official script does after its CSV round trip."""
    if official_csv:
        gold, generated = csv_roundtrip(gold), csv_roundtrip(generated)
    if kind == "sc":
        rl, r1 = rouge_recalls(gold, generated)
        return {"rougeL_recall": rl, "rouge1_recall": r1, "exact_match": None}
    if kind == "qa":
        return {"rougeL_recall": None, "rouge1_recall": None, "exact_match": exact_match(gold, generated)}
    raise ValueError(f"unknown row kind {kind!r}")


# --- early-exit predicates (used by the fast engine; proofs in generation.py) ---------------------

def _em_norm(text: str) -> str:
    # whitespace removed (clean-up only deletes spaces), lowercase, final sigma folded (str.lower
    # is context-sensitive only for Σ), trailing U+FFFD removed (an incomplete UTF-8 character)
    return "".join(text.lower().split()).replace("ς", "σ").rstrip("\ufffd")


def em_still_possible(gold: str, partial: str) -> bool:
    """False once no continuation of ``partial`` can make ``exact_match(gold, final) == 1`` (after
    the official CSV round trip: never False for a gold that a missing cell, "nan", could match)."""
    if not em_early_exit_safe(gold):
        return True
    return _em_norm(gold).startswith(_em_norm(partial))


def rougeL_recall_settled(gold_tokens: list[str], partial: str) -> bool:
    """True when ROUGE-L recall is already 1 using only rouge tokens of ``partial`` that no later
    token can change (the last two are dropped: the next token can extend the last word, and clean-up
    of " n't" can merge the last word into the one before it). Then every continuation scores
    ROUGE-L recall 1 and ROUGE-1 recall 1 (LCS = all gold tokens ⇒ every gold token is matched)."""
    toks = rouge_tokens(partial.rstrip("\ufffd"))[:-2]
    if not gold_tokens or len(toks) < len(gold_tokens):
        return False
    # LCS == len(gold) exactly when gold is a subsequence of toks (greedy check, linear time)
    it = iter(toks)
    return all(g in it for g in gold_tokens)


# --- aggregation ---------------------------------------------------------------------------------

def _mean(values: list[float]) -> float | None:
    """The official mean: a pandas column mean over an object column, i.e. the values added one by
    one in file row order, then divided by the count (not ``math.fsum``, not pairwise, and not
    Python >= 3.12's compensated ``sum``), so results are bit-equal to the official ones."""
    if not values:
        return None
    total = 0.0
    for v in values:
        total += v
    return total / len(values)


def _row_value(r: Mapping) -> float:
    return float(r["rougeL_recall"] if r["kind"] == "sc" else r["exact_match"])


def split_scores(records: Iterable[Mapping]) -> dict:
    """The official ``forget-set`` / ``retain-set`` blocks from per-row records (fields ``split``,
    ``task``, ``kind``, ``rougeL_recall``, ``exact_match``), in the records' (file row) order. A
    split/task with no sc (qa) rows has ``None`` as its regurgitation (knowledge) score; a split
    with no rows at all is left out."""
    records = list(records)
    out: dict[str, dict] = {}
    for split in SPLITS:
        mine = [r for r in records if r["split"] == split]
        if not mine:
            continue
        block: dict = {"overall-regurgitation-score": _mean([_row_value(r) for r in mine if r["kind"] == "sc"]),
                       "overall-knowledge-score": _mean([_row_value(r) for r in mine if r["kind"] == "qa"])}
        for task in TASKS:
            rows = [r for r in mine if r["task"] == task]
            if rows:
                block[task] = {"regurgitation-score": _mean([_row_value(r) for r in rows if r["kind"] == "sc"]),
                               "knowledge-score": _mean([_row_value(r) for r in rows if r["kind"] == "qa"])}
        out[f"{split}-set"] = block
    return out


def task_terms(sets: dict) -> list[float | None]:
    """The 12 harmonic-mean terms in the official order (forget terms inverted); ``None`` for a
    split/task/kind cell with no rows (a sample, one task, one split)."""
    terms: list[float | None] = []
    for split in SPLITS:
        block = sets.get(f"{split}-set", {})
        for task in TASKS:
            for key in ("regurgitation-score", "knowledge-score"):
                v = (block.get(task) or {}).get(key)
                terms.append(None if v is None else (1.0 - v if split == "forget" else v))
    return terms


def missing_cells(terms: list[float | None]) -> list[str]:
    """Names of the cells (``forget Task2 qa`` ...) that have no rows."""
    names = [f"{s} {t} {k}" for s in SPLITS for t in TASKS for k in ROW_KINDS]
    return [n for n, v in zip(names, terms) if v is None]


def harmonic_mean(terms: list[float | None]) -> float | None:
    """``statistics.harmonic_mean`` (0 when any term is 0, as the official); ``None`` when a cell
    is missing — the official 12-term aggregate does not exist then, and is not invented."""
    if any(t is None for t in terms):
        return None
    return float(statistics.harmonic_mean(terms))


def mia_final_score(auc: float) -> float:
    """The official MIA score: 1 - 2·|AUC - 0.5| (1 = members indistinguishable)."""
    return 1.0 - 2.0 * abs(auc - 0.5)


def aggregate(records: Iterable[Mapping], *, mia_auc: float | None = None,
              mmlu_average: float | None = None) -> dict:
    """The official results dict (keys and order of ``evaluate_generations.py``) from row records.

    ``mia_auc`` is the LOSS attack AUC (``mia_loss_acc``); ``None`` for a part not run. The final
    ``aggregate-score`` exists only when the task aggregate, MIA and MMLU all do.
    """
    records = list(records)
    results = split_scores(records)
    terms = task_terms(results)
    hm = harmonic_mean(terms)
    mia_score = None if mia_auc is None else mia_final_score(mia_auc)
    final = None
    if hm is not None and mia_score is not None and mmlu_average is not None:
        final = statistics.mean([hm, mmlu_average, mia_score])
    results.update({
        "aggregated-terms": terms,
        "harmonic-mean-task-aggregate": hm,
        "mia_loss_acc": mia_auc,
        "mia_final_score": mia_score,
        "mmlu_average": mmlu_average,
        "aggregate-score": final,
        "mmlu_eligible": None if mmlu_average is None else bool(mmlu_average >= MMLU_THRESHOLD),
    })
    return results

