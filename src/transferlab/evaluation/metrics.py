"""The contract metrics (accuracy, macro F1, the confusion matrix), as scikit-learn defines them, in numpy.

Not sklearn.metrics: importing it costs a fresh stage process 0.7-1.4 s (measured, after numpy and pandas), far
more than these computations on any test split. tests/transferlab/evaluation/test_metrics.py checks them against
scikit-learn's."""
from __future__ import annotations

import numpy as np
import pandas as pd


def confusion(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """confusion_matrix(y, pred, labels=range(n_classes)): counts, rows the truth, columns the prediction."""
    y, pred = np.asarray(y, np.int64), np.asarray(pred, np.int64)
    if len(y) and (min(y.min(), pred.min()) < 0 or max(y.max(), pred.max()) >= n_classes):
        raise ValueError(f"class indices must lie in 0..{n_classes - 1}")
    return np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """accuracy_score(y, pred)."""
    return float(np.mean(np.asarray(y) == np.asarray(pred)))


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """f1_score(y, pred, labels=range(n_classes), average="macro", zero_division=0): the mean over every class
    of 2 tp / (2 tp + fp + fn), 0 for a class neither in y nor predicted."""
    cm = confusion(y, pred, n_classes)
    denom = cm.sum(0) + cm.sum(1)  # predicted + actual = 2 tp + fp + fn
    f1 = np.divide(2.0 * np.diag(cm), denom, out=np.zeros(n_classes), where=denom > 0)
    return float(f1.mean())


def scores(preds: pd.DataFrame, n_train: int, n_classes: int) -> dict:
    """The contract metrics from a frame with split, y (truth) and pred."""
    val, test = preds[preds["split"] == "val"], preds[preds["split"] == "test"]
    return {"test_accuracy": round(accuracy(test["y"], test["pred"]), 6),
            "val_accuracy": round(accuracy(val["y"], val["pred"]), 6) if len(val) else None,
            "macro_f1": round(macro_f1(test["y"], test["pred"], n_classes), 6),
            "n_train": int(n_train), "n_test": int(len(test))}
