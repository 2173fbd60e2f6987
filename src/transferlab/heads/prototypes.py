"""A training-free head from class means of the features (SimpleShot): one shot per class is enough."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = 1e-12


@dataclass(frozen=True)
class Prototypes:
    """SimpleShot: features centred by the training mean, L2-normalised; one unit-norm mean per class."""

    center: np.ndarray  # (D,)
    means: np.ndarray  # (C, D); a class without training images has a row of NaN and is never predicted


def _unit(z: np.ndarray) -> np.ndarray:
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), _EPS)


def fit_prototypes(x: np.ndarray, y: np.ndarray, n_classes: int) -> Prototypes:
    """Class means of the centred, L2-normalised training features (no training; one shot per class works)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y)
    center = x.mean(0)
    z = _unit(x - center)
    means = np.full((n_classes, x.shape[1]), np.nan)
    for c in np.unique(y):
        means[c] = z[y == c].mean(0)
    return Prototypes(center, _unit(means))


def predict_prototypes(p: Prototypes, x: np.ndarray) -> np.ndarray:
    """Cosine similarity of each (centred, normalised) row to each class prototype: (N, C) scores."""
    scores = _unit(np.asarray(x, np.float64) - p.center) @ np.nan_to_num(p.means).T
    return np.where(np.isnan(p.means).any(1), -np.inf, scores)
