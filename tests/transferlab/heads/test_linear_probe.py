"""optimizer lbfgs: the linear-probe protocol in numpy and scipy (transferlab.heads.linear_probe), checked against
scikit-learn's LogisticRegression; its heads are FeatureHead files."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from tests.feature_heads import predict
from transferlab.config.params import Head
from transferlab.heads import head_file, linear_probe, torch_heads


def _overlapping(n_per_class: int, n_classes: int, seed: int = 0, dim: int = 24):
    """Blobs that overlap (not separable while n_per_class * n_classes > dim), so the regularised optimum is
    finite and C matters: fixed centers and scales, the points drawn by `seed` (another seed: held-out points
    of the same classes)."""
    fixed = np.random.default_rng(0)
    centers, scale = fixed.normal(0, 0.6, size=(n_classes, dim)), fixed.uniform(0.5, 5, size=dim)
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = centers[y] + np.random.default_rng(seed + 1).normal(0, 1, size=(len(y), dim))
    return (x * scale + 3).astype(np.float16), y


def _objective(x, y, c: float, w: np.ndarray, b: np.ndarray) -> float:
    """scikit-learn's objective / (C n) in its multinomial form, on x standardised as StandardScaler does."""
    z = StandardScaler().fit_transform(x.astype(np.float64))
    s = z @ w.T + b
    penalty = (w ** 2).sum() / (2 * c * len(y)) * (2 if w.shape[0] == 2 else 1)
    return float((logsumexp(s, axis=1) - s[np.arange(len(y)), y]).mean() + penalty)


def _certified(c: float, n: int, n_classes: int, dim: int) -> float:
    """How far above the optimum a point may be whose gradient entries are all below tol 1e-4 (the stopping
    rule ours shares with scikit-learn): the objective is lam-strongly convex in W (lam = 1 / (C n), doubled
    for two classes, as linear_probe.Problem), so its gap is at most |g|^2 / (2 lam) <= p tol^2 / (2 lam), p
    the number of parameters; plus float32 storage's rounding of the head."""
    lam = (2.0 if n_classes == 2 else 1.0) / (c * n)
    return n_classes * (dim + 1) * 1e-8 / (2 * lam) + 1e-7


def _ours(head: head_file.HeadFile) -> tuple[np.ndarray, np.ndarray]:
    t = head.tensors
    return t["net.0.weight"].astype(np.float64), t["net.0.bias"].astype(np.float64)


def _theirs(ref: LogisticRegression) -> tuple[np.ndarray, np.ndarray]:
    """As softmax weights: with two classes scikit-learn's one logistic weight w is the pair (-w/2, w/2)."""
    if ref.coef_.shape[0] == 1:
        return np.vstack([-ref.coef_ / 2, ref.coef_ / 2]), np.array([-ref.intercept_[0], ref.intercept_[0]]) / 2
    return ref.coef_, ref.intercept_


@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("c", [0.01, 1.0])
def test_lbfgs_head_is_scikit_learns_logistic_regression(n_classes, c):
    x, y = _overlapping(80, n_classes)
    xt, yt = _overlapping(40, n_classes, seed=1)
    (head, stats), = linear_probe.lbfgs_path(x, y, n_classes, [Head(optimizer="lbfgs", C=c)])
    scaler = StandardScaler().fit(x.astype(np.float64))
    ref = LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(scaler.transform(x.astype(np.float64)), y)
    ours = head_file.predict(head, xt)
    theirs = ref.decision_function(scaler.transform(xt.astype(np.float64)))
    # the same optimum (ours stops at tol 1e-4, as sklearn by default): the same predictions and decision
    # function (up to the softmax's free shift)
    assert (ours.argmax(1) == (theirs > 0 if n_classes == 2 else theirs.argmax(1))).all()
    margin = ours[:, 1] - ours[:, 0] if n_classes == 2 else ours - ours.mean(1, keepdims=True)
    expected = theirs if n_classes == 2 else theirs - theirs.mean(1, keepdims=True)
    np.testing.assert_allclose(margin, expected, atol=1e-2 * max(1.0, np.abs(expected).max()))
    assert 0 < stats["final_train_loss"] < np.log(n_classes)
    assert (ours.argmax(1) == yt).mean() > 1 / n_classes


