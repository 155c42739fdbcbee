"""Metrics: scikit-learn's, with every class in the table even when it is never predicted."""

import numpy as np

from hdc.metrics import confusion, scores


def test_single_label_scores_list_every_class():
    result = scores(np.array([0, 1, 1, 2]), np.array([0, 1, 0, 0]), ["a", "b", "c"], multilabel=False)
    assert result["n"] == 4 and result["accuracy"] == 0.5
    assert set(result["per_class"]) == {"a", "b", "c"} and result["per_class"]["c"]["f1"] == 0.0
    assert abs(result["macro_f1"] - np.mean([0.5, 2 / 3, 0.0])) < 1e-9


def test_multilabel_accuracy_is_exact_match():
    truth = np.array([[1, 0], [1, 1]])
    result = scores(truth, np.array([[1, 0], [1, 0]]), ["a", "b"], multilabel=True)
    assert result["accuracy"] == 0.5 and result["per_class"]["b"]["recall"] == 0.0


def test_confusion_counts_true_by_predicted():
    assert confusion(np.array([0, 1, 1]), np.array([0, 0, 1]), 3).tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_not():
    from hdc.metrics import expected_calibration_error

    y = np.array([0, 0, 0, 1])  # 3 of 4 right at confidence 0.75: calibrated
    p = np.array([[0.75, 0.25]] * 4)
    assert expected_calibration_error(p, y, multilabel=False) < 1e-9
    overconfident = np.array([[0.99, 0.01]] * 4)
    assert abs(expected_calibration_error(overconfident, y, multilabel=False) - 0.24) < 1e-9
    assert expected_calibration_error(np.array([[0.9, 0.1]]), np.array([[1, 0]]), multilabel=True) > 0
