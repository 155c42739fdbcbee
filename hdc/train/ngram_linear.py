"""The n-gram branch's fixed parts: the IDF weight of each bucket, from the training split, and
the linear classifier fitted to the n-gram bags once training is done (model.ngram_linear)."""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.special import log_softmax
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.svm import LinearSVC

from ..checkpoint import model_from_checkpoint, read_checkpoint, store_weights
from ..config import InferenceConfig
from ..io import atomic_open
from ..metrics import scores
from ..model import LOG_TF, HierarchicalClassifier, ngram_weights
from ..schema import ModelInfo, decide, logits_to_probabilities
from ..text import Segments, ngram_bag
from .batches import DocumentData, EncodedDocuments, bag_ngrams, collate_examples
from .module import uneven


def ngram_idf(segments: list[Segments], rows: int, min_df: int = 1) -> np.ndarray:
    """[rows] smoothed inverse document frequency of each n-gram bucket, as scikit-learn's
    TfidfVectorizer computes it: ln((1 + N) / (1 + df)) + 1. Row 0 (padding) and buckets in fewer
    than min_df documents get 0."""
    df = np.zeros(rows, np.int64)
    for s in segments:
        df[np.unique(s.ngrams)] += 1
    idf = np.log((1 + len(segments)) / (1 + df)) + 1
    idf[df < min_df] = 0.0
    idf[0] = 0.0
    return idf.astype(np.float32)


def ngram_matrix(segments: list[Segments], idf: torch.Tensor, tf: str, word_weight: float = 1.0, words_from: int = 0):
    """[N, G] scipy CSR: each document's n-gram bag, weighted as the model weighs it with this TF
    (a name in LOG_TF) and word weight (model.ngram_weights)."""
    indptr, indices, values = [0], [], []
    for s in segments:
        ids, counts = ngram_bag(s.ngrams[None])
        ids, counts = torch.from_numpy(ids), torch.from_numpy(counts)
        weights = ngram_weights(ids, counts, idf, LOG_TF[tf], word_weight, words_from)[0].numpy()
        keep = weights > 0
        indices.append(ids[0].numpy()[keep])
        values.append(weights[keep])
        indptr.append(indptr[-1] + int(keep.sum()))
    return csr_matrix((np.concatenate(values), np.concatenate(indices), indptr), shape=(len(segments), len(idf)))


def fit_linear(features, targets: np.ndarray, num_classes: int, multilabel: bool, c: float, balanced: bool = False):
    """A LinearSVC's weights [F, C] and biases [C], one column per class: one-vs-rest, as
    scikit-learn fits several classes. Two classes give one decision function: it goes to class 1."""
    weights = np.zeros((features.shape[1], num_classes), np.float32)
    bias = np.zeros(num_classes, np.float32)
    columns = [targets[:, j] for j in range(num_classes)] if multilabel else [targets]
    for j, y in enumerate(columns):
        if len(np.unique(y)) < 2:  # a label on every document or on none: nothing to separate,
            bias[j] = 1.0 if y[0] else -1.0  # so it is given to every document or to none
            continue
        weighting = "balanced" if balanced else None
        # random_state: liblinear visits the documents in a random order; fixed, so a fit on its own repeats
        svm = LinearSVC(C=c, dual=True, max_iter=5000, class_weight=weighting, random_state=0).fit(features, y)
        rows = slice(j, j + 1) if multilabel else slice(num_classes - len(svm.coef_), num_classes)
        weights[:, rows], bias[rows] = svm.coef_.T, svm.intercept_
    return weights, bias


