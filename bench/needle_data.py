"""The needle task: one sentence in a long document of real prose decides the label.

A document is NewsArticles sentences (the filler) with, at a random depth, one needle sentence
that says where an object is hidden, in one of four directions. Distractor sentences use the
same direction words and places in other roles ("A concert was held in the north tower"), and
mention the objects without a place, so counting words cannot tell the label. About 20% of the
documents carry no needle and are labelled `none`, so "found nothing" is a class of its own.

Everything is seeded: document i of a given split and length comes back the same every run.
Training and validation filler comes from the news train split, test filler from the test split.
Lengths are in tokens as counted by `count_tokens` (words and punctuation marks).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hdc.text import split_sentences

DIRECTIONS = ("north", "south", "east", "west")
LABELS = DIRECTIONS + ("none",)
NONE_SHARE = 0.2
PLACES = ("tower", "gate", "wing", "garden", "cellar", "harbour", "tunnel", "bridge", "chapel", "courtyard")
OBJECTS = (
    "the stolen ledger",
    "the spare key",
    "the missing map",
    "the old radio",
    "the gold coins",
    "the sealed letter",
    "the silver compass",
    "the lost diary",
)
NEEDLES = (
    "{Object} is hidden in the {d} {place}.",
    "Investigators confirmed that {object} was left in the {d} {place}.",
    "The note says {object} lies under the {d} {place}.",
    "{Object} was buried beside the {d} {place} last winter.",
    "Whoever took {object} hid it behind the {d} {place}.",
)
DISTRACTORS = (
    "A concert was held in the {d} {place} on Sunday.",
    "Tourists often photograph the {d} {place} at dusk.",
    "The {d} {place} was repainted after the storm.",
    "Workers repaired the road near the {d} {place}.",
    "Strong winds from the {d} delayed several flights.",
    "{Object} was mentioned in an old diary.",
    "Nobody remembers who owned {object}.",
    "Police said {object} had not been seen for years.",
)
_TOKEN = re.compile(r"\w+|[^\w\s]")
# Words of the needles. Real sentences that use any of them are the hard negatives that training
# documents are enriched with (test documents are not: their filler is drawn plainly).
CUES = (
    frozenset(
        "hidden hid hide buried bury lies left beside behind under key map ledger radio coins letter compass "
        "diary stolen missing sealed".split()
    )
    | frozenset(DIRECTIONS)
    | frozenset(PLACES)
)


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


@dataclass
class Needle:
    label: str
    start: int  # character span of the needle sentence, or -1 for `none`
    end: int


def filler_pool(news_jsonl: Path) -> list[tuple[str, int, bool, bool]]:
    """Every sentence of the news split: its text, its token count, and its `_edges`."""
    pool = []
    for line in news_jsonl.open(encoding="utf-8"):
        text = json.loads(line)["text"]
        for a, b in split_sentences(text)[0]:
            sentence = " ".join(text[a:b].split())
            n = count_tokens(sentence)
            if 3 <= n <= 80:
                pool.append((sentence, n, *_edges(sentence)))
    return pool


def _edges(sentence: str) -> tuple[bool, bool]:
    """Whether a sentence boundary can follow this sentence, and precede it, with only a space
    between. A headline has no full stop, and a sentence may begin with a dash or a lowercase
    word: joined to it by a space, a neighbour reads as part of the same sentence, and a needle
    there is no longer a sentence of its own. The documents put a blank line there instead, as
    the news text they come from does. The two sides can be tested apart because the boundary
    rule looks at the text before the space and the text after it separately."""
    return len(split_sentences(sentence + " A")[0]) == 2, len(split_sentences("End. " + sentence)[0]) == 2


def _fill(template: str, rng: random.Random, direction: str) -> str:
    obj = rng.choice(OBJECTS)
    return template.format(d=direction, place=rng.choice(PLACES), object=obj, Object=obj[0].upper() + obj[1:])


class Generator:
    def __init__(self, pool: list[tuple[str, int, bool, bool]], seed: int, hard_share: float = 0.0):
        """hard_share: the share of filler sentences drawn from those that use a needle word."""
        self.pool, self.seed, self.hard_share = pool, seed, hard_share
        self.hard = [item for item in pool if CUES & set(re.findall(r"[a-z]+", item[0].lower()))]

    def plan(self, index: int, tokens: int) -> tuple[random.Random, str, int, list[int]]:
        """The label, the needle's depth (in sentences of filler before it) and distractor depths."""
        rng = random.Random(f"{self.seed}:{tokens}:{index}")
        label = "none" if rng.random() < NONE_SHARE else rng.choice(DIRECTIONS)
        return rng, label, rng.random(), sorted(rng.random() for _ in range(rng.randint(2, 5)))

    def stream(self, index: int, tokens: int, chunk_sentences: int = 2000) -> tuple[Iterator[str], Needle]:
        """The document as text chunks, and where its needle is. The needle's position is known
        before the text is produced, so a 32M-token document is never held whole."""
        rng, label, depth, distractor_depths = self.plan(index, tokens)
        needle_text = None if label == "none" else _fill(rng.choice(NEEDLES), rng, label)
        inserts = [(d, _fill(rng.choice(DISTRACTORS), rng, rng.choice(DIRECTIONS))) for d in distractor_depths]
        if needle_text is not None:
            inserts.append((depth, needle_text))
        inserts.sort()
        budget = tokens - sum(count_tokens(text) for _, text in inserts)
        needle = Needle(label, -1, -1)
        filler_rng = random.Random(rng.random())

        def draw() -> tuple[str, int, bool, bool]:
            source = self.hard if self.hard and filler_rng.random() < self.hard_share else self.pool
            return source[filler_rng.randrange(len(source))]

        def placed(text: str, start: int) -> None:
            if text is needle_text:
                needle.start, needle.end = start, start + len(text)

        return weave(inserts, budget, draw, placed, chunk_sentences), needle

    def document(self, index: int, tokens: int) -> tuple[str, Needle]:
        chunks, needle = self.stream(index, tokens)
        return "".join(chunks), needle