@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("c", [0.01, 1.0])
def test_lbfgs_head_with_more_dimensions_than_images_reaches_scikit_learns_optimum(n_classes, c):
    """n < d: the head is fitted in the span of the training rows. Such data are separable, so the objective is
    flat along many directions and solvers stopping at tol 1e-4 differ in the weights; what must hold is that
    ours stops within what that tolerance certifies (_certified), and predicts as the exact optimum does."""
    x, y = _overlapping(80, n_classes, dim=400)
    xt, _ = _overlapping(40, n_classes, seed=1, dim=400)
    (head, _), = linear_probe.lbfgs_path(x, y, n_classes, [Head(optimizer="lbfgs", C=c)])
    z = StandardScaler().fit_transform(x.astype(np.float64))
    exact = LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(z, y)
    optimum = _objective(x, y, c, *_theirs(exact))
    ours_gap = _objective(x, y, c, *_ours(head)) - optimum
    # measured: ours 2e-8..7e-5 (scikit-learn's own fit at tol 1e-4: 8e-8..1e-5), certified: 2e-6..3e-3
    assert -1e-12 < ours_gap <= _certified(c, len(y), n_classes, x.shape[1])
    theirs = exact.decision_function(StandardScaler().fit(x.astype(np.float64)).transform(xt.astype(np.float64)))
    ours = head_file.predict(head, xt).argmax(1)
    assert (ours == (theirs > 0 if n_classes == 2 else theirs.argmax(1))).all()


def test_lbfgs_path_is_each_c_fitted_alone():
    """The warm-started path (Cs fitted smallest first, each from the previous solution) gives each C's own
    optimum, in the caller's order: within what the stopping tolerance certifies (_certified), the same
    predictions as our fit of that C alone."""
    x, y = _overlapping(80, 4)
    xt, _ = _overlapping(40, 4, seed=1)
    z = StandardScaler().fit_transform(x.astype(np.float64))
    cs = [10.0, 1e-3, 0.1]
    path = linear_probe.lbfgs_path(x, y, 4, [Head(optimizer="lbfgs", C=c) for c in cs])
    for c, (head, _) in zip(cs, path, strict=True):
        optimum = _objective(x, y, c, *_theirs(LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(z, y)))
        # measured: 1e-8 at C = 1e-3 (scikit-learn's fit alone at tol 1e-4: 1.3e-9), certified 1.6e-7
        assert _objective(x, y, c, *_ours(head)) - optimum <= _certified(c, len(y), 4, x.shape[1]), c
        (alone, _), = linear_probe.lbfgs_path(x, y, 4, [Head(optimizer="lbfgs", C=c)])
        assert (head_file.predict(head, xt).argmax(1) == head_file.predict(alone, xt).argmax(1)).all()
    norms = [np.linalg.norm(head.tensors["net.0.weight"]) for head, _ in path]
    assert norms[1] < norms[2] < norms[0]  # in cs' order: C = 1e-3 smallest, C = 10 largest


def test_lbfgs_head_file_is_a_feature_head(tmp_path):
    """What LP-FT loads with torch: torch_heads.load gives a FeatureHead with the same logits, and saving it again
    (head_file.save of torch_heads.to_file) writes the same bytes."""
    x, y = _overlapping(40, 4)
    xt, _ = _overlapping(20, 4, seed=1)
    (head, _), = linear_probe.lbfgs_path(x, y, 4, [Head(optimizer="lbfgs", C=0.1)])
    head_file.save(head, tmp_path / "probe.safetensors", {"classes": list("abcd")})
    module = torch_heads.load(tmp_path / "probe.safetensors")
    assert module.config == head.config == {"in_dim": 24, "n_classes": 4, "kind": "linear", "hidden_dim": 256}
    np.testing.assert_allclose(predict(module, xt), head_file.predict(head, xt), rtol=1e-5, atol=1e-5)
    head_file.save(torch_heads.to_file(module), tmp_path / "again.safetensors", {"classes": list("abcd")})
    assert (tmp_path / "again.safetensors").read_bytes() == (tmp_path / "probe.safetensors").read_bytes()
    # one metadata entry: safetensors orders a map of several differently in each process (different bytes)
    raw = (tmp_path / "probe.safetensors").read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    assert list(header["__metadata__"]) == ["head"]
    meta = json.loads(header["__metadata__"]["head"])
    assert meta == {"config": head.config, "extra": {"classes": list("abcd")}}


