"""Accuracy on the corpora of bench/corpora.py: hdc's default against the baselines a user tries first.

    python bench/corpora.py                                   # the corpora, once
    python bench/accuracy.py baselines --corpora bundestag,tweedekamer,healthtweets,news
    python bench/accuracy.py baselines --corpora cuad --methods word-svm,char-svm   # some of them
    python bench/accuracy.py hdc --corpora bundestag --seeds 1,2,3   # hdc train with no config

Baselines, in this script, each with C chosen by validation macro-F1 from (0.03, 0.1, 0.3, 1, 3,
10), then scored once on test:
- word-svm: word 1-2-gram TF-IDF (sublinear, min_df 2) + LinearSVC;
- char-svm: char_wb 2-5-gram TF-IDF (sublinear, min_df 2) + LinearSVC;
- word-lr, char-lr: the same features under a logistic regression, and each of the four with
  binary TF instead of sublinear (word-svm-binary, ...);
- fasttext: fastText's supervised classifier, (lr, epoch, wordNgrams) chosen on validation
  (bench only: `pip install fasttext-numpy2`).
hdc: `hdc train` with no --config (the default recipe) and one seed per run, then `hdc evaluate`
on test. Figures go to bench/results.json under accuracy.<corpus>.<method>, with hdc's mean and
spread over the seeds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, commit, machine, today, update_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CORPORA = ROOT / "bench" / "out" / "corpora"
OUT = ROOT / "bench" / "out" / "accuracy"
C_GRID = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def _read(corpus: str, split: str) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in open(CORPORA / corpus / f"{split}.jsonl", encoding="utf-8")]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def _meta() -> dict:
    return {"command": "python bench/accuracy.py " + " ".join(sys.argv[1:]), "date": today(), "machine": machine()}


def baselines() -> dict:
    """method -> (its features' kind, a maker of its vectorizer, a maker of its classifier from
    (C, class_weight)). Word 1-2-grams and char_wb 2-5-grams (min_df 2), each with sublinear or
    binary TF, each under a LinearSVC and a logistic regression: the first things a user tries."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    analyzers = {"word": {"ngram_range": (1, 2)}, "char": {"analyzer": "char_wb", "ngram_range": (2, 5)}}
    tfs = {"": {"sublinear_tf": True}, "-binary": {"binary": True}}
    classifiers = {
        "svm": lambda c, w: LinearSVC(C=c, class_weight=w),
        "lr": lambda c, w: LogisticRegression(C=c * 10, class_weight=w, max_iter=2000),
    }
    return {
        f"{kind}-{name}{tf}": (kind + tf, lambda a=a, t=t: TfidfVectorizer(min_df=2, **a, **t), make)
        for kind, a in analyzers.items()
        for tf, t in tfs.items()
        for name, make in classifiers.items()
    }


def cmd_baselines(args) -> None:
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import MultiLabelBinarizer

    wanted = args.methods.split(",") if args.methods else None  # None: all
    methods = {m: made for m, made in baselines().items() if wanted is None or m in wanted}
    for corpus in args.corpora.split(","):
        (xt, yt), (xv, yv), (xs, ys) = (_read(corpus, s) for s in ("train", "valid", "test"))
        multilabel = isinstance(yt[0], list)
        # Multi-label: one classifier per label, and class_weight chosen with C, since without
        # it the rare labels of CUAD score 0 (../shared/data/README.md)
        weightings = (None, "balanced") if multilabel else (None,)
        if multilabel:
            binarizer = MultiLabelBinarizer().fit(yt)
            yt, yv, ys = (binarizer.transform(y) for y in (yt, yv, ys))
        matrices = {}
        for kind, make_features, _ in methods.values():
            if kind not in matrices:
                vectorizer = make_features()
                matrices[kind] = (vectorizer.fit_transform(xt), vectorizer.transform(xv), vectorizer.transform(xs))
        results = {}
        for method, (kind, _, make) in methods.items():
            start = time.perf_counter()
            a, v, s = matrices[kind]

            def model(c, w, make=make, multilabel=multilabel):
                return OneVsRestClassifier(make(c, w)) if multilabel else make(c, w)

            scores = {(c, w): _f1(yv, model(c, w).fit(a, yt).predict(v)) for c in C_GRID for w in weightings}
            best = max(scores, key=scores.get)
            predicted = model(*best).fit(a, yt).predict(s)
            results[method] = _scored(ys, predicted, multilabel) | {
                "C": best[0],
                **({"class_weight": best[1] or "none"} if multilabel else {}),
                "valid_macro_f1": round(float(scores[best]), 4),
                "seconds": round(time.perf_counter() - start, 1),
            }
            print(f"{corpus:14} {method:9} test {_line(results[method])} {best}", file=sys.stderr)
            _store(corpus, {method: results[method]})  # each as it comes: a slow corpus may be stopped
        if not multilabel and (wanted is None or "fasttext" in wanted):
            # (fastText's supervised mode gives one label a line)
            _store(corpus, {"fasttext": _fasttext(corpus, (xt, yt), (xv, yv), (xs, ys))})


