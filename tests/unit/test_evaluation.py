"""Evaluation metrics (rule S9) against scikit-learn's own figures, and the plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    top_k_accuracy_score,
)

from trainyard.services.trainer.evaluation import (
    MAX_CURVE_POINTS,
    evaluate_predictions,
    plot_confusion_matrix,
    plot_curves,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def predictions(n_samples: int, n_classes: int, seed: int = 0, skill: float = 2.0):
    """Random but better-than-chance probabilities: the true class gets a boost."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, n_classes, n_samples)
    logits = rng.normal(size=(n_samples, n_classes))
    logits[np.arange(n_samples), y_true] += skill
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y_true, prob


def run(y_true, prob, classes):
    train_counts = {c: 10 * (i + 1) for i, c in enumerate(classes)}
    val_counts = {c: int((np.asarray(y_true) == i).sum()) for i, c in enumerate(classes)}
    ids = [f"img-{i}" for i in range(len(y_true))]
    return evaluate_predictions(
        list(map(int, y_true)), prob, classes, train_counts, val_counts, ids
    )


def test_metrics_equal_scikit_learns():
    classes = [f"class-{i}" for i in range(7)]
    y_true, prob = predictions(400, 7)
    y_pred = prob.argmax(axis=1)
    ev = run(y_true, prob, classes)

    assert ev["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    for average in ("macro", "weighted"):
        assert ev[average]["precision"] == pytest.approx(
            precision_score(y_true, y_pred, average=average)
        )
        assert ev[average]["recall"] == pytest.approx(recall_score(y_true, y_pred, average=average))
        assert ev[average]["f1"] == pytest.approx(f1_score(y_true, y_pred, average=average))
    per_class_precision = precision_score(y_true, y_pred, average=None)
    per_class_recall = recall_score(y_true, y_pred, average=None)
    for i, entry in enumerate(ev["classes"]):
        assert entry["label"] == classes[i]
        assert entry["precision"] == pytest.approx(per_class_precision[i])
        assert entry["recall"] == pytest.approx(per_class_recall[i])
        assert entry["support"] == entry["validation_count"] == int((y_true == i).sum())
        assert entry["train_count"] == 10 * (i + 1)
    assert ev["confusion_matrix"]["labels"] == classes
    assert ev["confusion_matrix"]["matrix"] == confusion_matrix(y_true, y_pred).tolist()
    assert ev["top5_accuracy"] == pytest.approx(top_k_accuracy_score(y_true, prob, k=5))
    assert ev["validation_samples"] == 400


def test_recall_is_not_precision():
    # Class 0 is predicted for everything: precision 0.5, recall 1; class 1 never predicted.
    prob = np.array([[0.9, 0.1]] * 4)
    ev = run([0, 0, 1, 1], prob, ["a", "b"])
    a, b = ev["classes"]
    assert (a["precision"], a["recall"]) == (0.5, 1.0)
    assert (b["precision"], b["recall"], b["f1"]) == (0.0, 0.0, 0.0)  # zero_division=0
    assert ev["macro"]["recall"] == 0.5
    assert ev["top5_accuracy"] is None  # only 2 classes


def test_classes_absent_from_validation_still_get_a_row():
    prob = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1]])
    ev = run([0, 1], prob, ["a", "b", "c"])
    assert [c["support"] for c in ev["classes"]] == [1, 1, 0]
    assert ev["confusion_matrix"]["matrix"] == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
    assert ev["pr_curves"][2]["average_precision"] is None


def test_misclassified_samples_are_listed_most_confident_first():
    prob = np.array([[0.6, 0.4], [0.1, 0.9], [0.95, 0.05], [0.3, 0.7]])
    ev = run([1, 1, 1, 0], prob, ["cat", "dog"])
    assert ev["misclassified_total"] == 3
    assert [m["image_id"] for m in ev["misclassified"]] == ["img-2", "img-3", "img-0"]
    assert ev["misclassified"][0] == {
        "image_id": "img-2",
        "true": "dog",
        "predicted": "cat",
        "confidence": 0.95,
    }


def test_precision_recall_curves_are_short_and_find_the_best_threshold():
    classes = ["a", "b", "c"]
    y_true, prob = predictions(3000, 3, seed=1, skill=1.0)
    ev = run(y_true, prob, classes)
    for i, curve in enumerate(ev["pr_curves"]):
        assert curve["label"] == classes[i]
        assert 2 <= len(curve["thresholds"]) <= MAX_CURVE_POINTS
        assert len(curve["precision"]) == len(curve["recall"]) == len(curve["thresholds"])
        precision, recall, thresholds = precision_recall_curve(y_true == i, prob[:, i])
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        assert curve["best_f1"] == pytest.approx(f1[:-1].max())
        assert curve["best_threshold"] == pytest.approx(thresholds[f1[:-1].argmax()])
        assert curve["recall"] == sorted(curve["recall"], reverse=True)


def test_output_is_plain_json():
    y_true, prob = predictions(50, 8)
    ev = run(y_true, prob.astype(np.float32), [str(i) for i in range(8)])
    assert json.loads(json.dumps(ev)) == ev


def test_plots_are_png():
    y_true, prob = predictions(60, 12)
    ev = run(y_true, prob, [f"label-{i}" for i in range(12)])
    assert plot_confusion_matrix(ev).startswith(PNG_SIGNATURE)
    history = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "val_loss": 1.2 / e,
            "train_accuracy": 1 - 1 / (e + 1),
            "val_accuracy": 1 - 1.2 / (e + 1),
        }
        for e in range(1, 6)
    ]
    assert plot_curves(history).startswith(PNG_SIGNATURE)
    assert plot_curves([]).startswith(PNG_SIGNATURE)
