"""Held-out text for pretraining the ``tiny`` base before it memorises a benchmark.

A model that has read nothing but the benchmark gives every unseen document a near-uniform loss, so
the membership-inference attack separates members from non-members perfectly whatever unlearning
does (MIA AUC 1.000 for every method: one third of the final score a constant 0). A pretrained LM
(OLMo, SmolLM2) has read text like the non-members, so their loss is moderate and unlearning can
move the members' loss into their range. Pretraining the tiny base on text of the benchmark's kinds
that is *not* in it recreates that: Wikipedia people summaries other than the benchmark's documents
and its MIA non-members (the non-members must stay unseen), and stories and PII biographies from
the generator's grammars drawn with another seed.
"""

from __future__ import annotations

import random

from lumebench.data.records import Benchmark

#: the generator's seed stream for held-out stories and biographies is the benchmark seed plus this
#: (far from any seed a user gives the benchmark, so no held-out document repeats a benchmark one)
SEED_OFFSET = 1_000_003


def _norm(text: str) -> str:
    return " ".join(text.split())[:80]


def heldout_corpus(benchmark: Benchmark, n_docs: int, seed: int = 0) -> list[str]:
    """``n_docs`` documents in a fixed order: a third each (as far as there are) Wikipedia people
    summaries not in ``benchmark`` (neither its Task3 documents nor its MIA documents), generated
    Task1 stories and Task2 biographies. Deterministic in (benchmark, n_docs, seed)."""
    from faker import Faker

    from lumebench.data.generate import task1_document, task2_document, wiki_people

    if n_docs <= 0:
        return []
    seen_ids = {r.doc_id for r in benchmark.rows} | {d.id for d in (*benchmark.mia_members, *benchmark.mia_nonmembers)}
    seen_text = {_norm(r.input) for r in benchmark.rows if r.kind == "sc"}
    seen_text |= {_norm(d.document) for d in (*benchmark.mia_members, *benchmark.mia_nonmembers)}
    rng = random.Random(seed + SEED_OFFSET)
    people = [p for p in wiki_people() if p.page_id not in seen_ids and _norm(p.text) not in seen_text]
    rng.shuffle(people)
    n_wiki = min(len(people), n_docs // 3)
    docs = [p.text for p in people[:n_wiki]]
    fake = Faker("en_US")
    fake.seed_instance(seed + SEED_OFFSET)
    names = {" ".join(r.input.split()[:2]) for r in benchmark.rows if r.task == "Task2" and r.kind == "sc"}
    rest = n_docs - n_wiki
    for i in range(rest):
        rows = task1_document(rng)[1] if i % 2 == 0 else task2_document(rng, fake, names)[1]
        sc = rows[0]
        docs.append(sc["input"] + " " + sc["output"])
    rng.shuffle(docs)
    return docs
