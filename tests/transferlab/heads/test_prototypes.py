"""The prototype head (transferlab.heads.prototypes, SimpleShot): exact on a constructed case, blind to scale,
never a class without shots, and one shot per class enough on real digits (their 64 raw pixels as features)."""
from __future__ import annotations

import numpy as np
import pytest

from transferlab.config.params import Task
from transferlab.data.tasks import select
from transferlab.heads.prototypes import fit_prototypes, predict_prototypes


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_prototype_is_exact_on_a_constructed_case():
    offset = np.array([5.0, -3.0, 7.0, 1.0])
    x = np.array([[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 1], [4, 0, 0, 0]], float) + offset
    y = np.array([0, 1, 2, 0])
    p = fit_prototypes(x, y, 3)
    center = x.mean(0)
    np.testing.assert_allclose(p.center, center)
    unit = [(r - center) / np.linalg.norm(r - center) for r in x]
    want = [unit[0] + unit[3], unit[1], unit[2]]  # class 0's two shots averaged after normalising each
    for c in range(3):
        np.testing.assert_allclose(p.means[c], want[c] / np.linalg.norm(want[c]))
    queries = np.array([[0.1, 1.9, 0, 0], [3, 0, 0.2, 0], [0, 0, 1, 1]]) + offset
    scores = predict_prototypes(p, queries)
    expected = np.array([[_cos(q - center, w) for w in want] for q in queries])
    np.testing.assert_allclose(scores, expected, atol=1e-12)
    assert scores.argmax(1).tolist() == [1, 0, 2]
    # a training shot is nearest its own prototype; a single shot has cosine exactly 1 with it
    assert predict_prototypes(p, x).argmax(1).tolist() == y.tolist()
    assert predict_prototypes(p, x[1:2])[0, 1] == pytest.approx(1.0)


def test_prototype_ignores_scale_and_never_predicts_a_class_without_shots():
    rng = np.random.default_rng(0)
    x, q = rng.normal(size=(6, 8)), rng.normal(size=(20, 8))
    y = np.array([0, 0, 1, 1, 3, 3])  # class 2 has no training images
    p = fit_prototypes(x, y, 4)
    pred = predict_prototypes(p, q).argmax(1)
    assert 2 not in pred and set(pred) <= {0, 1, 3}
    assert np.isneginf(predict_prototypes(p, q)[:, 2]).all()
    scaled = fit_prototypes(10 * x, y, 4)
    assert (predict_prototypes(scaled, 10 * q).argmax(1) == pred).all()


def test_prototype_from_one_shot_per_class_works_on_real_digits(raw_digits):
    feats, index = raw_digits
    sel = select(index, Task(features="f", shots=1), 0)
    train, test = sel.split("train"), sel.split("test")
    assert len(train) == 10
    p = fit_prototypes(feats[train["row"]], train["y"].to_numpy(), 10)
    acc = (predict_prototypes(p, feats[test["row"]]).argmax(1) == test["y"].to_numpy()).mean()
    assert acc > 0.5, acc  # chance is 0.1
