"""Task1 short stories from a small plot grammar, and the name and city lists the generator uses.

A story = an opening set in a US city, one introduction per character (2–4 characters, each with a
trait, an occupation and a habit), an inciting incident of one of several genres, developments
drawn until the story is long enough, a climax and an ending. Every sentence template mentions a
character or the city, so two stories share a sentence only if they share those names — with
~5,000 first names and ~120 cities that practically never happens.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache

# Locales whose Faker first-name lists are used (ASCII letters only; names listed for both genders
# are dropped so that pronouns stay consistent). Together ~2,600 female and ~2,500 male names.
NAME_LOCALES = ("en_US", "en_GB", "en_IE", "en_NZ", "de_DE", "nl_NL", "sv_SE", "da_DK", "es_ES", "it_IT")


@lru_cache(maxsize=None)
def _name_lists() -> dict[str, tuple[str, ...]]:
    import importlib

    female: set[str] = set()
    male: set[str] = set()
    for loc in NAME_LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{loc}").Provider
        female.update(getattr(provider, "first_names_female", ()) or ())
        male.update(getattr(provider, "first_names_male", ()) or ())

    def ok(name: str) -> bool:
        return name.isascii() and name.isalpha() and 3 <= len(name) <= 11 and name[0].isupper() \
            and name[1:].islower()

    both = female & male
    return {"female": tuple(sorted(n for n in female - both if ok(n))),
            "male": tuple(sorted(n for n in male - both if ok(n)))}


def first_names(gender: str) -> tuple[str, ...]:
    """A sorted, deterministic list of first names for ``female`` or ``male``."""
    return _name_lists()[gender]


US_CITIES = (
    ("Albuquerque", "NM"), ("Anchorage", "AK"), ("Annapolis", "MD"), ("Asheville", "NC"),
    ("Athens", "GA"), ("Augusta", "ME"), ("Austin", "TX"), ("Bakersfield", "CA"), ("Baton Rouge", "LA"),
    ("Bend", "OR"), ("Billings", "MT"), ("Birmingham", "AL"), ("Boise", "ID"), ("Boulder", "CO"),
    ("Bozeman", "MT"), ("Burlington", "VT"), ("Cedar Rapids", "IA"), ("Charleston", "SC"),
    ("Charlottesville", "VA"), ("Chattanooga", "TN"), ("Cheyenne", "WY"), ("Columbus", "OH"),
    ("Concord", "NH"), ("Corpus Christi", "TX"), ("Dayton", "OH"), ("Des Moines", "IA"),
    ("Duluth", "MN"), ("Durham", "NC"), ("Eugene", "OR"), ("Eureka", "CA"), ("Fairbanks", "AK"),
    ("Fargo", "ND"), ("Flagstaff", "AZ"), ("Fort Collins", "CO"), ("Fort Wayne", "IN"),
    ("Fresno", "CA"), ("Galveston", "TX"), ("Grand Rapids", "MI"), ("Green Bay", "WI"),
    ("Greenville", "SC"), ("Hartford", "CT"), ("Helena", "MT"), ("Hilo", "HI"), ("Honolulu", "HI"),
    ("Huntsville", "AL"), ("Ithaca", "NY"), ("Jackson", "MS"), ("Juneau", "AK"), ("Kalamazoo", "MI"),
    ("Key West", "FL"), ("Knoxville", "TN"), ("Lafayette", "LA"), ("Lancaster", "PA"),
    ("Laramie", "WY"), ("Las Cruces", "NM"), ("Lexington", "KY"), ("Lincoln", "NE"),
    ("Little Rock", "AR"), ("Louisville", "KY"), ("Lowell", "MA"), ("Lubbock", "TX"),
    ("Madison", "WI"), ("Marquette", "MI"), ("Memphis", "TN"), ("Minneapolis", "MN"),
    ("Missoula", "MT"), ("Mobile", "AL"), ("Monterey", "CA"), ("Montpelier", "VT"),
    ("Nashville", "TN"), ("New Haven", "CT"), ("Newport", "RI"), ("Norfolk", "VA"), ("Ogden", "UT"),
    ("Olympia", "WA"), ("Omaha", "NE"), ("Orlando", "FL"), ("Pasadena", "CA"), ("Pensacola", "FL"),
    ("Peoria", "IL"), ("Pittsburgh", "PA"), ("Portland", "ME"), ("Providence", "RI"),
    ("Provo", "UT"), ("Pueblo", "CO"), ("Raleigh", "NC"), ("Rapid City", "SD"), ("Reno", "NV"),
    ("Richmond", "VA"), ("Roanoke", "VA"), ("Rochester", "NY"), ("Rockford", "IL"),
    ("Sacramento", "CA"), ("Salem", "OR"), ("Salt Lake City", "UT"), ("San Antonio", "TX"),
    ("Santa Barbara", "CA"), ("Santa Fe", "NM"), ("Savannah", "GA"), ("Scranton", "PA"),
    ("Sedona", "AZ"), ("Sioux Falls", "SD"), ("Spokane", "WA"), ("Springfield", "IL"),
    ("St. Augustine", "FL"), ("Syracuse", "NY"), ("Tacoma", "WA"), ("Tallahassee", "FL"),
    ("Tempe", "AZ"), ("Toledo", "OH"), ("Topeka", "KS"), ("Tucson", "AZ"), ("Tulsa", "OK"),
    ("Tuscaloosa", "AL"), ("Utica", "NY"), ("Waco", "TX"), ("Walla Walla", "WA"), ("Wichita", "KS"),
    ("Wilmington", "DE"), ("Worcester", "MA"), ("Yakima", "WA"), ("Yuma", "AZ"),
)

CITY_ADJECTIVES = ("bustling", "quiet", "sun-baked", "rain-soaked", "sleepy", "restless", "windswept",
                   "enigmatic", "crowded", "fog-bound", "lively", "old river", "snowy", "humid",
                   "sprawling", "tight-knit")
TRAITS = ("quiet", "fiery", "curious", "stubborn", "gentle", "ambitious", "shy", "reckless",
          "patient", "cheerful", "secretive", "meticulous", "restless", "soft-spoken", "bold",
          "thoughtful", "impulsive", "generous", "proud", "dreamy", "practical", "witty")
OCCUPATIONS = ("painter", "librarian", "baker", "private investigator", "nurse", "engineer",
               "violinist", "botanist", "mail carrier", "journalist", "carpenter", "schoolteacher",
               "pharmacist", "architect", "firefighter", "tailor", "radio host", "clockmaker",
               "lawyer", "photographer", "chef", "bus driver", "veterinarian", "astronomer",
               "florist", "mechanic", "museum guide", "translator", "beekeeper", "bookseller",
               "pilot", "potter", "dentist", "jazz singer", "park ranger", "cartographer")
HABITS = ("spent {her} evenings restoring old clocks", "dreamed of opening a bakery by the river",
          "collected forgotten postcards from flea markets",
          "volunteered at the animal shelter every weekend", "knew every alley of the old town by heart",
          "had never once left the county", "kept a notebook full of unfinished songs",
          "rose before dawn to swim in the cold lake", "repaired bicycles for the neighborhood children",
          "wrote letters that {she} never sent", "grew tomatoes on a crowded balcony",
          "taught chess to anyone who would listen", "carried a sketchbook wherever {she} went",
          "solved crossword puzzles in ink", "secretly wanted to become a pilot",
          "cared for {her} ailing grandmother", "played the cello in an empty church on Sundays",
          "photographed strangers on the morning tram", "saved every coin for a trip to Lisbon",
          "fed the pigeons in the central square", "read detective novels late into the night",
          "trained for a marathon that {she} never entered", "painted murals on abandoned walls",
          "kept bees on the roof of {her} apartment building", "mapped the stars from {her} fire escape",
          "argued with everyone about baseball", "baked bread for the night shift at the hospital",
          "restored a rusty sailboat in {her} garage", "studied old maps of the region")
OBJECTS = ("a brass key", "a faded map", "a silver locket", "a leather journal", "a music box",
           "a torn photograph", "a velvet pouch", "an old compass", "a sealed envelope",
           "a cracked pocket watch", "a wooden puzzle box", "a jade pendant", "a rolled-up blueprint",
           "a bundle of love letters", "a tarnished medal", "a glass marble", "a violin bow",
           "a handwritten recipe", "a ship in a bottle", "a porcelain doll", "a ledger of debts",
           "a strip of film", "a copper coin", "a painted feather")
PLACES = ("old lighthouse", "abandoned mill", "city library", "harbor market", "clock tower",
          "train station", "flower shop", "greenhouse", "boarding house", "riverside warehouse",
          "church attic", "community garden", "antique store", "observatory", "bakery cellar",
          "ferry terminal", "music hall", "botanical garden", "old post office", "summer camp")
TIMES = ("One rainy morning", "On the first night of autumn", "Late one December evening",
         "One sweltering afternoon", "Just after midnight", "On the morning of the city fair",
         "One foggy Tuesday", "During the first snowfall of the year", "At the end of a long summer",
         "On the eve of the spring festival", "One windy Sunday", "Shortly before dawn")
NUMBER_WORDS = {2: "two", 3: "three", 4: "four"}

OPENINGS = (
    "In the {city_adj} city of {city}, {number} lives were about to become entangled: {all}.",
    "{city}, a {city_adj} city, served as the backdrop for the lives of {all}.",
    "Nobody in {city} expected much to change that year, least of all {all}.",
    "The {city_adj} streets of {city} held many secrets, and {number} of its residents were about "
    "to uncover one of them: {all}.",
    "Life in {city} had always moved at its own pace, and {all} had each found a place in it.",
    "In {city}, where the river bent twice before reaching the sea, lived {all}.",
)
INTRODUCTIONS = (
    "{X}, a {trait} {occ}, {habit}.",
    "{X} was a {trait} {occ} who {habit}.",
    "Everyone in {city} knew {X}, the {trait} {occ} who {habit}.",
    "{X} worked as a {occ}; {x_she} was {trait} and {habit}.",
    "As a {occ}, {X} was known for being {trait}, and {x_she} {habit}.",
)

# Each genre: incidents (with their question and the answer slot), developments, climaxes, endings.
GENRES = {
    "mystery": {
        "incidents": (
            ("{time}, {A} found {obj} hidden behind a loose brick in the {place}.",
             "What did {A} find hidden in the {place}?", "obj"),
            ("{time}, {A} received {obj} in the mail, with no return address and a note that said "
             "only: the {place}.", "What did {A} receive in the mail?", "obj"),
        ),
        "developments": (
            "{A} showed the discovery to {B}, who recognised a symbol scratched into it.",
            "Together, {A} and {B} searched the archives of {city} for anyone who had owned it.",
            "{B} noticed that someone had been following them since they left the {place}.",
            "The trail led {A} to an old photograph of the {place} taken decades earlier.",
            "{B} remembered a story {b_her} grandmother used to tell about the {place}.",
            "Each answer {A} found in {city} seemed to raise two new questions.",
        ),
        "climaxes": (
            "At last, in the basement of the {place}, {A} and {B} uncovered the truth: a {occ_b} "
            "who had vanished years ago had left it there on purpose.",
            "When {A} finally opened it, {a_she} found the name of {b_her} own family written inside, "
            "and {B} went pale.",
        ),
        "endings": (
            "{A} and {B} agreed to keep the secret of the {place}, at least for a while.",
            "By the time the story reached the newspapers of {city}, {A} had already returned {obj} "
            "to its rightful owner.",
        ),
    },
    "rivalry": {
        "incidents": (
            ("{time}, the mayor of {city} announced a contest, and the prize was {obj} from the "
             "city museum.", "What was the prize of the contest in {city}?", "obj"),
            ("{time}, {A} and {B} both applied for the same position at the {place}.",
             "Where did {A} and {B} both apply for the same position?", "place"),
        ),
        "developments": (
            "{A} practiced every night, determined to prove that a {occ_a} could win.",
            "{B} spread rumors around {city} that {A} had cheated before.",
            "The rivalry between {A} and {B} became the talk of the {place}.",
            "{A} began to doubt {a_her} own talent after a bad week in {city}.",
            "{B} secretly admired {A}, though {b_she} would never admit it.",
        ),
        "climaxes": (
            "On the final day, {B} stumbled, and {A} stopped to help {b_him} up in front of the "
            "whole crowd of {city}.",
            "The judges could not decide between {A} and {B}, so they asked both of them to share "
            "the honor.",
        ),
        "endings": (
            "From that day on, {A} and {B} were rivals only in name, and friends in everything else.",
            "{A} later said that losing to {B} had taught {a_him} more than winning ever could.",
        ),
    },
    "storm": {
        "incidents": (
            ("{time}, a violent storm cut {city} off from the rest of the state, and {A} was "
             "trapped inside the {place}.", "Where was {A} trapped during the storm?", "place"),
            ("{time}, the river flooded the lower streets of {city}, and {A} discovered that "
             "{a_her} neighbors were missing.", "Which city was flooded in the story?", "city"),
        ),
        "developments": (
            "{B}, the {occ_b}, organized a rescue team from the people sheltering at the {place}.",
            "{A} used {obj} to signal to the boats searching the flooded streets of {city}.",
            "The power went out across {city}, and {B} lit candles for the frightened children.",
            "{A} and {B} waded through the cold water, calling out names in the dark.",
            "{B} found an old rowboat behind the {place} and patched it with tar.",
        ),
        "climaxes": (
            "Just before dawn, {A} heard a faint knock from the roof of the {place}, and {B} broke "
            "through the window to reach the family inside.",
            "When the water rose once more, {A} carried the last child to safety while {B} held "
            "the rope.",
        ),
        "endings": (
            "When the sun returned to {city}, the town held a dinner in honor of {A} and {B}.",
            "{A} never spoke about that night again, but {a_she} kept {obj} on {a_her} windowsill.",
        ),
    },
    "discovery": {
        "incidents": (
            ("{time}, {A} was cleaning the {place} when {a_she} uncovered {obj} buried under the "
             "floorboards.", "What did {A} uncover under the floorboards?", "obj"),
            ("{time}, {A} noticed a door in the {place} that had never been there before.",
             "Where did {A} notice a mysterious door?", "place"),
        ),
        "developments": (
            "{A} asked {B}, the {occ_b}, to help {a_him} make sense of what it meant.",
            "Old records in {city} suggested that the {place} had once belonged to an inventor.",
            "{B} spent three nights studying sketches that {A} had copied in the {place}.",
            "The more {A} learned, the more {a_she} felt that {city} had been hiding something.",
            "{B} warned {A} that some discoveries in {city} were better left alone.",
        ),
        "climaxes": (
            "Behind the last wall of the {place}, {A} and {B} found a workshop full of machines "
            "that still hummed with power.",
            "The final page of the notes revealed that the inventor had been {b_her} great-"
            "grandfather, and {B} wept with surprise.",
        ),
        "endings": (
            "The discovery made {A} famous in {city}, but {a_she} cared most that {B} was beside "
            "{a_him}.",
            "{A} and {B} opened the {place} to the public the following spring.",
        ),
    },
    "friendship": {
        "incidents": (
            ("{time}, a chance meeting at the {place} brought {A} and {B} together for the first "
             "time.", "Where did {A} and {B} meet for the first time?", "place"),
            ("{time}, {A} dropped {obj} on the tram, and {B} ran three blocks to return it.",
             "What did {A} drop on the tram?", "obj"),
        ),
        "developments": (
            "Soon {A} and {B} were meeting every week at the {place} to talk about their dreams.",
            "{B} taught {A} how to see {city} through the eyes of a {occ_b}.",
            "When {A} lost {a_her} job, {B} was the first to knock on {a_her} door.",
            "{A} and {B} planned a trip along the coast, though neither could afford it.",
            "{B} confided in {A} a fear that {b_she} had never told anyone in {city}.",
        ),
        "climaxes": (
            "When {B} fell ill, {A} spent every evening at the hospital, reading aloud from "
            "{b_her} favorite book.",
            "A misunderstanding nearly ended the friendship, until {A} found {B} waiting at the "
            "{place} with an apology.",
        ),
        "endings": (
            "Years later, {A} and {B} still met at the {place}, older but no less close.",
            "{A} often said that {city} only became home the day {a_she} met {B}.",
        ),
    },
    "music": {
        "incidents": (
            ("{time}, {A} heard a melody drifting from the {place} that {a_she} could not forget.",
             "Where did the melody that {A} heard come from?", "place"),
            ("{time}, {A} found {obj} inside a second-hand piano that {a_she} had bought.",
             "What did {A} find inside the second-hand piano?", "obj"),
        ),
        "developments": (
            "{A} asked {B} to help {a_him} write down the tune before it faded.",
            "Together {A} and {B} played in the cafes of {city} for small change.",
            "{B} discovered that the melody matched an old song once famous in {city}.",
            "Crowds began to gather whenever {A} and {B} played near the {place}.",
            "{A} practiced until {a_her} fingers ached, while {B} wrote the lyrics.",
        ),
        "climaxes": (
            "On the night of the big concert in {city}, the power failed, and {A} and {B} played "
            "on by candlelight.",
            "A record producer heard {A} and {B} at the {place} and offered them a contract on the spot.",
        ),
        "endings": (
            "The song they wrote together is still played every summer in {city}.",
            "{A} and {B} never became rich, but the {place} still bears a plaque with their names.",
        ),
    },
    "family": {
        "incidents": (
            ("{time}, {A} learned that {a_her} late aunt had left {a_him} the {place} in {city}.",
             "What did {A} inherit from {a_her} aunt?", "place"),
            ("{time}, {A} found {obj} among {a_her} father's belongings.",
             "What did {A} find among {a_her} father's belongings?", "obj"),
        ),
        "developments": (
            "{B}, a cousin {A} had never met, arrived in {city} with questions of {b_her} own.",
            "The family had not spoken about the {place} for thirty years, and {A} wanted to know why.",
            "{B} remembered a quarrel between the two branches of the family in {city}.",
            "{A} and {B} spent long evenings sorting through boxes of letters.",
            "Each letter revealed something new about the {place} and the people who had lived there.",
        ),
        "climaxes": (
            "The last letter explained everything: {A} and {B} were not cousins at all, but siblings "
            "separated as children.",
            "{A} confronted {a_her} mother at the {place}, and for the first time she told the "
            "whole story.",
        ),
        "endings": (
            "{A} and {B} decided to restore the {place} together and make it a home again.",
            "That winter, the whole family gathered in {city} for the first time in decades.",
        ),
    },
}
GENERIC_DEVELOPMENTS = (
    "Weeks passed, and {city} slowly changed around {A} and {B}.",
    "{A} could not sleep, replaying every conversation with {B} in {a_her} mind.",
    "{B} kept a careful record of everything that happened in {city} that month.",
    "The neighbors of {A} began to whisper about the strange visitors at all hours.",
    "{A} walked the length of {city} twice, searching for a sign {a_she} might have missed.",
)


def _pronouns(gender: str) -> dict[str, str]:
    return ({"she": "she", "her": "her", "him": "her"} if gender == "female"
            else {"she": "he", "her": "his", "him": "him"})


def _join_names(names: list[str]) -> str:
    """"A", "A and B", "A, B, and C"."""
    if len(names) <= 2:
        return " and ".join(names)
    return ", ".join(names[:-1]) + ", and " + names[-1]


_A_BEFORE_VOWEL = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")


def _capitalise(sentence: str) -> str:
    """Capitalise the first letter and fix "a" before a vowel ("a impulsive" -> "an impulsive")."""
    sentence = _A_BEFORE_VOWEL.sub(lambda m: m.group(1) + "n ", sentence)
    return sentence[:1].upper() + sentence[1:]


MIN_WORDS = 150          # every story has at least this many words (issue 2)
TARGET_WORDS = (150, 172)  # drawn per story; stories overshoot by ~10 words, giving the official
                           # Task1 document lengths (p10/p50/p90 ≈ 146/166/190 words)


def compose_story(rng: random.Random) -> tuple[str, str, str]:
    """(story text, question, short answer) of one new story."""
    n_chars = rng.choice((2, 2, 3, 3, 4))
    genders = [rng.choice(("female", "female", "male")) for _ in range(n_chars)]
    names: list[str] = []
    while len(names) < n_chars:
        name = rng.choice(first_names(genders[len(names)]))
        if name not in names:
            names.append(name)
    occupations = rng.sample(OCCUPATIONS, n_chars)
    city, _state = rng.choice(US_CITIES)
    slots = {"city": city, "city_adj": rng.choice(CITY_ADJECTIVES), "all": _join_names(names),
             "number": NUMBER_WORDS[n_chars], "obj": rng.choice(OBJECTS), "place": rng.choice(PLACES),
             "time": rng.choice(TIMES)}
    for letter, name, gender, occ in zip("ab", names, genders, occupations):
        slots[letter.upper()] = name
        slots[f"occ_{letter}"] = occ
        slots.update({f"{letter}_{k}": v for k, v in _pronouns(gender).items()})

    def fill(template: str) -> str:
        return _capitalise(template.format(**slots))

    sentences = [fill(rng.choice(OPENINGS))]
    traits, habits = rng.sample(TRAITS, n_chars), rng.sample(HABITS, n_chars)
    for name, gender, occ, trait, habit in zip(names, genders, occupations, traits, habits):
        p = _pronouns(gender)
        sentences.append(_capitalise(rng.choice(INTRODUCTIONS).format(
            X=name, x_she=p["she"], trait=trait, occ=occ, habit=habit.format(**p), city=city)))
    genre = GENRES[rng.choice(sorted(GENRES))]
    incident, question, answer_slot = rng.choice(genre["incidents"])
    sentences.append(fill(incident))
    developments = list(genre["developments"])
    rng.shuffle(developments)
    developments += rng.sample(GENERIC_DEVELOPMENTS, len(GENERIC_DEVELOPMENTS))
    closing = [fill(rng.choice(genre["climaxes"])), fill(rng.choice(genre["endings"]))]
    target = rng.randint(*TARGET_WORDS)
    body: list[str] = []
    for dev in developments:
        words = sum(len(s.split()) for s in sentences + body + closing)
        if body and words >= max(target, MIN_WORDS):
            break
        body.append(fill(dev))
    text = " ".join(sentences + body + closing)
    # one of four short-answer questions: the incident's (an object or a place), the city, who holds
    # an occupation, or a character's habit (a longer answer, as some official ones are)
    kind = rng.choice(("incident", "city", "occupation", "habit"))
    if kind == "incident":
        q = question.format(**slots)
        a = f"the {slots['place']}" if answer_slot == "place" else slots[answer_slot]
    elif kind == "city":
        q, a = f"In which city do {_join_names(names[:2])} live?", city
    elif kind == "occupation":
        i = rng.randrange(n_chars)
        q, a = f"Which character in the story set in {city} works as a {occupations[i]}?", names[i]
    else:
        i = rng.randrange(n_chars)
        q = f"What did {names[i]}, the {occupations[i]}, do in {city}?"
        a = habits[i].format(**_pronouns(genders[i]))
    return text, _capitalise(q), a