def fit_after_training(
    checkpoint_path: Path, data: DocumentData, info: ModelInfo, bags: DocumentData | None = None
) -> dict:
    """What is fitted once the network is trained, stored in the checkpoint:

    - the n-gram linear classifier (model.ngram_linear), on the n-gram bags of `bags` (the same
      documents as `data`, read further: data.fit_max_tokens; default `data`). With validation
      data, every (weight of the network's logits, TF, C, class weights, scale) of the config is
      scored there and the best kept (the first in the config's order on a tie), then the word
      n-grams' weight with it: the data decides the mix, and a network that does not help gets
      weight 0. Single-label, with fewer validation documents than train.linear_cv_below, the
      classifier's own TF, word weight, C and class weights are chosen first by
      cross-validation on the training documents (cross_validate_linear), and validation scores
      only the weight and scale. Multi-label, each label's threshold on the chosen classifier's
      scores, and its C, come from cross-validation on the training documents
      (label_thresholds, train.threshold_folds); the thresholds go into its bias;
    - the temperature of a single-label model's logits, which makes the validation log-loss
      least (with at least CALIBRATION_DOCUMENTS validation documents; else 1)."""
    start = time.perf_counter()
    checkpoint = read_checkpoint(checkpoint_path)
    model, _ = model_from_checkpoint(checkpoint, checkpoint_path)
    # From the network as training left it, so that fitting a fitted checkpoint again gives the same
    model.set(deep_scale=1.0, temperature=1.0)
    if model.config.ngram_linear:
        model.set(ngram_linear=0.0, ngram_linear_bias=0.0)
    validate = len(data.valid_set) > 0
    # The network's alone (no linear part yet), on validation documents as training cut them:
    # the network never read further, and a whole long document would not fit in one batch.
    logits = _logits(model, data.valid_set) if validate else None
    result: dict = {}
    if model.config.ngram_linear:
        mix, result, logits = _fit_linear_mix(model, bags or data, info, logits)
        result |= mix
    deep = result.get("deep_weight", 1.0)
    temperature = 1.0
    if validate and not info.multilabel and len(data.valid_set) >= CALIBRATION_DOCUMENTS:
        temperature = fit_temperature(logits, data.valid_set.targets)
    model.set(deep_scale=deep, temperature=temperature)
    store_weights(checkpoint, model)
    with atomic_open(checkpoint_path, "wb") as f:
        torch.save(checkpoint, f)
    return result | {"temperature": round(temperature, 4), "seconds": round(time.perf_counter() - start, 1)}


CALIBRATION_DOCUMENTS = 30  # fewer validation documents than this fit a temperature by chance


