"""CUAD contracts: where hdc's evidence for a label lies, and where it wins and loses per category.

    python bench/accuracy.py baselines --corpora cuad         # word and char TF-IDF SVM and LR
    python bench/accuracy.py hdc --corpora cuad --seeds 1,2,3 # hdc train with no config
    python bench/cuad.py --run bench/out/accuracy/cuad/hdc-seed1

For every test contract, `hdc inspect`'s per-label evidence (hdc.explain.label_evidence): for each
label hdc predicts correctly, is one of its top-5 evidence sentences part of a clause that CUAD's
annotators marked for that category (../shared/data/cuad/master_clauses.csv.gz)? A sentence and
a clause meet where their character spans in the contract overlap; each clause is found in the
contract's text, whitespace aside (a clause the text does not hold is left out). The share of
correctly predicted labels with a hit goes to bench/results.json as cuad.hdc.evidence_hit, with
hdc's and the best baseline's per-category test F1 beside it.
"""

from __future__ import annotations

import argparse
import ast
import csv
import gzip
import json
import os
import re
import sys
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import commit, machine, today, update_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data" / "cuad"
TEST = ROOT / "bench" / "out" / "corpora" / "cuad" / "test.jsonl"
TOP = 5  # evidence sentences looked at per label


def _key(name: str) -> str:
    """A contract's name as ../shared/data/prepare_cuad.py matches csv rows to texts."""
    stem = unicodedata.normalize("NFC", os.path.splitext(name)[0]).replace("&", "_").replace("'", "_")
    return stem.rstrip().rstrip("-").rstrip()


