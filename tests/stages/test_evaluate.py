"""evaluate's metrics in numpy are scikit-learn's: accuracy, macro F1 (zero_division=0) and the confusion matrix
over every class of the task, including classes missing from the truth or from the predictions."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from stages import evaluate
from stages import params as P
from stages.errors import PipelineError
from stages.paths import Layout


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
    assert evaluate.accuracy(y, pred) == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    want = f1_score(y, pred, labels=labels, average="macro", zero_division=0)
    assert evaluate.macro_f1(y, pred, n_classes) == pytest.approx(want, abs=1e-12)
    cm = evaluate.confusion(y, pred, n_classes)
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
    got = evaluate.scores(preds, n_train=10, n_classes=4)
    test = preds[preds["split"] == "test"]
    assert got == {"test_accuracy": 0.75, "val_accuracy": 0.5,
                   "macro_f1": round(f1_score(test["y"], test["pred"], labels=range(4), average="macro",
                                              zero_division=0), 6),
                   "n_train": 10, "n_test": 4}
    assert evaluate.scores(preds[preds["split"] == "test"], 10, 4)["val_accuracy"] is None


def test_confusion_rejects_a_class_index_out_of_range():
    with pytest.raises(ValueError, match=r"0\.\.2"):
        evaluate.confusion(np.array([0, 3]), np.array([0, 1]), 3)


def test_a_task_without_test_images_is_named(monkeypatch, tmp_path):
    """scikit-learn's metrics raised on an empty test split; numpy's would give NaN: evaluate says what to do."""
    frame = pd.DataFrame({"image_id": ["a", "b"], "split": ["val", "val"], "target": ["x", "y"], "y": [0, 1],
                          "pred": [0, 1]})
    monkeypatch.setattr(evaluate, "feature_predictions",
                        lambda *a: {"head": (frame, {"classes": ["x", "y"], "n_train": 4})})
    monkeypatch.setattr(evaluate, "prototype_predictions", lambda *a: (frame, {"n_train": 4}))
    with pytest.raises(PipelineError, match=r"tasks\.t: no test images .* test_fraction .*'f'"):
        evaluate.run("t", P.Task(features="f"), P.Evaluate(), 0, Layout(tmp_path))