@pytest.mark.parametrize("section, message", [
    ({"optimizer": "lbfgs", "kind": "mlp"}, "linear heads only"),
    ({"optimizer": "lbfgs", "sweep": {"lr": [0.1, 0.2]}}, "sweeps C"),
    ({"optimizer": "adamw", "sweep": {"C": [1.0]}}, "sweep.C and sweep.refine are for optimizer lbfgs"),
    ({"optimizer": "adamw", "sweep": {"refine": 1}}, "sweep.C and sweep.refine are for optimizer lbfgs"),
    ({"optimizer": "lbfgs", "sweep": {"C": [1.0], "refine": 1}}, "at least two"),
    ({"optimizer": "lbfgs", "sweep": {"C": [0.0]}}, "every C must be > 0"),
])
def test_lbfgs_settings_are_checked(section, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        Head(**section)


def test_float32_products_reach_the_same_optimum(monkeypatch):
    """Large feature matrices are multiplied in float32 (linear_probe.FLOAT32_MIN_VALUES): the head is the
    float64 one up to the stopping tolerance."""
    x, y = _overlapping(150, 4)
    xt, _ = _overlapping(60, 4, seed=1)
    cfgs = [Head(optimizer="lbfgs", C=c) for c in (0.01, 1.0)]
    wide = linear_probe.lbfgs_path(x, y, 4, cfgs)  # 600 x 24 values: float64
    monkeypatch.setattr(linear_probe, "FLOAT32_MIN_VALUES", 0)
    narrow = linear_probe.lbfgs_path(x, y, 4, cfgs)
    for (a, _), (b, _) in zip(wide, narrow, strict=True):
        pa, pb = head_file.predict(a, xt), head_file.predict(b, xt)
        assert (pa.argmax(1) == pb.argmax(1)).mean() >= 0.99
        np.testing.assert_allclose(pa - pa.mean(1, keepdims=True), pb - pb.mean(1, keepdims=True), atol=1e-2)


def test_row_blocks_on_a_pool_give_the_one_product_head(monkeypatch):
    """Large problems run their products in row blocks on a thread pool (linear_probe.BLOCK_VALUES), summed in
    block order: the head is the one-product head up to float rounding, and the same whatever the pool's size."""
    from concurrent.futures import ThreadPoolExecutor

    x, y = _overlapping(150, 4)
    xt, _ = _overlapping(60, 4, seed=1)
    cfgs = [Head(optimizer="lbfgs", C=c) for c in (0.01, 1.0)]
    whole = linear_probe.lbfgs_path(x, y, 4, cfgs)
    monkeypatch.setattr(linear_probe, "BLOCK_VALUES", 1000)  # 600 x 24 values: 14 blocks
    problem = linear_probe.Problem(x, y, 4, True)
    assert len(problem.blocks) == 14 and problem.blocks[0][0] == 0 and problem.blocks[-1][1] == 600
    blocked = linear_probe.lbfgs_path(x, y, 4, cfgs)
    monkeypatch.setattr(linear_probe, "_pool", lambda: ThreadPoolExecutor(1))
    one_thread = linear_probe.lbfgs_path(x, y, 4, cfgs)
    for (a, _), (b, _), (c, _) in zip(whole, blocked, one_thread, strict=True):
        pa, pb = head_file.predict(a, xt), head_file.predict(b, xt)
        assert (pa.argmax(1) == pb.argmax(1)).all()
        np.testing.assert_allclose(pa, pb, atol=1e-4)
        assert all((b.tensors[k] == c.tensors[k]).all() for k in b.tensors)  # bit for bit
