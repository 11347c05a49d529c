"""Classification metrics in plain NumPy: accuracy, macro/weighted P/R/F1, per class, MCC, one-vs-rest AUC.

A class with no predictions (or no support) gets precision (or recall) 0, as sklearn's zero_division=0 does.
One-vs-rest AUC follows sklearn's roc_auc_score(multi_class="ovr", labels=all classes): a class absent from
the evaluated set has no AUC, so the macro AUC (`auc_ovr`) is NaN, never quietly averaged over the classes
present; `auc_weighted` weights each class by its support, so an absent class (weight 0) drops out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def matthews_corrcoef(cm: np.ndarray) -> float:
    """Multiclass MCC (Gorodkin's R_K) from a confusion matrix; 0 when undefined."""
    cm = cm.astype(np.float64)
    t, p = cm.sum(axis=1), cm.sum(axis=0)  # true and predicted counts per class
    c, s = np.trace(cm), cm.sum()
    den = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((c * s - t @ p) / den) if den > 0 else 0.0


def binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC = P(score of a positive > score of a negative), ties counting half (Mann-Whitney U)."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(np.asarray(scores, dtype=np.float64))
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # start index of each run of equal values, and the run each sorted element belongs to
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    run_of = np.cumsum(np.r_[True, sorted_x[1:] != sorted_x[:-1]]) - 1
    ends = np.r_[starts[1:], len(x)]
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = mean_rank[run_of]
    return ranks


def classification_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,  # (N, C) class probabilities
    classes: Sequence[str],
    *,
    loss: float | None = None,
) -> dict:
    """All metrics of one evaluation as a JSON-ready dict (see module docstring for conventions)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    num_classes = len(classes)
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    precision = _safe_div(tp, cm.sum(axis=0))
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    weights = support / max(support.sum(), 1)
    aucs = np.array([binary_auc(y_true == k, probs[:, k]) for k in range(num_classes)])
    return {
        "accuracy": float(tp.sum() / max(len(y_true), 1)),
        "loss": None if loss is None else float(loss),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "precision_weighted": float(precision @ weights),
        "recall_weighted": float(recall @ weights),
        "f1_weighted": float(f1 @ weights),
        "mcc": matthews_corrcoef(cm),
        "auc_ovr": float(aucs.mean()),  # NaN when some class has no positives or no negatives
        "auc_weighted": _weighted_auc(aucs, support),
        "per_class": {
            name: {"precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]),
                   "support": int(support[k])}
            for k, name in enumerate(classes)
        },
        "confusion": cm.tolist(),
        "count": int(len(y_true)),
    }


def _weighted_auc(aucs: np.ndarray, support: np.ndarray) -> float:
    """Support-weighted mean AUC over the classes present (sklearn's average="weighted"); NaN when none is
    defined."""
    keep = (support > 0) & ~np.isnan(aucs)
    return float(np.average(aucs[keep], weights=support[keep])) if keep.any() else float("nan")
