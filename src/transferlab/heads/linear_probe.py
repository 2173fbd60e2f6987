"""The linear-probe protocol (Kornblith et al. 2019) as feature heads, in numpy and scipy: multinomial logistic
regression on standardised features, fitted with L-BFGS for each C of a grid, then (sweep.refine) around the
best C on val, coarse to fine as CLIP's linear probes search it.

No torch: a head is saved as a FeatureHead file (heads.head_file) and torch is loaded only by what trains
AdamW heads or fine-tunes. In a process that only fits these heads, importing torch cost 1.4 s
and constructing torch.optim.LBFGS another 1.1 s (it imports torch._dynamo), next to ~1 s of fitting
(measured on 699 x 2048 ResNet-50 features, 5 classes, 7 Cs)."""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from transferlab.config.methods import Head
from transferlab.heads.head_file import HeadFile

# scikit-learn's lbfgs stopping rule: LogisticRegression's max_iter and tol, and the scipy options it passes
OPTIONS = {"maxiter": 2000, "maxls": 50, "gtol": 1e-4, "ftol": 64 * np.finfo(float).eps}
# Feature matrices of at least this many values (after the span reduction) are multiplied in float32: there
# the products are the fit's time; below it float64 costs little and keeps the stopping point where
# scikit-learn's is (float32 moved the default few-shot head's test accuracy by one image of 134).
FLOAT32_MIN_VALUES = 1 << 22
# Products over at least twice this many values run in row blocks of about this size, one block per thread on
# a pool of every core (os.sched_getaffinity), each on one BLAS thread, the blocks' sums added in block order:
# the same head whatever the number of cores. At 51,000 x 512 one objective took 78 ms as one product, 39 ms
# in two threads; OpenBLAS's own second thread made the path slower (13.0 s against 8.9 s: it spins between
# the many small products). Measured side by side on this 2-core machine.
BLOCK_VALUES = 1 << 22
# The preconditioner's covariance is estimated on at most this many rows per feature dimension (an even
# stride over the training rows): it only steers the steps, the objective is every row's.
PRECONDITIONER_ROWS_PER_DIM = 16


