"""How the fit after training should choose its mix: rules compared on validation alone.

    python bench/mix_choice.py dump --runs news/hdc-base-seed1,bundestag/hdc-base-seed1   # once a run
    python bench/mix_choice.py compare --runs news/hdc-base-seed1,... [--store]

The fit after training (hdc/train/ngram_linear.py) scores every candidate mix (the network's
weight, the linear classifier's TF, C and class weights, its scale) on the validation split and
keeps the best. Which score should it use? Each rule is judged without the test split: the
validation documents are cut in two halves (stratified, SPLITS times, seeded), a rule chooses on
one half and the choice is scored (macro-F1) on the other. The rule whose choices score best on
the halves they never saw wins. The rules: the most macro-F1 (the fit's rule), the most
accuracy, the least log-loss, the least log-loss at the best temperature (fit_temperature's), the same
with each class weighing alike, the macro-F1 of the probabilities at that temperature, and the
most macro-F1 with ties broken by that log-loss.

`dump` computes, for a finished run of bench/accuracy.py (bench/out/accuracy/<corpus>/<run>), what
every rule needs: the network's validation logits with no linear part, and each linear setting's
validation scores, fitted on train as the fit after training fits them. `compare` applies the rules.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.special import log_softmax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import commit, machine, today, update_results  # noqa: E402

from hdc.train.ngram_linear import TEMPERATURES, smoothed_targets  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "bench" / "out" / "accuracy"
CORPORA = ROOT / "bench" / "out" / "corpora"
OUT = ROOT / "bench" / "out" / "mix_choice"
SPLITS = 200


def cmd_dump(args) -> None:
    from hdc.checkpoint import model_from_checkpoint, read_checkpoint
    from hdc.schema import RunLayout
    from hdc.train.ngram_linear import _logits, _run_all, fit_linear, ngram_matrix
    from hdc.train.recipe import read_as_trained

    OUT.mkdir(parents=True, exist_ok=True)
    for name in args.runs.split(","):
        corpus, run_name = name.split("/")
        run = RunLayout(RUNS / corpus / run_name)
        model, info = model_from_checkpoint(read_checkpoint(run.best), run.best)
        t = info.config.train
        data, bags = read_as_trained(info, *(CORPORA / corpus / f"{s}.jsonl" for s in ("train", "valid")))
        model.set(deep_scale=1.0, temperature=1.0, ngram_linear=0.0, ngram_linear_bias=0.0)
        network = _logits(model, data.valid_set)
        settings = [
            (tf, c, w) for tf in t.ngram_linear_tf for c in t.ngram_linear_c for w in t.ngram_linear_class_weight
        ]
        train_x = {tf: ngram_matrix(bags.train_set.segments, model.ngram_idf, tf) for tf in t.ngram_linear_tf}
        valid_x = {tf: ngram_matrix(bags.valid_set.segments, model.ngram_idf, tf) for tf in t.ngram_linear_tf}
        y = bags.train_set.targets

        def fit(setting, y=y, train_x=train_x, valid_x=valid_x, classes=len(info.labels)):
            tf, c, w = setting
            weights, bias = fit_linear(train_x[tf], y, classes, False, c, w == "balanced")
            return valid_x[tf] @ weights + bias

        linear = dict(_run_all(fit, settings, "fit", str))
        np.savez(
            OUT / f"{corpus}-{run_name}.npz",
            network=network,
            targets=data.valid_set.targets,
            settings=np.array([json.dumps(s) for s in settings]),
            linear=np.stack([linear[s] for s in settings]),
        )
        print(f"{name}: {len(settings)} settings, {len(network)} validation documents", file=sys.stderr)


def _macro_f1(z: np.ndarray, y: np.ndarray, classes: int) -> float:
    """Macro-F1 of argmax(z) over the classes present in y. Not hdc.metrics.scores: a compare
    calls this about 200,000 times, where scikit-learn's would add minutes."""
    predicted = z.argmax(1)
    f1 = []
    for k in range(classes):
        tp = np.sum((predicted == k) & (y == k))
        n = np.sum(predicted == k) + np.sum(y == k)
        if np.sum(y == k):  # classes absent from this half are left out, as scikit-learn's labels= would not
            f1.append(2 * tp / n if n else 0.0)
    return float(np.mean(f1))