def _fit_linear_mix(model, data: DocumentData, info: ModelInfo, logits):
    """Fit the linear classifier, choose (deep weight, TF, word weight, C, class weights, scale)
    on validation, and (multi-label) its labels' thresholds and C again, by cross-validation on
    train, kept where validation does not score them lower; set it in the model. The word weight
    is chosen last: the other settings at the first word weight, then other word weights with the
    best of them (walk_outward; trying every combination would fit a classifier several times
    over). With fewer validation documents than train.linear_cv_below (single-label), the linear
    classifier's own (TF, word weight, C, class weights) come from cross-validation on train
    first, and validation chooses only the deep weight and scale. Returns the choice (C None and
    scale 0: no linear classifier), the scores before and after (and the thresholds, or the
    cross-validated macro-F1), and the mixed validation logits."""
    t, labels, multilabel = info.config.train, info.labels, info.multilabel
    words_from = model.config.ngram_words_from
    word_weights = t.ngram_linear_word_weight if words_from else t.ngram_linear_word_weight[:1]
    weightings = [w for w in t.ngram_linear_class_weight if w == "none" or uneven(data.train_set.targets, multilabel)]
    # The linear classifier's own settings (TF, word weight, C, class weights), in the config's
    # order: the first wins a tie.
    first = word_weights[0]
    settings = [
        (tf, first, c, w) for tf in t.ngram_linear_tf for c in t.ngram_linear_c for w in weightings or [t.class_weight]
    ]
    result = {}
    fixed = (t.ngram_linear_tf[0], first, _middle(t.ngram_linear_c), t.class_weight)  # without validation
    # A few hundred validation documents choose among dozens of mixes by chance as much as by
    # merit; the training split, cross-validated, is a larger sample for the linear part's own.
    cross_validating = not multilabel and len(data.valid_set) < t.linear_cv_below and len(settings) > 1
    if logits is None and not cross_validating:
        settings = [fixed]

    @functools.cache
    def train_x(tf: str, word_weight: float):
        return ngram_matrix(data.train_set.segments, model.ngram_idf, tf, word_weight, words_from)

    open_word_weights = word_weights  # those validation is still to choose among, the first tried already
    if cross_validating:
        targets, seed = data.train_set.targets, t.seed
        cross_validated = cross_validate_linear(train_x, targets, len(labels), settings, seed)
        if cross_validated is not None and len(word_weights) > 1:
            # The other word weights with the winner; the first's folds are already scored, and it wins a tie.
            others = [_with_word_weight(cross_validated[0], word_weight) for word_weight in word_weights[1:]]
            better = cross_validate_linear(train_x, targets, len(labels), others, seed)
            cross_validated = better if better[1] > cross_validated[1] else cross_validated
        if cross_validated is not None:
            setting, score = cross_validated
            settings, open_word_weights, result["linear_cv_macro_f1"] = [setting], word_weights[:1], round(score, 4)
        elif logits is None:
            settings = [fixed]
    mixes = len(t.deep_weights) * len(settings) * len(t.ngram_linear_scale)
    validating = logits is not None and (mixes > 1 or len(open_word_weights) > 1)

    def fit(key: tuple[str, float, float, str]):
        tf, word_weight, c, w = key
        return fit_linear(train_x(tf, word_weight), data.train_set.targets, len(labels), multilabel, c, w == "balanced")

    fits = {}

    def fit_all(keys: list[tuple]) -> None:
        # liblinear lets go of the GIL, so the fits run side by side (on 20 Newsgroups the fit
        # after training took 312 s with its six fits in a row). Its solver draws from C's one
        # rand(), so fits that overlap can visit documents in other orders: weights agree to
        # about 1e-5.
        todo = sorted(set(keys) - set(fits), key=str)
        for key in dict.fromkeys(key[:2] for key in todo):
            train_x(*key)  # here, not in the pool's threads, which would each compute it
        _progress(f"linear classifier: {len(todo)} fits on {len(data.train_set)} training documents")
        fits.update(_run_all(fit, todo, "linear fit", _describe))

    fit_all(settings if validating else settings[:1])
    if validating:
        targets = data.valid_set.targets

        @functools.cache
        def valid_x(tf: str, word_weight: float):
            return ngram_matrix(data.valid_set.segments, model.ngram_idf, tf, word_weight, words_from)

        def macro_f1(z: np.ndarray) -> float:
            predicted = decide(logits_to_probabilities(z, multilabel), multilabel, InferenceConfig().threshold)
            return scores(targets, predicted, labels, multilabel)["macro_f1"]

        mixed = {}

        def score_mixes(settings: list[tuple]) -> list[tuple[float, tuple]]:
            """(validation macro-F1, mix) of each deep weight x setting x scale, in that order."""
            linear = {s: valid_x(*s[:2]) @ fits[s][0] + fits[s][1] for s in settings}
            out = []
            for d in t.deep_weights:
                for s in settings:
                    for scale in t.ngram_linear_scale:
                        mixed[d, s, scale] = z = d * logits + scale * linear[s]
                        out.append((macro_f1(z), (d, *s, scale)))
            return out

        result["valid_macro_f1_before"] = macro_f1(logits)
        scored = score_mixes(settings)
        if len(open_word_weights) > 1:
            score, best = max(scored, key=lambda item: item[0])  # max keeps the first of equal items

            def score_round(word_weights: list[float]) -> dict[float, float]:
                keys = [_with_word_weight(best[1:5], word_weight) for word_weight in word_weights]
                fit_all(keys)
                found = {}
                for word_weight, key in zip(word_weights, keys):
                    mixes = score_mixes([key])
                    scored.extend(mixes)
                    found[word_weight] = max(f1 for f1, _ in mixes)
                return found

            # On 20 Newsgroups a fit at C = 10 takes two minutes, and its best word weight is 1.
            walk_outward(sorted(open_word_weights), best[2], score, score_round)
        result["valid_macro_f1_after"], choice = choose_mix(result["valid_macro_f1_before"], scored)
        if choice == NETWORK_ALONE:  # ngram_linear stays zero
            return dict(zip(MIX_KEYS, choice)), result, logits
        network, logits = logits, mixed[choice[0], choice[1:5], choice[5]]
    else:
        choice = (t.deep_weights[0], *settings[0], _middle(t.ngram_linear_scale))
    d, tf, word_weight, c, w, scale = choice
    weights, bias = fits[tf, word_weight, c, w]
    if multilabel and t.threshold_folds:
        # C is chosen again with the thresholds, by the same cross-validation: validation chose
        # it with every threshold at 0, where the C that ranks documents best may not score best.
        cs = (c, *(x for x in t.ngram_linear_c if x != c))  # validation's C first: it wins a tie
        cv_c, thresholds = label_thresholds(
            train_x(tf, word_weight), data.train_set.targets, cs, w == "balanced", t.threshold_folds, t.seed
        )
        cv_key = (tf, word_weight, cv_c, w)
        cv_weights, cv_bias = fits[cv_key] if cv_key in fits else fit(cv_key)
        cv_bias = cv_bias - thresholds
        keep = True
        if validating:
            # The network's weight and the scale are chosen again with the thresholds in place.
            # Chosen with every threshold at 0, a network that puts rare labels over 0 wins
            # there; the thresholds do that for the linear part too, and may then do it better
            # alone (CUAD with a class-balanced network: validation 0.640-0.690 for the mix
            # chosen at 0, where the thresholded linear part alone scored about 0.70).
            linear = valid_x(tf, word_weight) @ cv_weights + cv_bias
            shifted_f1, d2, scale2 = rechoose(
                macro_f1, network, linear, (d, scale), t.deep_weights, t.ngram_linear_scale
            )
            keep = shifted_f1 >= result["valid_macro_f1_after"]
            if keep:
                result["valid_macro_f1_after"], logits = shifted_f1, d2 * network + scale2 * linear
                d, scale = d2, scale2
        if keep:
            c, weights, bias = cv_c, cv_weights, cv_bias
            choice = (d, tf, word_weight, c, w, scale)
            result["thresholds"] = {label: round(float(x), 3) for label, x in zip(labels, thresholds)}
    model.set(
        ngram_linear=torch.from_numpy(scale * weights),
        ngram_linear_bias=torch.from_numpy(scale * bias),
        ngram_linear_log_tf=LOG_TF[tf],
        ngram_linear_word_weight=word_weight,
    )
    return dict(zip(MIX_KEYS, choice)), result, logits