class Problem:
    """One training set's L-BFGS problem: standardised features (in the span of the rows where n < d), one-hot
    labels and the preconditioner, shared by every C of a path.

    The objective is mean cross-entropy + lam/2 |W|^2 (bias free) on the standardised features, lam = 1 / (C n):
    scikit-learn's C objective divided by C n. With two classes scikit-learn fits one logistic weight
    w = w1 - w2, whose penalty |w|^2 / 2 is matched by lam = 2 / (C n) on the pair (w1 = -w2 at the optimum).
    The objective and its gradient are this module's; the reference row (transferlab.heads.reference) is
    scikit-learn's own fit, so the two agree only if this formulation is right.

    Preconditioned: L-BFGS moves U, where W = (U * d) E^T with Sigma = E diag(s) E^T the features' covariance
    and d = 1 / sqrt(s / k + lam), the inverse square root of the Hessian's approximation at the start (the
    softmax's curvature 1/k per class times Sigma, plus the penalty). This is a change of variables, not of the
    problem: the same objective in W, the same optimum. Pooled CNN features are correlated and ill-conditioned
    (their covariance's eigenvalues fall off as a power law), and there plain L-BFGS needs hundreds of
    iterations per C; preconditioned, 15-27 (51,000 x 512: the 7-value path took 27.8 s before, the 9 fits of
    the grid and sweep.refine take 11.7 s now, on the row blocks below; benchmarks/head_scale.py). The stopping
    test is scikit-learn's, read on W's gradient: the largest entry below tol. Read on U's it let strongly
    regularised fits stop 8x further from the optimum than scikit-learn's.

    With fewer training images than feature dimensions (n < d: 699 x 2048 for a 5-class task on 2,000 ResNet-50
    features), the fit runs in the span of the training rows. Z^T = Q R (Q: d x n, orthonormal columns). The
    optimum lies in that span (its gradient condition: lam W = -G^T Z / n), where W = W_r Q^T, the logits
    Z W^T = R^T W_r^T and the penalty |W|^2 = |W_r|^2: a problem on the n x n matrix R^T with the same optimum
    (the representer theorem), whose steps cost n columns, not d."""

    def __init__(self, x: np.ndarray, y: np.ndarray, n_classes: int, standardize: bool,
                 pool: ThreadPoolExecutor | None = None):
        x = np.asarray(x, np.float64)
        self.mean, self.std = np.zeros(x.shape[1]), np.ones(x.shape[1])
        if standardize:
            self.mean, s = x.mean(0), x.std(0)  # StandardScaler's (population) std
            self.std = np.where(s > 1e-6, s, 1.0)
        z = (x - self.mean) / self.std
        self.basis = None  # Q, where the fit runs in the span of the training rows
        if len(z) < z.shape[1]:
            self.basis, r = np.linalg.qr(z.T)  # z = r^T basis^T
            z = np.ascontiguousarray(r.T)
        self.n, self.k = len(z), n_classes
        self.onehot = np.eye(n_classes)[np.asarray(y)]
        # Large products in float32, the rest (the iterate L-BFGS moves, softmax, loss, gradient sums) in
        # float64: at 51,000 x 512, 10 classes, 7 Cs, the unpreconditioned path took 37.5 s in float64 and 27.4 s
        # so, with the same val accuracy per C to 3 decimals and the same test accuracy (measured side by side).
        self.z = z.astype(np.float32) if z.size >= FLOAT32_MIN_VALUES else z
        sample = self.z[:: max(1, -(-self.n // (PRECONDITIONER_ROWS_PER_DIM * z.shape[1])))]
        cov = (sample.T @ sample).astype(np.float64) / len(sample)
        s, self.eigvecs = np.linalg.eigh(cov)
        self.eigvals = np.maximum(s, 0.0)
        self.theta = np.zeros(n_classes * (z.shape[1] + 1))  # W row by row, then the bias: the last solution
        n_blocks = max(1, self.z.size // BLOCK_VALUES)
        edges = np.linspace(0, self.n, n_blocks + 1).astype(int)
        self.blocks = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        self.pool = pool if n_blocks > 1 else None

    def objective(self, theta: np.ndarray, lam: float) -> tuple[float, np.ndarray]:
        """Mean softmax cross-entropy of the logits z W^T + b, plus lam/2 |W|^2; and its gradient (W, then b):
        block by block (on the pool where there is one), summed in block order."""
        k = self.k
        w, b = theta[:-k].reshape(k, -1), theta[-k:]
        wt = w.T.astype(self.z.dtype)

        def block(edges: tuple[int, int]) -> tuple[float, np.ndarray, np.ndarray]:
            return _block(self.z[edges[0]:edges[1]], self.onehot[edges[0]:edges[1]], wt, b)

        parts = list(self.pool.map(block, self.blocks) if self.pool is not None else map(block, self.blocks))
        loss = sum(p[0] for p in parts) / self.n + 0.5 * lam * (w * w).sum()
        gw, gb = sum(p[1] for p in parts) / self.n + lam * w, sum(p[2] for p in parts) / self.n
        return float(loss), np.concatenate([gw.ravel(), gb])

    def lam(self, c: float) -> float:
        return (2.0 if self.k == 2 else 1.0) / (c * self.n)

    def solve(self, c: float, start: np.ndarray) -> tuple[np.ndarray, dict]:
        """The optimum for C = c from `start` (W, then b, flattened) -> (that vector, stats)."""
        from scipy.optimize import minimize  # the stages that fit load scikit-learn, and so scipy, anyway

        t0 = time.perf_counter()
        lam, k, e = self.lam(c), self.k, self.eigvecs
        d = 1.0 / np.sqrt(self.eigvals / k + lam)
        last = {}  # the gradient in W of the last point evaluated

        def objective(u_theta: np.ndarray) -> tuple[float, np.ndarray]:
            u, b = u_theta[:-k].reshape(k, -1), u_theta[-k:]
            loss, g = self.objective(np.concatenate([((u * d) @ e.T).ravel(), b]), lam)
            last.update(x=u_theta.copy(), g=np.abs(g).max())
            return loss, np.concatenate([((g[:-k].reshape(k, -1) @ e) * d).ravel(), g[-k:]])

        def stop(intermediate_result) -> None:  # scikit-learn's test, on W's gradient (not U's)
            if np.array_equal(intermediate_result.x, last["x"]) and last["g"] <= OPTIONS["gtol"]:
                raise StopIteration

        w, b = start[:-k].reshape(k, -1), start[-k:]
        res = minimize(objective, np.concatenate([((w @ e) / d).ravel(), b]), jac=True, method="L-BFGS-B",
                       options={**OPTIONS, "gtol": 0.0}, callback=stop)
        u, b = res.x[:-k].reshape(k, -1), res.x[-k:]
        theta = np.concatenate([((u * d) @ e.T).ravel(), b])
        loss = self.objective(theta, 0.0)[0]
        return theta, {"seconds": time.perf_counter() - t0, "final_train_loss": loss, "iterations": int(res.nit),
                       "evaluations": int(res.nfev)}

    def head(self, theta: np.ndarray, cfg: Head) -> HeadFile:
        w, b = theta[:-self.k].reshape(self.k, -1), theta[-self.k:]
        return _head(self.mean, self.std, w if self.basis is None else w @ self.basis.T, b, cfg)


@dataclass(frozen=True)
class Fit:
    """One C's head: its config (C), the head, its fit's stats, its solution (W, then b) and val accuracy."""

    cfg: Head
    head: HeadFile
    stats: dict
    theta: np.ndarray
    val_accuracy: float | None = None


def lbfgs_path(x: np.ndarray, y: np.ndarray, n_classes: int, cfgs: list[Head]) -> list[tuple[HeadFile, dict]]:
    """One head per cfg (its C; they share `standardize`), fitted by Problem with scikit-learn's options, so
    it stops as scikit-learn's lbfgs does (the largest gradient entry below tol 1e-4, or 2000 iterations).

    The Cs are fitted from the smallest up, each starting from the previous solution (the warm-started
    regularisation path of scikit-learn's LogisticRegressionCV): the objective is strictly convex, so each
    head is the same optimum up to the stopping tolerance, reached in fewer iterations. Deterministic: no
    sampling, the first C starts at zero. Results in cfgs' order."""
    with _pool() as pool:
        fits = _path(Problem(x, y, n_classes, _standardize(cfgs), pool), cfgs)
    by_cfg = {id(f.cfg): f for f in fits}
    return [(by_cfg[id(c)].head, by_cfg[id(c)].stats) for c in cfgs]


def search(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, n_classes: int,
           cfg: Head) -> list[Fit]:
    """cfg's grid of C on the warm-started path (as lbfgs_path fits it), each head scored on val; then
    sweep.refine rounds, each fitting the geometric midpoints between the best C so far (ties: the smallest, as
    fit.fit_best keeps it) and its neighbours among the Cs tried, from the best's solution: with the default
    decade grid, round one tries the half-decades either side of the best. In the order fitted: the grid as
    written, then each round's Cs, smaller first."""
    from threadpoolctl import threadpool_limits

    grid = cfg.grid()
    order = {id(c): i for i, c in enumerate(grid)}
    with _pool() as pool, threadpool_limits(1):  # the val products: small, as the path's are
        problem = Problem(x, y, n_classes, _standardize(grid), pool)
        fits = sorted((_scored(f, x_val, y_val) for f in _path(problem, grid)), key=lambda f: order[id(f.cfg)])
        for _ in range(cfg.sweep.refine if cfg.sweep is not None else 0):
            best = min(fits, key=lambda f: (-f.val_accuracy, f.cfg.C))
            tried = sorted({f.cfg.C for f in fits})
            i = tried.index(best.cfg.C)
            for j in (i - 1, i + 1):
                if 0 <= j < len(tried):
                    problem.theta = best.theta
                    new = best.cfg.model_copy(update={"C": float(np.sqrt(best.cfg.C * tried[j]))})
                    fits += [_scored(f, x_val, y_val) for f in _path(problem, [new])]
    return fits


def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(len(os.sched_getaffinity(0)), thread_name_prefix="linear-probe")


def _standardize(cfgs: list[Head]) -> bool:
    if len({c.standardize for c in cfgs}) != 1:
        raise ValueError("heads of one L-BFGS path share standardize")
    return cfgs[0].standardize


def _path(problem: Problem, cfgs: list[Head]) -> list[Fit]:
    """Fit cfgs from the smallest C up, each from the previous solution (problem.theta: zero at first), on one
    BLAS thread (the threads are the pool's: BLOCK_VALUES)."""
    from threadpoolctl import threadpool_limits

    out = []
    with threadpool_limits(1):
        for cfg in sorted(cfgs, key=lambda c: c.C):
            problem.theta, stats = problem.solve(cfg.C, problem.theta)
            out.append(Fit(cfg, problem.head(problem.theta, cfg), stats, problem.theta))
    return out


def _scored(fit: Fit, x_val: np.ndarray, y_val: np.ndarray) -> Fit:
    from transferlab.heads.head_file import predict

    acc = float((predict(fit.head, x_val).argmax(1) == y_val).mean())
    return Fit(fit.cfg, fit.head, fit.stats, fit.theta, acc)


def _block(z: np.ndarray, onehot: np.ndarray, wt: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray,
                                                                                         np.ndarray]:
    """One block of rows' sums: cross-entropy, and its gradient in W and in b (not yet divided by n)."""
    s = (z @ wt).astype(np.float64) + b
    s -= s.max(1, keepdims=True)
    p = np.exp(s)
    total = p.sum(1, keepdims=True)
    p /= total
    g = p - onehot
    return (float((np.log(total[:, 0]) - (s * onehot).sum(1)).sum()), (g.T.astype(z.dtype) @ z).astype(np.float64),
            g.sum(0))


def _head(mean: np.ndarray, std: np.ndarray, w: np.ndarray, b: np.ndarray, cfg: Head) -> HeadFile:
    """A linear FeatureHead's config and float32 state (the file torch_heads.load reads)."""
    config = {"in_dim": len(mean), "n_classes": len(b), "kind": "linear", "hidden_dim": cfg.hidden_dim}
    tensors = {"mean": mean, "std": std, "net.0.weight": w, "net.0.bias": b}
    return HeadFile(config, {k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()})
