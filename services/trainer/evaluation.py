"""Evaluation of a trained classifier on its validation set (rule S9), and its plots.

Every figure is computed by scikit-learn with the standard definitions:
precision = TP / (TP + FP), recall = TP / (TP + FN), F1 their harmonic mean;
a class without predictions (or without samples) scores 0 rather than raising
(``zero_division=0``). Averages say which they are: ``macro`` is the unweighted
mean over classes, ``weighted`` the mean weighted by each class's support.

The result is plain JSON (floats, ints, strings, lists, dicts) so it can be
stored and sent as it is. No PyTorch here: the inputs are labels and probabilities.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

MAX_CURVE_POINTS = 50  # points kept of each precision-recall curve
MAX_MISCLASSIFIED = 500  # misclassified samples listed, most confident first


def evaluate_predictions(
    y_true: list[int],
    y_prob: np.ndarray,
    classes: list[str],
    train_counts: dict[str, int],
    val_counts: dict[str, int],
    image_ids: list[str],
) -> dict[str, Any]:
    """The evaluation of predicted probabilities ``y_prob`` (samples × classes) against ``y_true``.

    ``y_true`` holds class indices into ``classes``; ``image_ids`` names the samples
    in the same order. ``train_counts``/``val_counts`` are the per-class sample
    counts of the two sets (classification statistics).

    Keys: ``accuracy``; ``macro`` and ``weighted`` ({precision, recall, f1});
    ``classes`` (per class: label, precision, recall, f1, support, train_count,
    validation_count); ``confusion_matrix`` ({labels, matrix}: rows are true
    classes, columns predicted ones); ``top5_accuracy`` (None with 5 classes or
    fewer); ``validation_samples``; ``misclassified`` (image_id, true, predicted,
    confidence; most confident first, at most MAX_MISCLASSIFIED) and
    ``misclassified_total``; ``pr_curves`` (per class: precision, recall and
    threshold lists of at most MAX_CURVE_POINTS points, average_precision, and
    the F1-maximising best_threshold with its best_f1).
    """
    y = np.asarray(y_true, dtype=np.int64)
    prob = np.asarray(y_prob, dtype=np.float64)
    n_classes = len(classes)
    if prob.shape != (len(y), n_classes) or len(image_ids) != len(y):
        raise ValueError(
            f"shape mismatch: {len(y)} labels, {len(image_ids)} ids, probabilities {prob.shape}, {n_classes} classes"
        )
    labels = list(range(n_classes))
    pred = prob.argmax(axis=1) if len(y) else np.zeros(0, dtype=np.int64)

    def averaged(average: str) -> dict[str, float]:
        p, r, f, _ = precision_recall_fscore_support(
            y, pred, labels=labels, average=average, zero_division=0
        )
        return {"precision": float(p), "recall": float(r), "f1": float(f)}

    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=labels, average=None, zero_division=0
    )
    per_class = [
        {
            "label": name,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "train_count": int(train_counts.get(name, 0)),
            "validation_count": int(val_counts.get(name, 0)),
        }
        for i, name in enumerate(classes)
    ]
    matrix = (
        confusion_matrix(y, pred, labels=labels)
        if len(y)
        else np.zeros((n_classes, n_classes), dtype=np.int64)
    )

    top5 = None
    if n_classes > 5 and len(y):
        top5 = float(top_k_accuracy_score(y, prob, k=5, labels=labels))

    wrong = np.flatnonzero(pred != y)
    wrong = wrong[np.argsort(-prob[wrong, pred[wrong]], kind="stable")]
    misclassified = [
        {
            "image_id": image_ids[i],
            "true": classes[y[i]],
            "predicted": classes[pred[i]],
            "confidence": float(prob[i, pred[i]]),
        }
        for i in wrong[:MAX_MISCLASSIFIED]
    ]

    return {
        "accuracy": float(accuracy_score(y, pred)) if len(y) else 0.0,
        "macro": averaged("macro"),
        "weighted": averaged("weighted"),
        "classes": per_class,
        "confusion_matrix": {"labels": list(classes), "matrix": matrix.astype(int).tolist()},
        "top5_accuracy": top5,
        "validation_samples": len(y),
        "misclassified": misclassified,
        "misclassified_total": len(wrong),
        "pr_curves": [_pr_curve(y == i, prob[:, i], name) for i, name in enumerate(classes)],
    }


def _pr_curve(is_class: np.ndarray, score: np.ndarray, label: str) -> dict[str, Any]:
    """One class's precision-recall curve (one-vs-rest), downsampled, and its F1-best threshold."""
    if not is_class.any():  # no positive sample: the curve is undefined
        return {
            "label": label,
            "precision": [],
            "recall": [],
            "thresholds": [],
            "average_precision": None,
            "best_threshold": None,
            "best_f1": None,
        }
    precision, recall, thresholds = precision_recall_curve(is_class, score)
    # precision/recall have one more point than thresholds (recall 0, precision 1): drop it.
    precision, recall = precision[:-1], recall[:-1]
    f1 = np.divide(
        2 * precision * recall,
        precision + recall,
        out=np.zeros_like(precision),
        where=(precision + recall) > 0,
    )
    best = int(np.argmax(f1))
    keep = np.unique(
        np.linspace(0, len(thresholds) - 1, num=min(MAX_CURVE_POINTS, len(thresholds)))
        .round()
        .astype(int)
    )
    return {
        "label": label,
        "precision": [float(v) for v in precision[keep]],
        "recall": [float(v) for v in recall[keep]],
        "thresholds": [float(v) for v in thresholds[keep]],
        "average_precision": float(average_precision_score(is_class, score)),
        "best_threshold": float(thresholds[best]),
        "best_f1": float(f1[best]),
    }


# --- plots --------------------------------------------------------------------------


def plot_confusion_matrix(evaluation: dict[str, Any]) -> bytes:
    """A PNG of the evaluation's confusion matrix, each row normalised by its class's support."""
    labels = evaluation["confusion_matrix"]["labels"]
    counts = np.asarray(evaluation["confusion_matrix"]["matrix"], dtype=np.float64).reshape(
        len(labels), len(labels)
    )
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)

    size = min(4 + 0.45 * len(labels), 20)
    fig = Figure(figsize=(size + 1.5, size), dpi=100)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, rotation=90 if len(labels) > 8 else 0)
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix (accuracy {evaluation['accuracy']:.3f})")
    if len(labels) <= 30:
        for i in ticks:
            for j in ticks:
                if counts[i, j]:
                    ax.text(
                        j,
                        i,
                        int(counts[i, j]),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if share[i, j] > 0.5 else "black",
                    )
    return _png(fig)


def plot_curves(history: list[dict[str, Any]]) -> bytes:
    """A PNG of the training curves: loss and accuracy per epoch, training and validation."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 4), dpi=100)
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="training")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
    loss_ax.set_title("Loss")
    acc_ax.plot(
        epochs, [h["train_accuracy"] for h in history], marker="o", label="training (augmented)"
    )
    acc_ax.plot(epochs, [h["val_accuracy"] for h in history], marker="o", label="validation")
    acc_ax.set_title("Accuracy")
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    if not history:
        loss_ax.text(
            0.5, 0.5, "no completed epoch", ha="center", va="center", transform=loss_ax.transAxes
        )
    return _png(fig)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
