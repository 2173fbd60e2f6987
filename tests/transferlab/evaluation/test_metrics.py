"""evaluate's metrics in numpy (transferlab.evaluation.metrics) are scikit-learn's: accuracy, macro F1
(zero_division=0) and the confusion matrix over every class of the task, including classes missing from the truth
or from the predictions."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from transferlab.evaluation import metrics


def _cases():
    rng = np.random.default_rng(0)
    for n_classes in (2, 5):
        for n in (1, 7, 200):
            y, pred = rng.integers(0, n_classes, n), rng.integers(0, n_classes, n)
            yield n_classes, y, pred
            yield n_classes, y, np.where(pred == 1, 0, pred)  # class 1 never predicted
            yield n_classes, np.where(y == 0, 1, y), pred  # class 0 never true
            yield n_classes, y, y  # perfect
    yield 5, np.array([0, 0, 3]), np.array([0, 3, 3])  # classes 1, 2 and 4 neither true nor predicted
    yield 5, np.array([4, 4]), np.array([2, 2])  # nothing right


@pytest.mark.parametrize("n_classes, y, pred", list(_cases()))
def test_metrics_are_scikit_learns(n_classes, y, pred):
    labels = list(range(n_classes))
    assert metrics.accuracy(y, pred) == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    want = f1_score(y, pred, labels=labels, average="macro", zero_division=0)
    assert metrics.macro_f1(y, pred, n_classes) == pytest.approx(want, abs=1e-12)
    cm = metrics.confusion(y, pred, n_classes)
    np.testing.assert_array_equal(cm, confusion_matrix(y, pred, labels=labels))
    assert cm.dtype == np.int64


def test_the_cases_cover_absent_classes():
    absent_true = absent_pred = 0
    for n_classes, y, pred in _cases():
        absent_true += len(set(range(n_classes)) - set(y)) > 0
        absent_pred += len(set(range(n_classes)) - set(pred)) > 0
    assert absent_true > 5 and absent_pred > 5


def test_scores_take_the_test_split_and_every_class():
    preds = pd.DataFrame({"split": ["val", "val", "test", "test", "test", "test"],
                          "y": [0, 1, 0, 1, 2, 2], "pred": [0, 0, 0, 1, 1, 2]})
    got = metrics.scores(preds, n_train=10, n_classes=4)
    test = preds[preds["split"] == "test"]
    assert got == {"test_accuracy": 0.75, "val_accuracy": 0.5,
                   "macro_f1": round(f1_score(test["y"], test["pred"], labels=range(4), average="macro",
                                              zero_division=0), 6),
                   "n_train": 10, "n_test": 4}
    assert metrics.scores(preds[preds["split"] == "test"], 10, 4)["val_accuracy"] is None


def test_confusion_rejects_a_class_index_out_of_range():
    with pytest.raises(ValueError, match=r"0\.\.2"):
        metrics.confusion(np.array([0, 3]), np.array([0, 1]), 3)