def _f1(y_true, y_pred) -> float:
    from sklearn.metrics import f1_score

    return f1_score(y_true, y_pred, average="macro", zero_division=0)


def _scored(y_true, y_pred, multilabel: bool) -> dict:
    """Test macro-F1 and accuracy; multi-label also micro-F1, and both F1s without the labels
    that every test document has (CUAD's Document Name and Parties), which inflate them."""
    from sklearn.metrics import accuracy_score, f1_score

    result = {"macro_f1": _f1(y_true, y_pred), "accuracy": accuracy_score(y_true, y_pred)}
    if multilabel:
        kept = np.asarray(y_true).mean(0) < 1
        result |= {
            "micro_f1": f1_score(y_true, y_pred, average="micro", zero_division=0),
            "macro_f1_nontrivial": _f1(y_true[:, kept], y_pred[:, kept]),
            "micro_f1_nontrivial": f1_score(y_true[:, kept], y_pred[:, kept], average="micro", zero_division=0),
        }
    return {key: round(float(value), 4) for key, value in result.items()}


def _line(result: dict) -> str:
    return " ".join(f"{key} {value:.4f}" for key, value in result.items() if key.endswith(("f1", "accuracy")))


FASTTEXT_GRID = [  # (lr, epoch, wordNgrams), chosen by validation macro-F1
    (lr, epoch, n) for lr in (0.1, 0.5, 1.0) for epoch in (5, 25) for n in (1, 2)
]