def _measures(z: np.ndarray, y: np.ndarray, classes: int) -> dict:
    """What the rules look at, for one candidate's logits z [N, C] on the choosing half."""
    n = len(y)
    soft = smoothed_targets(y, classes)  # as fit_temperature smooths them
    scaled = z[None] / TEMPERATURES[:, None, None]  # [T, N, C]
    per_document = -(soft * log_softmax(scaled, axis=2)).sum(2)  # [T, N]
    weight = 1.0 / np.bincount(y, minlength=classes)[y]
    best = int(per_document.mean(1).argmin())
    p = np.exp(log_softmax(scaled[best], axis=1))  # at the best temperature
    onehot = np.eye(classes)[y]
    present = onehot.sum(0) > 0
    soft_f1 = (2 * (p * onehot).sum(0) / (p.sum(0) + onehot.sum(0)))[present].mean()
    return {
        "macro_f1": _macro_f1(z, y, classes),
        "accuracy": float(np.mean(z.argmax(1) == y)),
        "log_loss": float(-log_softmax(z, 1)[np.arange(n), y].mean()),
        "log_loss_T": float(per_document.mean(1)[best]),  # the loss at fit_temperature's T
        "class_log_loss_T": float((per_document @ (weight / weight.sum())).min()),
        "soft_macro_f1_T": float(soft_f1),
    }


# A rule maps a candidate's measures on the choosing half to a key; the candidate of the lowest
# key is kept, the first of equal keys.
RULES = {
    "macro_f1": lambda m: -m["macro_f1"],  # the fit's rule
    "accuracy": lambda m: -m["accuracy"],
    "log_loss": lambda m: m["log_loss"],
    "log_loss_T": lambda m: m["log_loss_T"],  # the log-loss at the best temperature, as fit_temperature scores it
    "class_log_loss_T": lambda m: m["class_log_loss_T"],  # each class's documents weighing alike
    "soft_macro_f1_T": lambda m: -m["soft_macro_f1_T"],  # macro-F1 of the probabilities at the best T
    "macro_f1_then_log_loss_T": lambda m: (-m["macro_f1"], m["log_loss_T"]),  # ties broken by log-loss
}


def candidates(dump) -> tuple[list[str], np.ndarray]:
    """The fit's candidates in its order (network weight outer, then the linear settings, then
    the scale) and the network alone last: names and [M, N, C] logits."""
    from hdc.config import TrainConfig

    t = TrainConfig()
    names, logits = [], []
    for d in t.deep_weights:
        for s, linear in zip(dump["settings"], dump["linear"]):
            for scale in t.ngram_linear_scale:
                names.append(f"d={d:g} {' '.join(map(str, json.loads(s)))} scale={scale:g}")
                logits.append(d * dump["network"] + scale * linear)
    names.append("network alone")
    logits.append(dump["network"])
    return names, np.stack(logits)


def cmd_compare(args) -> None:
    from sklearn.model_selection import StratifiedShuffleSplit

    table = {}
    for name in args.runs.split(","):
        corpus, run_name = name.split("/")
        dump = np.load(OUT / f"{corpus}-{run_name}.npz")
        names, z = candidates(dump)
        y, classes = dump["targets"], z.shape[2]
        # classes with a single validation document cannot be cut in two: they stay in both halves' pool
        halves = StratifiedShuffleSplit(SPLITS, test_size=0.5, random_state=0)
        keep = np.isin(y, np.flatnonzero(np.bincount(y, minlength=classes) >= 2))
        index = np.flatnonzero(keep)
        held = {rule: [] for rule in RULES}
        chosen = {rule: [] for rule in RULES}
        for a, b in halves.split(index, y[index]):
            a, b = index[a], index[b]
            measures = [_measures(z[m][a], y[a], classes) for m in range(len(names))]
            for rule, key in RULES.items():
                best = min(range(len(names)), key=lambda m, key=key: key(measures[m]))
                held[rule].append(_macro_f1(z[best][b], y[b], classes))
                chosen[rule].append(names[best])
        row = {}
        for rule in RULES:
            common = max(set(chosen[rule]), key=chosen[rule].count)
            row[rule] = {
                "held_out_macro_f1": round(float(np.mean(held[rule])), 4),
                "most_chosen": common,
                "share": round(chosen[rule].count(common) / SPLITS, 2),
            }
        table[name] = row
        line = "  ".join(f"{rule} {v['held_out_macro_f1']:.4f}" for rule, v in row.items())
        print(f"{name:32} {line}", file=sys.stderr)
    means = {
        rule: round(float(np.mean([row[rule]["held_out_macro_f1"] for row in table.values()])), 4) for rule in RULES
    }
    print(f"{'mean':32} " + "  ".join(f"{rule} {v:.4f}" for rule, v in means.items()), file=sys.stderr)
    if not args.store:
        return
    meta = {"command": "python bench/mix_choice.py " + " ".join(sys.argv[1:]), "date": today(), "machine": machine()}
    update_results("mix_choice", {"runs": table, "mean": means}, meta | {"commit": commit()}, ["runs", "mean"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("dump", "compare"):
        p = sub.add_parser(name)
        p.add_argument("--runs", required=True, help="<corpus>/<run> of bench/out/accuracy, comma-separated")
    p.add_argument("--store", action="store_true", help="write the figures to bench/results.json (mix_choice)")
    args = parser.parse_args()
    {"dump": cmd_dump, "compare": cmd_compare}[args.command](args)


if __name__ == "__main__":
    main()