def walk_outward(grid: list[float], start: float, start_score: float, score_round) -> list[float]:
    """The values of the sorted `grid` tried outward from `start` (which scored start_score),
    both ways at once, each way only while a step scores more than the step before it.
    score_round(values) -> {value: score} scores one round's values (one or two, to be fitted
    side by side). Returns the values tried, in order."""
    ends = {step: (grid.index(start), start_score) for step in (-1, 1)}  # each way's last place and score
    tried = []
    while ends:
        places = {step: at + step for step, (at, _) in ends.items() if 0 <= at + step < len(grid)}
        found = score_round([grid[at] for at in places.values()]) if places else {}
        tried += [grid[at] for at in places.values()]
        ends = {step: (at, found[grid[at]]) for step, at in places.items() if found[grid[at]] > ends[step][1]}
    return tried


def _with_word_weight(setting: tuple[str, float, float, str], word_weight: float) -> tuple[str, float, float, str]:
    """The linear classifier's setting (TF, word weight, C, class weights) at another word weight."""
    tf, _, c, w = setting
    return tf, word_weight, c, w


CV_FOLDS = 5  # the folds of cross_validate_linear


def cross_validate_linear(
    features: Callable[[str, float], csr_matrix],
    targets: np.ndarray,
    num_classes: int,
    settings: list[tuple],
    seed: int,
) -> tuple[tuple[str, float, float, str], float] | None:
    """The (TF, word weight, C, class weights) of `settings` whose out-of-fold predictions score
    the best macro-F1 in a stratified CV_FOLDS-fold cross-validation of fit_linear on these
    (single-label) documents, the first on a tie, and that score (unrounded). features(TF, word
    weight) gives the documents' [N, G] matrix. Fewer folds where a class has fewer documents
    than CV_FOLDS; None where one has fewer than 2."""
    counts = np.bincount(targets, minlength=num_classes)
    folds = min(CV_FOLDS, int(counts[counts > 0].min()))
    if folds < 2:
        return None
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(targets)), targets))

    x = {setting[:2]: features(*setting[:2]) for setting in settings}  # here, not in the folds' threads

    def fold(setting: tuple[str, float, float, str], fitted: np.ndarray, held: np.ndarray) -> np.ndarray:
        _, _, c, w = setting
        weights, bias = fit_linear(x[setting[:2]][fitted], targets[fitted], num_classes, False, c, w == "balanced")
        return x[setting[:2]][held] @ weights + bias

    _progress(f"linear classifier: {folds}-fold cross-validation of {len(settings)} settings on the training split")
    held_out = out_of_fold_scores(fold, settings, splits, len(targets), _describe)
    predicted = {setting: held_out[setting].argmax(1) for setting in settings}
    names = [str(i) for i in range(num_classes)]
    scored = [(scores(targets, predicted[s], names, False)["macro_f1"], s) for s in settings]
    best = max(scored, key=lambda item: item[0])  # max keeps the first of equal items
    return best[1], best[0]


