"""Classification metrics with scikit-learn, for validation during training and for `hdc evaluate`.
Predictions come from hdc.schema.decide."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def scores(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str] | tuple[str, ...], multilabel: bool) -> dict:
    """N, accuracy (exact match for multi-label), macro/micro F1 and a per-class table."""
    kwargs = {} if multilabel else {"labels": list(range(len(labels)))}
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, zero_division=0, **kwargs)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0, **kwargs)),
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0, **kwargs)),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
    }


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    return confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))


def expected_calibration_error(
    probabilities: np.ndarray, y_true: np.ndarray, multilabel: bool, bins: int = 15
) -> float:
    """How far the probabilities are from the frequencies they claim: the predictions are put
    in `bins` equal-width bins of confidence, and ECE = sum over bins of (share of predictions) x
    |accuracy - mean confidence|. Single-label: each document's top class; multi-label: every
    (document, label) pair, its probability against whether the label is there."""
    if multilabel:
        confidence, correct = probabilities.ravel(), y_true.ravel().astype(float)
    else:
        confidence, correct = probabilities.max(-1), (probabilities.argmax(-1) == y_true).astype(float)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)
