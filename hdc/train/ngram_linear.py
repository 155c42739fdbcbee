"""The n-gram branch's fixed parts: the IDF weight of each bucket, from the training split, and
the linear classifier fitted to the n-gram bags once training is done (model.ngram_linear)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from scipy.sparse import csr_matrix
from sklearn.svm import LinearSVC

from ..checkpoint import model_from_checkpoint, read_checkpoint, store_weights
from ..config import InferenceConfig
from ..io import atomic_open
from ..metrics import scores
from ..model import HierarchicalClassifier, ngram_weights
from ..schema import ModelInfo, decide, logits_to_probabilities
from ..text import Segments, ngram_bag
from .batches import DocumentData, EncodedDocuments, bag_ngrams, collate_examples


def ngram_idf(segments: list[Segments], buckets: int, min_df: int = 1) -> np.ndarray:
    """Smoothed inverse document frequency of each n-gram bucket, as scikit-learn's TfidfVectorizer
    computes it: ln((1 + N) / (1 + df)) + 1. Bucket 0 (padding) and buckets in fewer than min_df
    documents get 0."""
    df = np.zeros(buckets + 1, np.int64)
    for s in segments:
        df[np.unique(s.ngrams)] += 1
    idf = np.log((1 + len(segments)) / (1 + df)) + 1
    idf[df < min_df] = 0.0
    idf[0] = 0.0
    return idf.astype(np.float32)


def ngram_matrix(segments: list[Segments], idf: torch.Tensor, tf: str):
    """[N, buckets + 1] scipy CSR: each document's n-gram bag, weighted as the model weighs it."""
    indptr, indices, values = [0], [], []
    for s in segments:
        ids, counts = ngram_bag(s.ngrams[None])
        weights = ngram_weights(torch.from_numpy(ids), torch.from_numpy(counts), idf, tf)[0].numpy()
        keep = weights > 0
        indices.append(ids[0, keep])
        values.append(weights[keep])
        indptr.append(indptr[-1] + int(keep.sum()))
    return csr_matrix((np.concatenate(values), np.concatenate(indices), indptr), shape=(len(segments), len(idf)))


def fit_linear(features, targets: np.ndarray, num_classes: int, multilabel: bool, c: float):
    """A LinearSVC's weights [F, C] and biases [C], one column per class: one-vs-rest, as
    scikit-learn fits several classes. Two classes give one decision function: it goes to class 1."""
    weights = np.zeros((features.shape[1], num_classes), np.float32)
    bias = np.zeros(num_classes, np.float32)
    columns = [targets[:, j] for j in range(num_classes)] if multilabel else [targets]
    for j, y in enumerate(columns):
        if len(np.unique(y)) < 2:  # a label on every document or on none: nothing to separate
            continue
        svm = LinearSVC(C=c, dual=True, max_iter=5000).fit(features, y)
        rows = slice(j, j + 1) if multilabel else slice(num_classes - len(svm.coef_), num_classes)
        weights[:, rows], bias[rows] = svm.coef_.T, svm.intercept_
    return weights, bias


def fit_ngram_linear(checkpoint_path: Path, data: DocumentData, info: ModelInfo) -> dict:
    """Fit the model's n-gram linear classifier (model.ngram_linear) on the training bags and
    store it in the checkpoint. With validation data, every (C, scale) of the config is scored
    there on top of the trained model's logits, and the best pair kept (the first in the
    config's order on a tie)."""
    start = time.perf_counter()
    t, labels, multilabel = info.config.train, info.labels, info.multilabel
    checkpoint = read_checkpoint(checkpoint_path)
    model, _ = model_from_checkpoint(checkpoint, checkpoint_path)
    model.set_ngram_linear(torch.zeros_like(model.ngram_linear), torch.zeros_like(model.ngram_linear_bias))
    train_x = ngram_matrix(data.train_set.segments, model.ngram_idf, model.config.ngram_tf)
    candidates = [(c, scale) for c in t.ngram_linear_c for scale in t.ngram_linear_scale]
    fits = {}
    best, result = None, {}
    if len(data.valid_set) and len(candidates) > 1:
        valid_x = ngram_matrix(data.valid_set.segments, model.ngram_idf, model.config.ngram_tf)
        logits = _logits(model, data.valid_set)
        targets = data.valid_set.targets

        def macro_f1(z: np.ndarray) -> float:
            predicted = decide(logits_to_probabilities(z, multilabel), multilabel, InferenceConfig().threshold)
            return scores(targets, predicted, labels, multilabel)["macro_f1"]

        result["valid_macro_f1_before"] = macro_f1(logits)
        for c, scale in candidates:
            if c not in fits:
                fits[c] = fit_linear(train_x, data.train_set.targets, len(labels), multilabel, c)
            weights, bias = fits[c]
            score = macro_f1(logits + scale * (valid_x @ weights + bias))
            if best is None or score > best[0]:
                best = (score, c, scale)
        result["valid_macro_f1_after"], c, scale = best
    else:
        c, scale = t.ngram_linear_c[len(t.ngram_linear_c) // 2], t.ngram_linear_scale[len(t.ngram_linear_scale) // 2]
    weights, bias = fits.get(c) or fit_linear(train_x, data.train_set.targets, len(labels), multilabel, c)
    model.set_ngram_linear(torch.from_numpy(scale * weights), torch.from_numpy(scale * bias))
    store_weights(checkpoint, model)
    with atomic_open(checkpoint_path, "wb") as f:
        torch.save(checkpoint, f)
    return {"c": c, "scale": scale, **result, "seconds": round(time.perf_counter() - start, 1)}


@torch.no_grad()
def _logits(model: HierarchicalClassifier, dataset: EncodedDocuments, batch: int = 16) -> np.ndarray:
    """[N, C] the model's logits for every document of `dataset`, in its order."""
    model.eval()
    out = []
    for start in range(0, len(dataset), batch):
        inputs, _ = collate_examples([dataset[i] for i in range(start, min(start + batch, len(dataset)))])
        out.append(model(**bag_ngrams(inputs)).numpy())
    return np.concatenate(out)