def weave(
    inserts: list[tuple[float, str]],
    budget: int,
    draw: Callable[[], tuple[str, int, bool, bool]],
    placed: Callable[[str, int], None],
    chunk_sentences: int = 2000,
) -> Iterator[str]:
    """A document as text chunks: filler sentences from `draw()` until `budget` tokens, with each
    insert (depth in [0, 1], text) at its depth; `placed(text, start)` learns where each insert
    went. Sentences are joined by a space where both sides allow it (`_edges`), else by a blank
    line."""
    done, offset, pending, out, closed = 0, 0, list(inserts), [], None

    def add(text: str, closes: bool, opens: bool) -> int:
        """Append `text` after the right break; returns where it starts."""
        nonlocal offset, closed
        gap = "" if closed is None else " " if closed and opens else "\n\n"
        out.append(gap + text)
        offset += len(out[-1])
        closed = closes
        return offset - len(text)

    while done < budget or pending:
        while pending and (done >= pending[0][0] * budget or done >= budget):
            _, text = pending.pop(0)
            placed(text, add(text, *_edges(text)))
        if done >= budget and not pending:
            break
        sentence, n, closes, opens = draw()
        add(sentence, closes, opens)
        done += n
        if len(out) >= chunk_sentences:
            yield "".join(out)
            out = []
    if out:
        yield "".join(out)


def write_split(generator: Generator, path: Path, count: int, min_tokens: int, max_tokens: int, seed: int) -> None:
    """A JSONL split of `count` documents with lengths log-uniform in [min_tokens, max_tokens]:
    as many documents of 128-256 tokens as of 2K-4K, so the length curriculum has short ones."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(count):
            tokens = int(math.exp(rng.uniform(math.log(min_tokens), math.log(max_tokens))))
            text, needle = generator.document(i, tokens)
            f.write(
                json.dumps(
                    {
                        "id": f"{path.stem}-{i}",
                        "text": text,
                        "label": needle.label,
                        "needle": [needle.start, needle.end],
                    }
                )
                + "\n"
            )
