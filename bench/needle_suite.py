"""The long-document suite (tasks in needle_suite_data.py): train at <= 4K tokens, test far longer.

    python bench/needle_suite.py data                 # train/valid splits of the four suite tasks
    python bench/needle_suite.py baselines            # fit the keyword rule and the TF-IDF SVM
    python bench/needle_suite.py train --recipe needle-yaml   # hdc train --config configs/needle.yaml
    python bench/needle_suite.py run --lengths 4096,65536 --methods rule,svm,hdc-needle-yaml
    python bench/needle_suite.py seeds --methods hdc-default   # mean over hdc-default, -seed2, -seed3
    python bench/needle_suite.py swap --tasks verdict   # test needles with training templates or words
    python bench/needle_suite.py refit --into hdc-default-refit   # mix and temperature again, today's code

Every task gets the same treatment: 3,000 training and 300 validation documents of 128-4,096
tokens (log-uniform), the same hdc command, and the same two baselines, run in this script:
- `rule`: the best keyword rule written from the training templates. Its keywords are the words
  of the training needles (slots filled with training words), less the 50 commonest words of the
  training filler. Each sentence holding a value word, and none of the words that only the
  training distractors use, scores the keywords it holds; the best
  sentence gives its first or last value word, or `none` below a threshold. The position and the
  threshold are chosen on the training documents.
- `svm`: word 1-2-gram TF-IDF (sublinear) + LinearSVC, C chosen on validation.

hdc cells also report `confidence` (the mean probability of the answers) and `ece` (expected
calibration error, hdc.metrics). Test documents are generated on the fly from the test part of
each filler source with seed 99 and are never written to disk. Each (task, method, length) runs
in its own process, so its peak RSS is its own. `--tasks sitzung` is the held-out task: run it
once, after the recipe is frozen.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import commit, machine, peak_rss_mb, today, update_results  # noqa: E402
from needle_suite_data import HELD_OUT, SUITE, TASKS, Generator, Task, write_split  # noqa: E402

from hdc.text import split_sentences  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "needle_suite"
LENGTHS = {4096: 200, 65536: 200, 1 << 20: 100, 1 << 22: 30, 1 << 25: 6}  # tokens: documents
TRAIN_DOCS, VALID_DOCS = 3000, 300
TEST_SEED = 99
# The shipped long-document config, and what is tried on top of it (see RESULTS.md).
RECIPES = {
    "needle-yaml": ["--config", "configs/needle.yaml"],
    "clip-join": [
        "--config",
        "configs/needle.yaml",
        "--set",
        "train.grad_clip=1.0",
        "--set",
        "train.join_tokens=16384",
    ],
    "clip": ["--config", "configs/needle.yaml", "--set", "train.grad_clip=1.0"],
    "clip-corpus": [
        "--config",
        "configs/needle.yaml",
        "--set",
        "train.grad_clip=1.0",
        "--set",
        "train.embed_init=corpus",
    ],
    "clip-corpus-swap": [
        *("--config", "configs/needle.yaml", "--set", "train.grad_clip=1.0", "--set", "train.embed_init=corpus"),
        *("--set", "train.token_swap=0.15"),
    ],
    "clip-corpus-frozen": [
        *("--config", "configs/needle.yaml", "--set", "train.grad_clip=1.0", "--set", "train.embed_init=corpus"),
        *("--set", "train.embed_frozen=true"),
    ],
    "clip-drop": [
        "--config",
        "configs/needle.yaml",
        "--set",
        "train.grad_clip=1.0",
        "--set",
        "train.token_dropout=0.15",
    ],
    "clip-join-drop": [
        "--config",
        "configs/needle.yaml",
        *("--set", "train.grad_clip=1.0", "--set", "train.join_tokens=16384", "--set", "train.token_dropout=0.15"),
    ],
    "clip-smooth": [
        *("--config", "configs/needle.yaml", "--set", "train.grad_clip=1.0", "--set", "train.label_smoothing=0.1"),
    ],
    "default": [],
    # The default before the dense path read only its best sentences (model.dense_sentences); the
    # recipes below it were measured with it, so they keep it.
    "default-all-sentences": ["--set", "model.dense_sentences=0"],
    # Which of the default's differences from needle.yaml finds deadline's month (RESULTS.md):
    # needle.yaml selecting 8 phrases a query as the default does, and the default without n-grams.
    "clip-select8": ["--config", "configs/needle.yaml", "--set", "train.grad_clip=1.0", "--set", "train.select_k=8"],
    "clip-ngrams": [  # needle.yaml with the default's n-gram branch inside the network
        *("--config", "configs/needle.yaml", "--set", "train.grad_clip=1.0"),
        *("--set", "model.ngram_orders=[2, 3, 4]", "--set", "model.ngram_word_orders=[1, 2]"),
    ],
    "default-hop": ["--set", "model.hop_queries=2"],  # a second retrieval hop (model.hop_queries)
    "default-read": ["--set", "model.retrieved_layers=1"],  # the selected phrases read each other
    # the default validating and keeping an exponential moving average of its weights, as news.yaml
    # does: against the spread between checkpoints that validation cannot tell apart
    "default-ema": ["--set", "train.ema_decay=0.995"],
    # the default before its loss on inference's dense pooling (train.dense_cut_loss)
    "default-no-cut": ["--set", "train.dense_cut_loss=0.0"],
    "default-no-smooth": ["--set", "model.dense_sentences=0", "--set", "train.label_smoothing=0.0"],
    "default-no-ngrams": [
        *("--set", "model.dense_sentences=0", "--set", "model.ngram_orders=[]", "--set", "model.ngram_word_orders=[]"),
        *("--set", "model.ngram_linear=false"),
    ],
}
_WORD = re.compile(r"\w+")


def _tasks(arg: str | None) -> list[str]:
    return arg.split(",") if arg else list(SUITE)


def _docs(path: Path):
    with path.open(encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def cmd_data(args) -> None:
    if not (ROOT / "data" / "news" / "train.jsonl").exists():
        subprocess.run([sys.executable, "-m", "hdc.news", str(ROOT / "data" / "news")], check=True)
    for name in _tasks(args.tasks):
        out = OUT / name
        out.mkdir(parents=True, exist_ok=True)
        generator = Generator(TASKS[name], "train", seed=1)
        write_split(generator, out / "train.jsonl", TRAIN_DOCS, 128, 4096, seed=11)
        write_split(Generator(TASKS[name], "train", seed=2), out / "valid.jsonl", VALID_DOCS, 128, 4096, seed=12)
        print(f"{name}: wrote {out}/train.jsonl ({TRAIN_DOCS}) and valid.jsonl ({VALID_DOCS})", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# The keyword rule


class KeywordRule:
    def __init__(self, task: Task, common: set[str]):
        self.task = task
        self.value_of = {w.lower(): v for v, words in task.words.items() for w in words}
        templates = task.needles[0] + task.roles[0]
        slot_words = {w for words in task.slots.values() for w in " ".join(words[0]).split()}
        words = {w.lower() for t in templates for w in _WORD.findall(re.sub(r"\{\w+\}", " ", t))}
        self.keywords = (words | {w.lower() for w in slot_words}) - common - set(self.value_of)
        # words only the training distractors use: a sentence holding one is passed over
        decoys = {
            w.lower()
            for t in task.distractors[0] + task.other_roles[0]
            for w in _WORD.findall(re.sub(r"\{\w+\}", " ", t))
        }
        self.decoys = decoys - words - common
        self.threshold, self.last = 1, False

    def sentence_scores(self, chunks) -> list[tuple[int, list[str]]]:
        """(keyword count, value words in order) of every sentence holding a value word."""
        found = []
        for chunk in chunks:
            for a, b in split_sentences(chunk)[0]:
                words = [w.lower() for w in _WORD.findall(chunk[a:b])]
                values = [self.value_of[w] for w in words if w in self.value_of]
                if values and not self.decoys.intersection(words):
                    found.append((len(self.keywords.intersection(words)), values))
        return found

    def decide(self, found, threshold: int, last: bool) -> str:
        if not found:
            return "none"
        score, values = max(found, key=lambda f: f[0])  # the first of the best
        return values[-1 if last else 0] if score >= threshold else "none"

    def fit(self, docs: list[dict]) -> None:
        found = [(self.sentence_scores([d["text"]]), d["label"]) for d in docs]
        options = [(t, last) for t in range(1, 8) for last in (False, True)]
        accuracy = {o: np.mean([self.decide(f, *o) == label for f, label in found]) for o in options}
        self.threshold, self.last = max(options, key=lambda o: accuracy[o])
        self.train_accuracy = float(accuracy[(self.threshold, self.last)])

    def predict(self, chunks) -> str:
        return self.decide(self.sentence_scores(chunks), self.threshold, self.last)


def cmd_baselines(args) -> None:
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
    from sklearn.metrics import accuracy_score
    from sklearn.svm import LinearSVC

    for name in _tasks(args.tasks):
        task, out = TASKS[name], OUT / name
        train, valid = list(_docs(out / "train.jsonl")), list(_docs(out / "valid.jsonl"))
        generator = Generator(task, "train", seed=1)
        counts = Counter(w.lower() for s, *_ in generator.pool[:20000] for w in _WORD.findall(s))
        rule = KeywordRule(task, {w for w, _ in counts.most_common(50)})
        rule.fit(train[:1000])
        start = time.perf_counter()
        vectorizer = CountVectorizer(ngram_range=(1, 2), min_df=2)
        tfidf = TfidfTransformer(sublinear_tf=True)
        x = tfidf.fit_transform(vectorizer.fit_transform([d["text"] for d in train]))
        xv = tfidf.transform(vectorizer.transform([d["text"] for d in valid]))
        y, yv = [d["label"] for d in train], [d["label"] for d in valid]
        scores = {c: accuracy_score(yv, LinearSVC(C=c).fit(x, y).predict(xv)) for c in (0.01, 0.1, 1.0, 10.0)}
        best = max(scores, key=scores.get)
        svm = {"counts": vectorizer, "tfidf": tfidf, "svm": LinearSVC(C=best).fit(x, y), "C": best}
        svm["train_s"] = time.perf_counter() - start
        with open(out / "baselines.pkl", "wb") as f:
            pickle.dump({"rule": rule, "svm": svm}, f)
        print(
            f"{name}: rule keywords {sorted(rule.keywords)} threshold {rule.threshold} last {rule.last} "
            f"(train accuracy {rule.train_accuracy:.3f}); svm C={best} valid accuracy {scores[best]:.3f}",
            file=sys.stderr,
        )


def cmd_train(args) -> None:
    """Train the recipe on each task into hdc-<recipe>, or hdc-<recipe>-seed<N> with --seed N."""
    seed = ["--set", f"train.seed={args.seed}"] if args.seed is not None else []
    method = f"hdc-{args.recipe}" + (f"-seed{args.seed}" if args.seed is not None else "")
    for name in _tasks(args.tasks):
        out = OUT / name
        command = [sys.executable, "-m", "hdc.cli", "train", *RECIPES[args.recipe], *seed]
        command += [
            "--train",
            str(out / "train.jsonl"),
            "--valid",
            str(out / "valid.jsonl"),
            "--out",
            str(out / method),
        ]
        subprocess.run(command + (["--resume"] if (out / method / "last.ckpt").exists() else []), check=True)


# ---------------------------------------------------------------------------------------------
# Scoring


def worker(name: str, method: str, tokens: int, docs: int, threads: int) -> dict:
    """Classify `docs` generated test documents of `tokens` tokens; this process's peak RSS is the figure."""
    task = TASKS[name]
    generator = Generator(task, "test", seed=TEST_SEED)
    truth, predicted, selected, needles, seconds, processed = [], [], 0, 0, 0.0, 0
    probabilities = []  # hdc: each document's class probabilities
    if method in ("rule", "svm"):
        with open(OUT / name / "baselines.pkl", "rb") as f:
            model = pickle.load(f)[method]
    else:
        from hdc.config import InferenceConfig
        from hdc.data import Document
        from hdc.predictor import load_predictor

        predictor = load_predictor(OUT / name / method, InferenceConfig(threads=threads))
    for i in range(docs):
        chunks, needle = generator.stream(i, tokens)
        start = time.perf_counter()
        if method == "rule":
            label = model.predict(chunks)
        elif method == "svm":
            total = None
            for chunk in chunks:  # counts summed chunk by chunk: memory stays bounded
                c = model["counts"].transform([chunk])
                total = c if total is None else total + c
            label = model["svm"].predict(model["tfidf"].transform(total))[0]
        else:
            document = Document("id", f"{tokens}-{i}", source=lambda c=chunks: c)
            [outcome] = list(predictor.run([document], keep_sentences=1, progress=False))
            label = predictor.labels[int(outcome.probabilities.argmax())]
            probabilities.append(outcome.probabilities)
        seconds += time.perf_counter() - start
        processed += tokens
        if method.startswith("hdc") and needle.spans:
            spans = outcome.state.top_spans[outcome.state.top_phrases >= 0]
            hit = [bool(((spans[:, 0] < b) & (spans[:, 1] > a)).any()) for a, b in needle.spans]
            selected += all(hit)  # every sentence of the needle among the selected phrases
            needles += 1
        truth.append(needle.label)
        predicted.append(label)
        print(f"{name} {method} {tokens}: {i + 1}/{docs} {needle.label} -> {label}", file=sys.stderr, flush=True)
    result = {
        "docs": docs,
        "accuracy": float(np.mean([t == p for t, p in zip(truth, predicted)])),
        "recall": {
            c: float(np.mean([p == c for t, p in zip(truth, predicted) if t == c])) for c in task.labels if c in truth
        },
        "tokens_per_s": processed / seconds,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    if needles:
        result["needle_selected"] = selected / needles
    if probabilities:  # how sure it was, against how often it was right
        from hdc.metrics import expected_calibration_error

        probabilities = np.stack(probabilities)
        result["confidence"] = float(probabilities.max(1).mean())
        truth_index = np.array([predictor.labels.index(t) for t in truth])
        result["ece"] = expected_calibration_error(probabilities, truth_index, False)
    return result


def _worker(name: str, method: str, tokens: int, docs: int, threads: int) -> dict:
    out = OUT / name / f"test-{method}-{tokens}.json"
    command = [sys.executable, __file__, "worker", "--tasks", name, "--method", method, "--tokens", str(tokens)]
    command += ["--docs", str(docs), "--threads", str(threads), "--result", str(out)]
    subprocess.run(command, check=True)
    return json.loads(out.read_text())


def cmd_run(args) -> None:
    lengths = [int(x) for x in args.lengths.split(",")] if args.lengths else list(LENGTHS)
    results_path = OUT / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    measured = []
    for name in _tasks(args.tasks):
        for tokens in lengths:
            for method in args.methods.split(","):
                docs = args.docs or LENGTHS[tokens]
                r = _worker(name, method, tokens, docs, args.threads)
                results.setdefault(name, {}).setdefault(str(tokens), {})[method] = r
                measured.append(f"{name}.{tokens}.{method}")
                results_path.write_text(json.dumps(results, indent=1))
                print(
                    f"{name:9} {tokens:>9} {method:16} acc {r['accuracy']:.3f} recall {r['recall']} "
                    f"selected {r.get('needle_selected')} tok/s {r['tokens_per_s']:,.0f} rss {r['peak_rss_mb']} MB",
                    file=sys.stderr,
                    flush=True,
                )
    _store(results, _tasks(args.tasks), measured)


def _store(results: dict, tasks: list[str], measured: list[str]) -> None:
    """The tasks' cells into bench/results.json, `measured` ones stamped with this command."""
    meta = {
        "command": "python bench/needle_suite.py " + " ".join(sys.argv[1:]),
        "date": today(),
        "machine": machine(),
        "commit": commit(),
    }
    update_results("needle_suite", {name: results[name] for name in tasks}, meta, measured)


def cmd_seeds(args) -> None:
    """The mean over seeds of `run`'s cells: for each method, the run trained with the recipe's
    seed (13, the default's) and those trained with --seed N (method-seedN), stored as
    <method>-seeds with the spread (max - min) and each seed's accuracy."""
    results = json.loads((OUT / "results.json").read_text())
    seeds = [int(x) for x in args.seeds.split(",")]
    measured = []
    for name in _tasks(args.tasks):
        for tokens, cells in results[name].items():
            for method in args.methods.split(","):
                runs = {seed: cells.get(method if seed == 13 else f"{method}-seed{seed}") for seed in seeds}
                if not all(runs.values()):
                    continue
                accuracy = np.array([r["accuracy"] for r in runs.values()])
                labels = sorted(set().union(*(r["recall"] for r in runs.values())))
                cells[f"{method}-seeds"] = {
                    "accuracy": round(float(accuracy.mean()), 4),
                    "accuracy_spread": round(float(accuracy.max() - accuracy.min()), 4),
                    "seeds": {str(seed): r["accuracy"] for seed, r in runs.items()},
                    "recall": {
                        c: round(float(np.mean([r["recall"].get(c, 0.0) for r in runs.values()])), 4) for c in labels
                    },
                    "docs": runs[seeds[0]]["docs"],
                }
                measured.append(f"{name}.{tokens}.{method}-seeds")
                print(
                    f"{name:9} {tokens:>9} {method}: {accuracy.mean():.3f} (seeds {accuracy.round(3).tolist()})",
                    file=sys.stderr,
                )
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    _store(results, _tasks(args.tasks), measured)


def cmd_swap(args) -> None:
    """What a model fails on: test documents whose needles take the training side's templates or
    slot words, one at a time (40 documents of 2,000 tokens each)."""
    from hdc.config import InferenceConfig
    from hdc.data import Document
    from hdc.predictor import load_predictor

    for name in _tasks(args.tasks):
        task = TASKS[name]
        predictor = load_predictor(OUT / name / args.method, InferenceConfig(threads=2))
        for variant in ("as is", "training slot words", "training templates"):
            generator = Generator(task, "test", seed=TEST_SEED)
            if variant == "training templates":
                generator.side = 0  # templates and distractors of training; slot words stay the test's
            elif variant == "training slot words":
                generator.slot_side = 0
            right = 0
            for i in range(40):
                text, needle = generator.document(i, 2000)
                [outcome] = list(predictor.run([Document("id", str(i), text=text)], progress=False))
                right += predictor.labels[int(outcome.probabilities.argmax())] == needle.label
            print(f"{name} {args.method} test needles, {variant}: accuracy {right / 40:.3f}", file=sys.stderr)


def cmd_refit(args) -> None:
    """Fit the parts set after training (the mix, the temperature) again with today's code, into
    a copy of the run: `--method hdc-default --into hdc-default-refit`."""
    import shutil

    from hdc.train.recipe import refit

    for name in _tasks(args.tasks):
        out = OUT / name
        shutil.copytree(out / args.method, out / args.into)
        summary = refit(out / args.into, out / "train.jsonl", out / "valid.jsonl")
        print(f"{name} {args.into}: {json.dumps(summary['fitted_after_training'])}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("data", "baselines", "train", "run", "seeds", "worker", "swap", "refit"):
        p = sub.add_parser(command)
        p.add_argument("--tasks", help=f"comma-separated; default {','.join(SUITE)} (held out: {HELD_OUT})")
    sub.choices["train"].add_argument("--recipe", choices=sorted(RECIPES), default="needle-yaml")
    sub.choices["train"].add_argument(
        "--seed", type=int, help="train.seed (the default's is 13); the run is hdc-<recipe>-seed<N>"
    )
    sub.choices["run"].add_argument("--lengths")
    sub.choices["run"].add_argument("--methods", default="rule,svm,hdc-needle-yaml")
    sub.choices["run"].add_argument("--docs", type=int)
    sub.choices["run"].add_argument("--threads", type=int, default=2)
    sub.choices["seeds"].add_argument("--methods", default="hdc-default")
    sub.choices["seeds"].add_argument("--seeds", default="13,2,3", help="13: the run without --seed")
    sub.choices["swap"].add_argument("--method", default="hdc-needle-yaml")
    sub.choices["refit"].add_argument("--method", default="hdc-default")
    sub.choices["refit"].add_argument("--into", required=True, help="the copy's name, e.g. hdc-default-refit")
    w = sub.choices["worker"]
    w.add_argument("--method", required=True)
    w.add_argument("--tokens", type=int, required=True)
    w.add_argument("--docs", type=int, required=True)
    w.add_argument("--threads", type=int, default=2)
    w.add_argument("--result", required=True)
    args = parser.parse_args()
    if args.command == "worker":
        result = worker(args.tasks, args.method, args.tokens, args.docs, args.threads)
        Path(args.result).write_text(json.dumps(result))
    else:
        commands = {
            "data": cmd_data,
            "baselines": cmd_baselines,
            "train": cmd_train,
            "run": cmd_run,
            "seeds": cmd_seeds,
            "swap": cmd_swap,
            "refit": cmd_refit,
        }
        commands[args.command](args)


if __name__ == "__main__":
    main()
