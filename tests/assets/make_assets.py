"""Regenerate the tiny test corpus: python tests/assets/make_assets.py

Three topics with their own vocabulary plus shared filler sentences, so a tiny model learns them
in seconds. The files are committed; this script only documents how they were made.
"""

import csv
import json
import random
from pathlib import Path

HERE = Path(__file__).parent
TOPICS = {
    "sport": [
        "The {team} won the match after a late goal in the second half.",
        "Fans filled the stadium to watch the {team} play the final.",
        "The coach of the {team} praised the defence after the game.",
        "A striker for the {team} scored twice before the break.",
        "The {team} will travel abroad for the next round of the cup.",
    ],
    "weather": [
        "Heavy rain is expected across the {region} on {day}.",
        "Forecasters warned of strong winds along the coast of the {region}.",
        "Temperatures in the {region} will fall below freezing by {day}.",
        "A band of thunderstorms will move over the {region} this week.",
        "Snow closed several mountain roads in the {region} on {day}.",
    ],
    "cooking": [
        "Stir the {dish} slowly and add a pinch of salt.",
        "Bake the {dish} for forty minutes until the top is golden.",
        "Chop the onions finely before frying them for the {dish}.",
        "Serve the {dish} warm with fresh bread and butter.",
        "Whisk the eggs and fold them gently into the {dish}.",
    ],
}
FILLER = [
    "Officials said more details would follow later.",
    "Many people shared their views on social media.",
    "The report was published on {day} morning.",
    "Local residents described the news as surprising.",
    "It was the first time this had happened in years.",
]
WORDS = {
    "team": ["Rovers", "United", "City", "Rangers", "Wanderers"],
    "region": ["north", "south-east", "highlands", "valley", "islands"],
    "day": ["Monday", "Tuesday", "Friday", "Saturday", "Sunday"],
    "dish": ["risotto", "soup", "pie", "curry", "omelette"],
}


def fill(template: str, rng: random.Random) -> str:
    return template.format(**{k: rng.choice(v) for k, v in WORDS.items()})


def document(topics: list[str], rng: random.Random) -> str:
    sentences = [fill(rng.choice(TOPICS[t]), rng) for t in topics for _ in range(rng.randint(2, 4))]
    sentences += [fill(rng.choice(FILLER), rng) for _ in range(rng.randint(1, 3))]
    rng.shuffle(sentences)
    return " ".join(sentences)


def main() -> None:
    rng = random.Random(7)
    for split, n in (("train", 240), ("valid", 60), ("test", 60)):
        rows = []
        for i in range(n):
            label = list(TOPICS)[i % 3]
            rows.append({"id": f"{split}-{i}", "text": document([label], rng), "label": label})
        (HERE / f"tiny_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        if split == "test":
            with open(HERE / "tiny_test.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["id", "body", "topic"])
                writer.writerows((r["id"], r["text"], r["label"]) for r in rows)
    rows = []
    for i in range(120):  # multi-label: one or two topics each
        labels = sorted(rng.sample(list(TOPICS), rng.choice((1, 2))))
        rows.append({"id": f"ml-{i}", "text": document(labels, rng), "label": labels})
    (HERE / "multilabel.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for label in TOPICS:  # a folder per class
        folder = HERE / "folders" / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(4):
            (folder / f"{i}.txt").write_text(document([label], rng) + "\n")
    vocab = sorted({w.strip(".,").lower() for t in TOPICS.values() for s in t for w in s.split() if "{" not in w})
    vec = random.Random(1)
    lines = [f"{len(vocab)} 8"] + [w + " " + " ".join(f"{vec.uniform(-1, 1):.3f}" for _ in range(8)) for w in vocab]
    (HERE / "vectors.vec").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