# Where a label's threshold is sought: a LinearSVC's scores put its margins at -1 and 1.
THRESHOLD_GRID = np.linspace(-1.0, 1.0, 41)


def label_thresholds(
    features, targets: np.ndarray, cs: tuple[float, ...], balanced: bool, folds: int, seed: int
) -> tuple[float, np.ndarray]:
    """The C of `cs` and [L] each label's threshold on the multi-label linear classifier's
    scores that score best by a `folds`-fold cross-validation of fit_linear on these documents:
    for each C, each label's threshold is the point of THRESHOLD_GRID where its out-of-fold
    scores give it the best F1 (the middle of several that tie), and the C kept is the one whose
    mean of those F1s is highest (the first on a tie). Thresholds 0 for a label on every
    document or on none; (cs[0], all 0) where the documents are fewer than the folds."""
    n, num_labels = targets.shape
    if n < folds:
        return cs[0], np.zeros(num_labels, np.float32)
    splits = list(KFold(folds, shuffle=True, random_state=seed).split(np.zeros(n)))

    def fold(c: float, fitted: np.ndarray, held: np.ndarray) -> np.ndarray:
        weights, bias = fit_linear(features[fitted], targets[fitted], num_labels, True, c, balanced)
        return features[held] @ weights + bias

    _progress(f"label thresholds: {folds}-fold cross-validation of C {', '.join(f'{c:g}' for c in cs)}")
    held_out = out_of_fold_scores(fold, cs, splits, n, lambda c: f"C={c:g}")
    best = None
    for c in cs:
        thresholds, f1s = np.zeros(num_labels, np.float32), []
        for j in range(num_labels):
            positive = targets[:, j].astype(bool)
            if positive.all() or not positive.any():
                continue
            predicted = held_out[c][:, j, None] >= THRESHOLD_GRID  # [N, G]
            true_positives = (predicted & positive[:, None]).sum(0)
            f1 = 2 * true_positives / (positive.sum() + predicted.sum(0))  # [G]
            thresholds[j] = np.median(THRESHOLD_GRID[f1 >= f1.max() - 1e-9])
            f1s.append(f1.max())
        score = float(np.mean(f1s)) if f1s else 0.0
        if best is None or score > best[0]:
            best = (score, c, thresholds)
    return best[1], best[2]


def out_of_fold_scores(fold, settings: list, splits: list, n: int, describe) -> dict:
    """{setting: [N, C] each of the n documents' scores from fold(setting, fitted, held), the fit
    of that setting on the folds that do not hold it}, for every setting and split."""
    held_out = {}
    tasks = [(setting, *split) for setting in settings for split in splits]
    for (setting, _, held), scored in _run_all(
        lambda task: fold(*task), tasks, "cross-validation fit", lambda task: describe(task[0])
    ):
        held_out.setdefault(setting, np.zeros((n, scored.shape[1]), np.float32))[held] = scored
    return held_out


