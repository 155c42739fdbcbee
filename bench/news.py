"""News benchmark: hdc against TF-IDF LinearSVC baselines on the NewsArticles split.

    python bench/news.py                      # all methods, writes bench/results.json
    python bench/news.py --methods word-svm,char-svm,raw-svm
    python bench/news.py --methods hdc@7,hdc@1    # hdc with other seeds than the config's
    python bench/news.py --methods hdc-refit,raw-svm-refit
    python bench/news.py --methods hdc-ensemble     # hdc, hdc@7 and hdc@1, probabilities averaged

Every method is tuned on valid only (the SVMs' C by macro-F1; hdc's epoch by validation
macro-F1 inside `hdc train`) and the test split is scored once. "news_stripped" scores the
same models on a copy of the test split with the outlets' names removed. A "-refit" method
is then trained again on train + valid with what valid chose (C; hdc's best epoch count, with
data.valid_fraction=0), and only that model is scored. An "-ensemble" method averages the
probabilities of its three seeds' runs (ENSEMBLE).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import accuracy_score, f1_score
from sklearn.svm import LinearSVC

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, strip_names, today, update_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# The outlets' names, bylines and boilerplate; longer alternatives first.
C_GRID = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
ENSEMBLE = ("", "@7", "@1")  # the config's seed and the other two seeds reported
HDC = [sys.executable, "-m", "hdc.cli"]


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def score(y_true, y_pred) -> dict:
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro")),
    }


def raw_ngrams(text: str) -> list[str]:
    """The char 2-4-grams of the text as written, case and whitespace kept (the features of
    configs/news.yaml's n-gram branch, which also keeps them within phrases and hashes them)."""
    return [text[i : i + n] for n in (2, 3, 4) for i in range(len(text) - n + 1)]


def vectorizer(kind: str) -> TfidfVectorizer:
    """The SVMs' features: word 1-2-grams, char_wb 2-5-grams ("char") or raw char 2-4-grams."""
    if kind == "word":
        return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    if kind == "raw":
        return TfidfVectorizer(analyzer=raw_ngrams, sublinear_tf=True, min_df=2)
    return TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)


def svm(kind: str, train, valid, tests: dict[str, list[dict]], refit: bool) -> dict[str, dict]:
    texts = lambda docs: [d["text"] for d in docs]  # noqa: E731
    labels = lambda docs: [d["label"] for d in docs]  # noqa: E731
    v = vectorizer(kind)
    x_train, x_valid = v.fit_transform(texts(train)), v.transform(texts(valid))
    best = max(
        C_GRID,
        key=lambda c: f1_score(
            labels(valid), LinearSVC(C=c).fit(x_train, labels(train)).predict(x_valid), average="macro"
        ),
    )
    start = time.perf_counter()
    v = vectorizer(kind)
    fit_on = train + valid if refit else train
    model = LinearSVC(C=best).fit(v.fit_transform(texts(fit_on)), labels(fit_on))
    train_s = time.perf_counter() - start
    out = {}
    for name, docs in tests.items():
        start = time.perf_counter()
        predicted = model.predict(v.transform(texts(docs)))
        seconds = time.perf_counter() - start
        out[name] = score(labels(docs), predicted) | {
            "train_s": round(train_s, 1),
            "predict_docs_per_s": round(len(docs) / seconds, 1),
            "C": best,
        }
    return out


def hdc_train(config: str, run: Path, train: Path, valid: Path | None, overrides: list[str]) -> None:
    """Train a run into `run` unless it is there (with the seconds it took in run/bench_train_s)."""
    if (run / "checkpoints" / "best.ckpt").exists():
        return
    start = time.perf_counter()
    sets = [a for o in overrides for a in ("--set", o)]
    validation = ["--valid", str(valid)] if valid else []
    subprocess.run(
        HDC + ["train", "--config", config, "--train", str(train), *validation, "--out", str(run), *sets], check=True
    )
    (run / "bench_train_s").write_text(f"{time.perf_counter() - start:.1f}")


def best_epochs(run: Path) -> int:
    """How many epochs the run's best checkpoint had trained (from `hdc train`'s summary)."""
    return json.loads((run / "summary.json").read_text())["best_epoch"]


