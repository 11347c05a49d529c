import itertools

import numpy as np
import pytest

from mrisynth.classify.metrics import binary_auc, classification_metrics, confusion_matrix, matthews_corrcoef

CLASSES = ["a", "b", "c"]
Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 1, 2, 2, 2, 0])


def _probs_from(pred: np.ndarray) -> np.ndarray:
    return 0.1 + 0.7 * np.eye(3)[pred]  # rows sum to 1, argmax = pred


def _pairwise_auc(positive, scores) -> float:
    """AUC by brute force over all (positive, negative) pairs: an independent check of the rank formula."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_metrics_match_hand_computed_values():
    m = classification_metrics(Y_TRUE, _probs_from(Y_PRED), CLASSES, loss=0.5)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [1, 0, 2]]
    assert m["accuracy"] == pytest.approx(5 / 8)
    # per class precision = recall = f1 = 2/3, 1/2, 2/3
    assert m["per_class"]["b"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_class"]["a"]["precision"] == pytest.approx(2 / 3)
    assert m["precision_macro"] == pytest.approx(11 / 18)
    assert m["recall_macro"] == pytest.approx(11 / 18)
    assert m["f1_macro"] == pytest.approx(11 / 18)
    assert m["f1_weighted"] == pytest.approx(5 / 8)
    assert m["precision_weighted"] == pytest.approx(5 / 8)
    # MCC: c=5, s=8, t=p=(3,2,3): (5*8 - 22) / sqrt((64-22)^2) = 18/42
    assert m["mcc"] == pytest.approx(3 / 7)
    assert m["loss"] == 0.5 and m["count"] == 8


def test_auc_handles_ties_and_matches_pairwise_definition():
    assert binary_auc(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.5, 0.1])) == pytest.approx(0.75)
    assert binary_auc(np.array([1, 1, 0, 0]), np.array([0.5, 0.4, 0.5, 0.1])) == pytest.approx(0.625)
    probs = _probs_from(Y_PRED)
    m = classification_metrics(Y_TRUE, probs, CLASSES)
    expected = np.mean([_pairwise_auc(Y_TRUE == k, probs[:, k]) for k in range(3)])
    assert _pairwise_auc(Y_TRUE == 0, probs[:, 0]) == pytest.approx(11 / 15)
    assert m["auc_ovr"] == pytest.approx(expected)
    rng = np.random.default_rng(0)
    labels, scores = rng.integers(0, 2, 50), rng.integers(0, 5, 50).astype(float)  # many ties
    assert binary_auc(labels, scores) == pytest.approx(_pairwise_auc(labels, scores))


def test_perfect_and_degenerate_predictions():
    y = np.array([0, 1, 2, 2])
    m = classification_metrics(y, np.eye(3)[y], CLASSES)
    assert m["accuracy"] == 1.0 and m["mcc"] == pytest.approx(1.0) and m["auc_ovr"] == 1.0
    # everything predicted as class 0: precision of never-predicted classes is 0, MCC undefined -> 0
    m = classification_metrics(y, np.eye(3)[[0, 0, 0, 0]], CLASSES)
    assert m["per_class"]["c"]["precision"] == 0.0 and m["mcc"] == 0.0
    assert binary_auc(np.array([1, 1]), np.array([0.2, 0.3])) != binary_auc(np.array([1, 1]), np.array([0.2, 0.3]))


def test_confusion_and_mcc_binary_reference():
    cm = confusion_matrix(np.array([1, 1, 1, 0, 0]), np.array([1, 1, 0, 0, 1]), 2)
    assert cm.tolist() == [[1, 1], [1, 2]]
    # binary MCC = (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    assert matthews_corrcoef(cm) == pytest.approx(1 / 6)


def test_auc_agrees_with_sklearn_and_an_absent_class_makes_the_macro_nan():
    import warnings

    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 60)
    probs = rng.dirichlet(np.ones(3), 60)
    m = classification_metrics(y, probs, CLASSES)
    assert m["auc_ovr"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", labels=[0, 1, 2]))
    assert m["auc_weighted"] == pytest.approx(
        roc_auc_score(y, probs, multi_class="ovr", labels=[0, 1, 2], average="weighted"))
    # class "c" absent from the evaluated set: no macro AUC (as sklearn), the weighted AUC drops the class
    y2 = np.array([0, 0, 1, 1])
    p2 = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.5, 0.2]])
    m2 = classification_metrics(y2, p2, CLASSES)
    assert np.isnan(m2["auc_ovr"]) and m2["auc_weighted"] == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(roc_auc_score(y2, p2, multi_class="ovr", labels=[0, 1, 2]))