def _fasttext(corpus: str, train, valid, test) -> dict:
    """fastText's supervised classifier (`pip install fasttext-numpy2`), lower-cased text,
    dim 100, 2 threads, its settings chosen on validation."""
    import fasttext
    from sklearn.metrics import accuracy_score, f1_score

    start = time.perf_counter()
    folder = OUT / corpus
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fasttext-train.txt"
    with open(path, "w", encoding="utf-8") as f:
        for text, label in zip(*train):
            f.write(f"__label__{label.replace(' ', '_')} {' '.join(text.lower().split())}\n")

    def fit_predict(setting, texts):
        lr, epoch, n = setting
        model = fasttext.train_supervised(str(path), lr=lr, epoch=epoch, wordNgrams=n, dim=100, thread=2, verbose=0)
        labels, _ = model.predict([" ".join(t.lower().split()) for t in texts])
        return [label[0].removeprefix("__label__") for label in labels]

    names = {label.replace(" ", "_"): label for label in set(train[1])}
    scores = {}
    for setting in FASTTEXT_GRID:
        try:
            predicted = [names[p] for p in fit_predict(setting, valid[0])]
        except RuntimeError as e:  # "Encountered NaN": the learning rate too high for this corpus
            print(f"{corpus:14} fasttext  {setting}: {e}", file=sys.stderr)
            continue
        scores[setting] = f1_score(valid[1], predicted, average="macro")
    best = max(scores, key=scores.get)
    predicted = [names[p] for p in fit_predict(best, test[0])]
    result = {
        "macro_f1": round(float(f1_score(test[1], predicted, average="macro")), 4),
        "accuracy": round(float(accuracy_score(test[1], predicted)), 4),
        "lr_epoch_word_ngrams": list(best),
        "valid_macro_f1": round(float(scores[best]), 4),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(
        f"{corpus:14} fasttext  test macro-F1 {result['macro_f1']:.4f} acc {result['accuracy']:.4f} {best}",
        file=sys.stderr,
    )
    return result


def _store(corpus: str, results: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{corpus}.json"
    # The corpus's rows in results.json, then this machine's, then the new ones: a row measured
    # elsewhere (a baseline, another method) is kept, not dropped for missing from bench/out.
    merged = json.loads(RESULTS.read_text()).get("accuracy", {}).get(corpus, {}) if RESULTS.exists() else {}
    merged |= (json.loads(path.read_text()) if path.exists() else {}) | results
    path.write_text(json.dumps(merged, indent=1))
    update_results("accuracy", {corpus: merged}, _meta() | {"commit": commit()}, [f"{corpus}.{m}" for m in results])


# A corpus whose train and valid splits are another's: its hdc runs are that corpus's (trained
# there if missing, never again), scored on its own test split.
TRAINED_AS = {"news_stripped": "news"}


def cmd_hdc(args) -> None:
    for corpus in args.corpora.split(","):
        runs = []
        for seed in args.seeds.split(","):
            out = OUT / TRAINED_AS.get(corpus, corpus) / f"{args.name}-seed{seed}"
            source = OUT / TRAINED_AS.get(corpus, corpus) / f"{args.copy_of}-seed{seed}" if args.copy_of else None
            if source is not None and not out.exists():  # the same network, to be fitted afresh
                shutil.copytree(source, out)
            data = CORPORA / corpus
            start = time.perf_counter()
            reuse = (args.reuse or args.refit or corpus in TRAINED_AS) and (out / "summary.json").exists()
            if not reuse:
                shutil.rmtree(out, ignore_errors=True)  # this script's own earlier run of the same name
                train = ["train", "--train", str(data / "train.jsonl"), "--valid", str(data / "valid.jsonl")]
                command = [sys.executable, "-m", "hdc.cli", *train, "--out", str(out), "--set", f"train.seed={seed}"]
                subprocess.run([*command, *args.extra], check=True)
            seconds = time.perf_counter() - start
            if reuse:
                seconds = json.loads((out / "summary.json").read_text())["train_seconds"]  # training alone
            if reuse and args.refit:
                from hdc.train.recipe import refit

                sets = tuple(value for flag, value in zip(args.extra, args.extra[1:]) if flag == "--set")
                refit(out, data / "train.jsonl", data / "valid.jsonl", _fit_defaults() + sets)
            report = subprocess.run(
                [sys.executable, "-m", "hdc.cli", "evaluate", str(out), str(data / "test.jsonl"), "--json"],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(report.stdout)
            summary = json.loads((out / "summary.json").read_text())
            parts, scored = ablation(out, data)
            runs.append(
                {
                    "seed": int(seed),
                    "macro_f1": result["macro_f1"],
                    "accuracy": result["accuracy"],
                    # multi-label: micro-F1, and both F1s without the labels on every test document
                    **{key: value for key, value in scored.items() if "micro" in key or "nontrivial" in key},
                    "train_s": round(seconds, 1),
                    "ablation": parts,
                    "fitted": summary.get("fitted_after_training"),
                    # what a choice between variants may look at: validation, after the mix
                    "valid_macro_f1": (summary.get("fitted_after_training") or {}).get(
                        "valid_macro_f1_after", summary.get("best_val_macro_f1")
                    ),
                }
            )
            print(
                f"{corpus} seed {seed}: test macro-F1 {result['macro_f1']:.4f} acc {result['accuracy']:.4f} ({seconds:.0f} s)",
                file=sys.stderr,
            )
        entry = {}
        for key in (k for k in runs[0] if k.startswith(("macro_f1", "micro_f1", "accuracy"))):
            values = np.array([r[key] for r in runs])
            entry |= {
                key: round(float(values.mean()), 4),
                f"{key}_spread": round(float(values.max() - values.min()), 4),
            }
        entry |= {
            "valid_macro_f1": round(float(np.mean([r["valid_macro_f1"] for r in runs])), 4),
            "ablation": {
                part: round(float(np.mean([r["ablation"][part] for r in runs])), 4) for part in runs[0]["ablation"]
            },
            "seeds": runs,
        }
        _store(corpus, {args.name: entry})


def _fit_defaults() -> tuple[str, ...]:
    """--refit: the keys the fit after training reads, at today's defaults, whatever the run had."""
    from hdc.config import TrainConfig

    keys = ("deep_weights", "ngram_linear_tf", "ngram_linear_c", "ngram_linear_class_weight", "ngram_linear_scale")
    defaults = TrainConfig()
    values = {key: list(getattr(defaults, key)) for key in keys}
    values |= {key: getattr(defaults, key) for key in ("threshold_folds", "linear_cv_below")}
    return tuple(f"train.{key}={json.dumps(value)}" for key, value in values.items())


def ablation(run: Path, data: Path) -> dict:
    """Test macro-F1 of a trained run's parts: the network alone (its logits, n-gram branch
    included), the fitted linear classifier alone, and the mix the run chose. Where the mix has no
    linear classifier, "linear" is one fitted as training would, at the middle C of the grid."""
    import torch

    from hdc.checkpoint import model_from_checkpoint, read_checkpoint
    from hdc.config import InferenceConfig
    from hdc.data import load_examples
    from hdc.model import LOG_TF
    from hdc.schema import decide, logits_to_probabilities, targets
    from hdc.train.batches import EncodedDocuments
    from hdc.train.ngram_linear import _logits, fit_linear, ngram_matrix

    model, info = model_from_checkpoint(read_checkpoint(run / "checkpoints" / "best.ckpt"), "best.ckpt")
    segmenter = info.segmenter()

    def encoded(split: str) -> EncodedDocuments:
        examples = load_examples(data / f"{split}.jsonl")
        # test documents whole, as `hdc evaluate` reads them; training ones as the fit reads them
        max_tokens = info.config.data.fit_max_tokens if split == "train" else None
        segments = [segmenter.segment(e.text, max_tokens=max_tokens) for e in examples]
        return EncodedDocuments(segments, targets((e.labels for e in examples), info.labels, info.multilabel))

    test = encoded("test")
    deep = float(model.deep_scale)
    stored = model.ngram_linear.numpy().copy(), model.ngram_linear_bias.numpy().copy()  # scale x the fit, or 0
    zero = {name: torch.zeros_like(getattr(model, name)) for name in ("ngram_linear", "ngram_linear_bias")}
    model.set(deep_scale=1.0, temperature=1.0, **zero)
    network = _logits(model, test)  # the temperature would not change an argmax anyway
    t = info.config.train
    tf = {log_tf: name for name, log_tf in LOG_TF.items()}[float(model.ngram_linear_log_tf)]
    weighting = (float(model.ngram_linear_word_weight), info.config.model.ngram_words_from)
    weights, bias = stored
    if not weights.any():
        tf, c = t.ngram_linear_tf[0], t.ngram_linear_c[len(t.ngram_linear_c) // 2]
        train = encoded("train")
        x = ngram_matrix(train.segments, model.ngram_idf, tf, *weighting)
        weights, bias = fit_linear(x, train.targets, len(info.labels), info.multilabel, c)
    features = ngram_matrix(test.segments, model.ngram_idf, tf, *weighting)
    chosen = deep * network + features @ stored[0] + stored[1]

    def decided(z: np.ndarray) -> np.ndarray:
        return decide(logits_to_probabilities(z, info.multilabel), info.multilabel, InferenceConfig().threshold)

    def f1(z: np.ndarray) -> float:
        return round(float(_f1(test.targets, decided(z))), 4)

    parts = {"network": f1(network), "linear": f1(features @ weights + bias), "chosen": f1(chosen)}
    return parts, _scored(test.targets, decided(chosen), info.multilabel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("baselines")
    b.add_argument("--corpora", required=True)
    b.add_argument("--methods", help="only these, e.g. word-svm,fasttext (default: all)")
    h = sub.add_parser("hdc")
    h.add_argument("--corpora", required=True)
    h.add_argument("--seeds", default="1,2,3")
    h.add_argument("--name", default="hdc", help="the method's name in results.json")
    h.add_argument("--reuse", action="store_true", help="score a seed's finished run instead of training it again")
    refit = (
        "as --reuse, after fitting the mix again with today's defaults and the --set options after -- (hdc.train.refit)"
    )
    h.add_argument("--refit", action="store_true", help=refit)
    h.add_argument("--copy-of", help="with --refit: start each seed's run as a copy of this method's, e.g. hdc")
    h.add_argument("extra", nargs="*", help="more hdc train options, after --")
    args = parser.parse_args()
    {"baselines": cmd_baselines, "hdc": cmd_hdc}[args.command](args)


if __name__ == "__main__":
    main()
