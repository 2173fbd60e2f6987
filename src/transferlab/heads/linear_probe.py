"""The linear-probe protocol (Kornblith et al. 2019) as feature heads, in numpy and scipy: multinomial logistic
regression on standardised features, fitted with L-BFGS for each C of a grid.

No torch: a head is saved as a FeatureHead file (heads.head_file) and torch is loaded only by what trains
AdamW heads or fine-tunes. In a train_head@<task> process that fits these heads, importing torch cost 1.4 s
and constructing torch.optim.LBFGS another 1.1 s (it imports torch._dynamo), next to ~1 s of fitting
(measured on 699 x 2048 ResNet-50 features, 5 classes, 7 Cs)."""
from __future__ import annotations

import time

import numpy as np

from transferlab.config.methods import Head
from transferlab.heads.head_file import HeadFile

# scikit-learn's lbfgs stopping rule: LogisticRegression's max_iter and tol, and the scipy options it passes
OPTIONS = {"maxiter": 2000, "maxls": 50, "gtol": 1e-4, "ftol": 64 * np.finfo(float).eps}
# Feature matrices of at least this many values (after the span reduction) are multiplied in float32: there
# the products are the fit's time; below it float64 costs little and keeps the stopping point where
# scikit-learn's is (float32 moved the default few-shot head's test accuracy by one image of 134).
FLOAT32_MIN_VALUES = 1 << 22


def lbfgs_path(x: np.ndarray, y: np.ndarray, n_classes: int, cfgs: list[Head]) -> list[tuple[HeadFile, dict]]:
    """One head per cfg (its C; they share `standardize`): mean cross-entropy + lam/2 |W|^2 (bias free) on
    standardised features, minimised by scipy's L-BFGS-B (the iterate in float64; the products with the features
    in float32 from FLOAT32_MIN_VALUES values up) with scikit-learn's options, so it stops
    as scikit-learn's lbfgs does (the largest gradient entry below tol 1e-4, or 2000 iterations). lam =
    1 / (C n) is scikit-learn's C objective divided by C n; with two classes scikit-learn fits one logistic
    weight w = w1 - w2, whose penalty |w|^2 / 2 is matched by lam = 2 / (C n) on the pair (w1 = -w2 at the
    optimum). The objective and its gradient are this module's; the reference row (transferlab.heads.reference) is
    scikit-learn's own fit, so the two agree only if this formulation is right.

    The Cs are fitted from the smallest up, each starting from the previous solution (the warm-started
    regularisation path of scikit-learn's LogisticRegressionCV): the objective is strictly convex, so each
    head is the same optimum up to the stopping tolerance, reached in fewer iterations. Deterministic: no
    sampling, the first C starts at zero. Results in cfgs' order.

    With fewer training images than feature dimensions (n < d: 699 x 2048 for a 5-class task on 2,000 ResNet-50
    features), the fit runs in the span of the training rows. Z^T = Q R (Q: d x n, orthonormal columns). The
    optimum lies in that span (its gradient condition: lam W = -G^T Z / n), where W = W_r Q^T, the logits
    Z W^T = R^T W_r^T and the penalty |W|^2 = |W_r|^2: a problem on the n x n matrix R^T with the same optimum
    (the representer theorem), whose steps cost n columns, not d (~3x faster here). The stopping test reads
    the largest gradient entry in the rotated coordinates, so the fit stops at a slightly different point
    within the tolerance."""
    from scipy.optimize import minimize  # the stages that fit load scikit-learn, and so scipy, anyway
    from threadpoolctl import threadpool_limits

    if len({c.standardize for c in cfgs}) != 1:
        raise ValueError("heads of one L-BFGS path share standardize")
    x = np.asarray(x, np.float64)
    mean, std = np.zeros(x.shape[1]), np.ones(x.shape[1])
    if cfgs[0].standardize:
        mean, s = x.mean(0), x.std(0)  # StandardScaler's (population) std
        std = np.where(s > 1e-6, s, 1.0)
    z = (x - mean) / std
    basis = None  # Q, where the fit runs in the span of the training rows
    if len(z) < z.shape[1]:
        basis, r = np.linalg.qr(z.T)  # z = r^T basis^T
        z = np.ascontiguousarray(r.T)
    onehot = np.eye(n_classes)[np.asarray(y)]
    theta = np.zeros(n_classes * (z.shape[1] + 1))  # W row by row, then the bias
    out = {}
    # Large products in float32, the rest (the iterate L-BFGS moves, softmax, loss, gradient sums) in float64: at
    # 51,000 x 512, 10 classes, 7 Cs, the path took 37.5 s in float64 and 27.4 s so on the features of
    # benchmarks/head_scale.py (30.0 s and 17.6 s on an easier generator), with the same val accuracy per C to 3
    # decimals and the same test accuracy (measured side by side). One BLAS thread even there: two took 24.5 s
    # against 17.6 on this 2-core machine (OpenBLAS's threads spin).
    if z.size >= FLOAT32_MIN_VALUES:
        z = z.astype(np.float32)
    with threadpool_limits(1):  # small products, many of them: a second BLAS thread only spins (one_thread)
        for i in sorted(range(len(cfgs)), key=lambda i: cfgs[i].C):
            start = time.perf_counter()
            lam = (2.0 if n_classes == 2 else 1.0) / (cfgs[i].C * len(z))
            theta = minimize(_objective, theta, args=(z, onehot, lam), jac=True, method="L-BFGS-B",
                             options=OPTIONS).x
            w, b = theta[:-n_classes].reshape(n_classes, -1), theta[-n_classes:]
            head = _head(mean, std, w if basis is None else w @ basis.T, b, cfgs[i])
            loss = _objective(theta, z, onehot, 0.0)[0]
            out[i] = head, {"seconds": time.perf_counter() - start, "final_train_loss": loss}
    return [out[i] for i in range(len(cfgs))]


def _objective(theta: np.ndarray, z: np.ndarray, onehot: np.ndarray, lam: float) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy of the logits z W^T + b, plus lam/2 |W|^2; and its gradient (W, then b)."""
    k = onehot.shape[1]
    w, b = theta[:-k].reshape(k, -1), theta[-k:]
    s = (z @ w.T.astype(z.dtype)).astype(np.float64) + b
    s -= s.max(1, keepdims=True)
    p = np.exp(s)
    total = p.sum(1, keepdims=True)
    p /= total
    loss = float((np.log(total[:, 0]) - (s * onehot).sum(1)).mean() + 0.5 * lam * (w * w).sum())
    g = (p - onehot) / len(z)
    return loss, np.concatenate([((g.T.astype(z.dtype) @ z).astype(np.float64) + lam * w).ravel(), g.sum(0)])


def _head(mean: np.ndarray, std: np.ndarray, w: np.ndarray, b: np.ndarray, cfg: Head) -> HeadFile:
    """A linear FeatureHead's config and float32 state (the file torch_heads.load reads)."""
    config = {"in_dim": len(mean), "n_classes": len(b), "kind": "linear", "hidden_dim": cfg.hidden_dim}
    tensors = {"mean": mean, "std": std, "net.0.weight": w, "net.0.bias": b}
    return HeadFile(config, {k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()})