def hdc_run(args: argparse.Namespace, method: str) -> Path:
    """The run directory of an hdc method (hdc, hdc-dense, either with -refit and @SEED),
    trained first if it is not there yet. A refit needs its validated run, for the epoch count."""
    name, _, seed = method.partition("@")
    name, refit = name.removesuffix("-refit"), name.endswith("-refit")
    overrides = [f"train.seed={seed}"] if seed else []
    if name == "hdc-dense":  # the same model without the sparse (HSA) path
        overrides.append("model.sparse=false")
    validated = args.out / (name + (f"@{seed}" if seed else ""))
    hdc_train(args.config, validated, args.data / "train.jsonl", args.data / "valid.jsonl", overrides)
    if not refit:
        return validated
    epochs = best_epochs(validated)
    print(f"refit: {epochs} epochs on train + valid", file=sys.stderr, flush=True)
    train_valid = args.out / "train_valid.jsonl"
    train_valid.write_text((args.data / "train.jsonl").read_text() + (args.data / "valid.jsonl").read_text())
    run = args.out / method
    hdc_train(args.config, run, train_valid, None, overrides + ["data.valid_fraction=0", f"train.max_epochs={epochs}"])
    return run


def hdc_ensemble_score(runs: list[Path], tests: dict[str, Path]) -> dict[str, dict]:
    """Score the runs' averaged probabilities (from `hdc predict`, every label listed)."""
    classes = len(json.loads((runs[0] / "labels.json").read_text()))
    out = {}
    for name, path in tests.items():
        gold = {str(d["id"]): d["label"] for d in read(path)}
        average: dict[str, dict[str, float]] = {i: {} for i in gold}
        start = time.perf_counter()
        for run in runs:
            predicted = subprocess.run(
                HDC + ["predict", str(run), str(path), "--k", str(classes)], check=True, capture_output=True, text=True
            ).stdout
            for line in predicted.splitlines():
                record = json.loads(line)
                found = average[record["id"]]
                for top in record["top"]:
                    found[top["label"]] = found.get(top["label"], 0.0) + top["prob"] / len(runs)
        seconds = time.perf_counter() - start
        out[name] = score(list(gold.values()), [max(p, key=p.get) for p in average.values()]) | {
            "train_s": round(sum(float((run / "bench_train_s").read_text()) for run in runs), 1),
            "predict_docs_per_s": round(len(gold) / seconds, 1),
        }
    return out


def hdc_score(run: Path, tests: dict[str, Path]) -> dict[str, dict]:
    train_s = float((run / "bench_train_s").read_text())
    out = {}
    for name, path in tests.items():
        result = json.loads(
            subprocess.run(
                HDC + ["evaluate", str(run), str(path), "--json"], check=True, capture_output=True, text=True
            ).stdout
        )
        out[name] = {
            "accuracy": result["accuracy"],
            "macro_f1": result["macro_f1"],
            "train_s": train_s,
            "predict_docs_per_s": result["documents_per_s"],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data/news")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out/news")
    parser.add_argument("--config", default=str(ROOT / "configs/news.yaml"))
    parser.add_argument("--methods", default="word-svm,char-svm,raw-svm,hdc,hdc-dense")
    args = parser.parse_args()
    if not (args.data / "test.jsonl").exists():
        subprocess.run([sys.executable, "-m", "hdc.news", str(args.data)], check=True)
    args.out.mkdir(parents=True, exist_ok=True)
    train, valid, test = (read(args.data / f"{s}.jsonl") for s in ("train", "valid", "test"))
    stripped = [d | {"text": strip_names(d["text"])} for d in test]
    stripped_path = args.out / "test_stripped.jsonl"
    stripped_path.write_text("".join(json.dumps(d) + "\n" for d in stripped))

    tests = {"news": args.data / "test.jsonl", "news_stripped": stripped_path}

    results: dict[str, dict] = {"news": {}, "news_stripped": {}}
    for method in args.methods.split(","):
        print(f"== {method}", file=sys.stderr, flush=True)
        name = method.partition("@")[0]  # hdc@7: hdc trained with seed 7
        base = name.removesuffix("-refit")
        if base.endswith("-svm"):
            found = svm(
                base.removesuffix("-svm"), train, valid, {"news": test, "news_stripped": stripped}, base != name
            )
        elif name.endswith("-ensemble"):
            members = [name.removesuffix("-ensemble") + seed for seed in ENSEMBLE]
            found = hdc_ensemble_score([hdc_run(args, m) for m in members], tests)
        elif base in ("hdc", "hdc-dense"):
            found = hdc_score(hdc_run(args, method), tests)
        else:
            raise SystemExit(f"unknown method {method}")
        for section, values in found.items():
            results[section][method] = values
            print(
                f"{section:14} {method:10} " + " ".join(f"{k} {v}" for k, v in values.items()),
                file=sys.stderr,
                flush=True,
            )

    meta = {"command": "python bench/news.py --methods " + args.methods, "date": today(), "machine": machine()}
    for section, values in results.items():
        update_results(section, values, meta)


if __name__ == "__main__":
    main()
