"""The published linear-probe protocol as a reference row: scikit-learn L-BFGS logistic regression on
standardised features, its inverse regularisation C chosen on the validation split (Kornblith et al. 2019).

Without torch, and scikit-learn only inside `fit`: the evaluation loads and applies a fitted reference, and a
tasks@<set> run that reuses every task from its cache imports neither (each would cost seconds, measured)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from transferlab.io.atomic import atomic_path

# 13 values, half a decade apart, from 1e-4 to 1e2: a finer grid than the head's default decades, which its
# sweep.refine searches within, so that the reference row checks the search as well as the fit (#17)
C_GRID = tuple(10.0 ** (k / 2) for k in range(-8, 5))
# head.reference auto fits the reference on at most this many training values (rows x dimensions): 2,000 x 2,048
# ResNet-50 features take seconds; 51,000 x 512 took about two minutes over 7 Cs (issue #17's measurement),
# several times the head itself (benchmarks/head_scale.py).
AUTO_MAX_VALUES = 4_200_000


def skipped(policy: str, n: int, dim: int) -> str | None:
    """Why head.reference `policy` leaves the reference out for n x dim training features, or None to fit it."""
    if policy == "never":
        return "head.reference: never"
    if policy == "auto" and n * dim > AUTO_MAX_VALUES:
        return (f"head.reference: auto fits it on at most {AUTO_MAX_VALUES:,} training values; this task has "
                f"{n:,} x {dim:,} (head.reference: always fits it anyway)")
    return None


def fit(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, seed: int) -> tuple[dict, dict]:
    """Fit one model per C, keep the best on val (the first among ties) -> (weights: name -> float64 array,
    summary). On one BLAS thread: with two, OpenBLAS's spin-waiting on a busy 2-core machine made these fits
    on 1400 x 2048 features take 207 s instead of 11 s (measured)."""
    # scikit-learn is imported here, the one place that fits: loading a fitted reference (evaluate) needs only
    # numpy, and importing sklearn.linear_model costs a fresh stage process 0.7-1.4 s (measured).
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    if not len(y_val):
        raise ValueError("no val rows to choose C on")
    start = time.perf_counter()
    scaler = StandardScaler().fit(np.asarray(x, np.float64))
    z, z_val = scaler.transform(np.asarray(x, np.float64)), scaler.transform(np.asarray(x_val, np.float64))
    best, sweep = None, []
    model = LogisticRegression(max_iter=2000, random_state=seed, warm_start=True)
    with threadpool_limits(1):  # scikit-learn's lbfgs runs on numpy / scipy: BLAS is its only pool
        for c in sorted(C_GRID):  # each C starts from the previous solution, as LogisticRegressionCV's path
            model.set_params(C=c).fit(z, y)
            acc = float((model.predict(z_val) == y_val).mean())
            sweep.append({"C": c, "val_accuracy": round(acc, 6)})
            if best is None or acc > best[0]:
                best = (acc, c, model.coef_.copy(), model.intercept_.copy())
    acc, c, coef, intercept = best
    weights = {"mean": scaler.mean_, "scale": scaler.scale_, "coef": coef, "intercept": intercept}
    summary = {"C": c, "val_accuracy": round(acc, 6), "sweep": sweep,
               "seconds": round(time.perf_counter() - start, 3)}
    return {k: np.asarray(v, np.float64) for k, v in weights.items()}, summary


def predict(weights: dict, x: np.ndarray) -> np.ndarray:
    """Class indices, as LogisticRegression.predict would give them."""
    z = (np.asarray(x, np.float64) - weights["mean"]) / weights["scale"]
    scores = z @ weights["coef"].T + weights["intercept"]
    return (scores[:, 0] > 0).astype(int) if scores.shape[1] == 1 else scores.argmax(1)


def save(weights: dict, path: Path, summary: dict) -> None:
    with atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, tmp,
                  metadata={"summary": json.dumps(summary)})


def load(path: Path) -> dict:
    """The weights `save` wrote: mean, scale, coef, intercept as float64 arrays."""
    return load_file(path)