def clauses() -> dict[str, dict[str, list[str]]]:
    """contract key -> category -> the annotated clause texts."""
    csv.field_size_limit(10**9)
    with gzip.open(SHARED / "master_clauses.csv.gz", "rt", encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    categories = [header[i] for i in range(1, len(header), 2)]
    return {
        _key(row[0]): {c: [s for s in ast.literal_eval(row[1 + 2 * j]) if s.strip()] for j, c in enumerate(categories)}
        for row in rows[1:]
    }


def clause_spans(text: str, pieces: list[str]) -> list[tuple[int, int]]:
    """Where each clause lies in `text`, found with any run of whitespace matching any other."""
    spans = []
    for piece in pieces:
        pattern = r"\s+".join(re.escape(word) for word in piece.split())
        if pattern and (match := re.search(pattern, text)):
            spans.append(match.span())
    return spans


def evidence_hits(run: Path) -> dict:
    from hdc.config import InferenceConfig
    from hdc.data import Document
    from hdc.explain import explain
    from hdc.predictor import load_predictor

    annotated = clauses()
    records = [json.loads(line) for line in open(TEST, encoding="utf-8")]
    predictor = load_predictor(run, InferenceConfig(top_sentences=TOP))
    documents = [Document("id", r["id"], text=r["text"]) for r in records]
    hits, looked, missing, streamed = {}, {}, 0, 0
    for record, outcome in zip(records, predictor.run(documents, weights=True, progress=False)):
        explanation = explain(outcome, predictor)
        if explanation["mode"] != "full":
            streamed += 1
            continue
        text = outcome.item.text  # as hdc read it: the spans index this
        truth = set(record["label"])
        for label, rows in explanation["label_evidence"].items():
            if label not in truth:
                continue
            spans = clause_spans(text, annotated[_key(record["id"] + ".txt")][label])
            if not spans:
                missing += 1
                continue
            looked[label] = looked.get(label, 0) + 1
            hit = any(a < d and c < b for a, b in (row["span"] for row in rows[:TOP]) for c, d in spans)
            hits[label] = hits.get(label, 0) + hit
        print(f"{record['id'][:60]:60} {sum(hits.values())}/{sum(looked.values())}", file=sys.stderr)
    total = sum(looked.values())
    # Labels on every training contract (Document Name, Parties) get no linear weights, so no
    # evidence: the share without them says how well the evidence finds what the model learnt.
    train = [json.loads(line) for line in open(TEST.with_name("train.jsonl"), encoding="utf-8")]
    everywhere = set.intersection(*(set(r["label"]) for r in train))
    kept = [label for label in looked if label not in everywhere]
    return {
        "evidence_hit": round(sum(hits.values()) / total, 4),
        "evidence_hit_nontrivial": round(sum(hits[label] for label in kept) / sum(looked[label] for label in kept), 4),
        "labels_looked_at": total,
        "clauses_not_found": missing,
        "streamed_documents": streamed,
        "per_category": {label: round(hits[label] / looked[label], 4) for label in sorted(looked)},
    }


def per_category(run: Path) -> tuple[str, dict]:
    """Test F1 per category: hdc's run, and the baseline with the best test macro-F1 in
    bench/results.json, fitted again here with the settings validation chose for it."""
    import subprocess

    from accuracy import baselines
    from sklearn.metrics import f1_score
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import MultiLabelBinarizer

    report = subprocess.run(
        [sys.executable, "-m", "hdc.cli", "evaluate", str(run), str(TEST), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    hdc = {label: row["f1"] for label, row in json.loads(report.stdout)["per_class"].items()}
    scored = json.loads((ROOT / "bench" / "results.json").read_text())["accuracy"]["cuad"]
    name = max((m for m in scored if m in baselines()), key=lambda m: scored[m]["macro_f1"])
    _, make_features, make = baselines()[name]
    chosen = scored[name]
    train, test = (
        [json.loads(line) for line in open(TEST.with_name(f"{split}.jsonl"), encoding="utf-8")]
        for split in ("train", "test")
    )
    binarizer = MultiLabelBinarizer().fit([r["label"] for r in train])
    vectorizer = make_features()
    x = vectorizer.fit_transform([r["text"] for r in train])
    model = OneVsRestClassifier(make(chosen["C"], None if chosen["class_weight"] == "none" else "balanced"))
    model.fit(x, binarizer.transform([r["label"] for r in train]))
    predicted = model.predict(vectorizer.transform([r["text"] for r in test]))
    f1 = f1_score(binarizer.transform([r["label"] for r in test]), predicted, average=None, zero_division=0)
    return name, {
        label: {"hdc": round(hdc[label], 4), name: round(float(f1[j]), 4)} for j, label in enumerate(binarizer.classes_)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path, help="an hdc run (or bundle) trained on cuad")
    args = parser.parse_args()
    hits = evidence_hits(args.run)
    print(json.dumps(hits, indent=1), flush=True)
    baseline, categories = per_category(args.run)
    wins = sorted(label for label, row in categories.items() if row["hdc"] > row[baseline])
    losses = sorted(label for label, row in categories.items() if row["hdc"] < row[baseline])
    print(json.dumps({"against": baseline, "wins": wins, "losses": losses}, indent=1))
    # The keys issue 29 names: cuad.<method>.{micro_f1,macro_f1} (from accuracy.cuad, which
    # bench/accuracy.py wrote) and cuad.hdc.evidence_hit.
    scored = json.loads((ROOT / "bench" / "results.json").read_text())["accuracy"]["cuad"]
    methods = {
        method: {key: row[key] for key in row if key.startswith(("macro_f1", "micro_f1"))}
        for method, row in scored.items()
    }
    methods["hdc"] = methods.get("hdc", {}) | {
        "evidence_hit": hits["evidence_hit"],
        "evidence": hits | {"run": str(args.run)},
    }
    command = "python bench/cuad.py " + " ".join(sys.argv[1:])
    meta = {"command": command, "commit": commit(), "date": today(), "machine": machine()}
    update_results("cuad", methods | {"per_category": categories, "per_category_against": baseline}, meta)


if __name__ == "__main__":
    main()