def _run_all(work, tasks: list, name: str, describe) -> list:
    """[(task, work(task))] for every task, run on every core (liblinear lets go of the GIL), with
    a line on stderr as each one ends: on a large corpus the fit after training takes minutes."""
    start, done = time.perf_counter(), []
    with ThreadPoolExecutor(min(len(tasks), os.cpu_count() or 1)) as pool:
        futures = {pool.submit(work, task): task for task in tasks}
        for future in as_completed(futures):
            done.append((futures[future], future.result()))
            task = describe(futures[future])
            _progress(f"  {name} {len(done)}/{len(tasks)} ({task}) done at {time.perf_counter() - start:.0f} s")
    return done


def _describe(key: tuple[str, float, float, str]) -> str:
    tf, word_weight, c, w = key
    return f"{tf} TF, word weight {word_weight:g}, C={c:g}, class weights {w}"


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _middle(values: tuple[float, ...]) -> float:
    return values[len(values) // 2]


MIX_KEYS = ("deep_weight", "tf", "word_weight", "c", "class_weight", "scale")  # a mix's tuple, as the summary names it
NETWORK_ALONE = (1.0, None, None, None, None, 0.0)  # the mix with no linear classifier


def choose_mix(alone: float, scored: list[tuple[float, tuple]]) -> tuple[float, tuple]:
    """The (validation score, mix) scored best, the first on a tie. The network alone scored
    `alone`; it is chosen (NETWORK_ALONE) only where it beats every mix, so that the choice never
    ends below what validation saw before mixing."""
    best = max(scored, key=lambda item: item[0])  # max keeps the first of equal items
    return best if best[0] >= alone else (alone, NETWORK_ALONE)


def rechoose(score, network: np.ndarray, linear: np.ndarray, first: tuple[float, float], deep_weights, scales):
    """(score, deep weight, scale) of the best mix deep weight × network + scale × linear: the
    pair `first`, or any of deep_weights × scales that scores more."""
    pairs = [first] + [(d, s) for d in deep_weights for s in scales]
    return max(((score(d * network + s * linear), d, s) for d, s in pairs), key=lambda item: item[0])


# The temperatures fit_temperature tries: a log grid, 241 points from 0.05 to 20.
TEMPERATURES = np.exp(np.linspace(np.log(0.05), np.log(20.0), 241))


def smoothed_targets(targets: np.ndarray, classes: int) -> np.ndarray:
    """[N, C] targets smoothed by the rule of succession: of n documents, the true class gets
    1 - 1/(n + 2) and the other classes share the rest."""
    n = len(targets)
    rest = 1.0 / (n + 2)
    soft = np.full((n, classes), rest / max(classes - 1, 1))
    soft[np.arange(n), targets] = 1.0 - rest
    return soft


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The T of TEMPERATURES whose softmax(logits / T) gives the least log-loss on validation,
    against smoothed_targets.

    Against one-hot targets a validation split with no error has no best T: the loss falls for
    ever as T shrinks, and the fit went to the grid's end (T = 0.05 on the long-document suite's
    deadline task, bench/RESULTS.md), which gives p = 1.000 to any document, one unlike anything
    in training included. Smoothed, the split's mean confidence ends near 1 - 1/(n + 2), the
    accuracy that n right answers out of n support."""
    soft = smoothed_targets(targets, logits.shape[1])
    losses = [-(soft * log_softmax(logits / T, axis=1)).sum(1).mean() for T in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(losses))])


@torch.no_grad()
def _logits(model: HierarchicalClassifier, dataset: EncodedDocuments, batch: int = 16) -> np.ndarray:
    """[N, C] the model's logits for every document of `dataset`, in its order."""
    model.eval()
    out = []
    for start in range(0, len(dataset), batch):
        inputs, _ = collate_examples([dataset[i] for i in range(start, min(start + batch, len(dataset)))])
        out.append(model(**bag_ngrams(inputs)).numpy())
    return np.concatenate(out)
