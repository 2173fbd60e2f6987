"""The scikit-learn reference row: C chosen on val, and predictions identical to sklearn's own."""
from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from transferlab.heads import reference


def _blobs(n_classes: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (n_classes, 16))
    y = rng.integers(0, n_classes, n)
    return centers[y] + rng.normal(0, 2.0, (n, 16)), y


@pytest.mark.parametrize("n_classes", [2, 4])
def test_predictions_match_sklearn_with_the_chosen_c(n_classes, tmp_path):
    x, y = _blobs(n_classes, 300, 0)
    xv, yv = _blobs(n_classes, 100, 1)
    weights, summary = reference.fit(x, y, xv, yv, seed=0)
    assert [row["C"] for row in summary["sweep"]] == list(reference.C_GRID)
    best = max(summary["sweep"], key=lambda r: r["val_accuracy"])["val_accuracy"]
    assert summary["val_accuracy"] == best
    reference.save(weights, tmp_path / "ref.safetensors", summary)
    loaded = reference.load(tmp_path / "ref.safetensors")
    assert sorted(loaded) == ["coef", "intercept", "mean", "scale"]
    for k, v in weights.items():  # numpy float64 in, the same bytes out
        assert isinstance(v, np.ndarray) and v.dtype == np.float64 and loaded[k].dtype == np.float64
        np.testing.assert_array_equal(loaded[k], v)
    with safe_open(str(tmp_path / "ref.safetensors"), "np") as f:
        assert json.loads(f.metadata()["summary"]) == summary
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=summary["C"], max_iter=2000, random_state=0).fit(scaler.transform(x), y)
    xt, _ = _blobs(n_classes, 200, 2)
    np.testing.assert_array_equal(reference.predict(loaded, xt), model.predict(scaler.transform(xt)))
    assert (reference.predict(loaded, xv) == yv).mean() == pytest.approx(summary["val_accuracy"])
