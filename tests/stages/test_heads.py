"""Feature heads: training on separable features, the folded form LP-FT uses, and save/load."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stages import heads
from stages.params import Head


def _blobs(n_per_class: int, n_classes: int = 4, dim: int = 32, seed: int = 0):
    """Gaussian blobs, well separated in a few dims, on features with a large offset and uneven scales."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, size=(n_classes, dim))
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = centers[y] + rng.normal(0, 1, size=(len(y), dim))
    scale = rng.uniform(0.1, 20, size=dim)
    return (x * scale + 50).astype(np.float16), y  # float16, like the feature cache


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_head_learns_separable_features(kind):
    x, y = _blobs(60)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(y))
    train, test = perm[:180], perm[180:]  # held-out points of the same blobs
    cfg = Head(kind=kind, hidden_dim=32, epochs=30, batch_size=32, lr=0.01)
    head, stats = heads.train(x[train], y[train], 4, cfg, seed=0)
    acc = (heads.predict(head, x[test]).argmax(1) == y[test]).mean()
    assert acc >= 0.95
    assert stats["final_train_loss"] < 0.3
    assert head.config == {"in_dim": 32, "n_classes": 4, "kind": kind, "hidden_dim": 32}


def test_training_is_seeded():
    x, y = _blobs(20)
    cfg = Head(epochs=3, batch_size=16)
    a, _ = heads.train(x, y, 4, cfg, seed=0)
    b, _ = heads.train(x, y, 4, cfg, seed=0)
    c, _ = heads.train(x, y, 4, cfg, seed=1)
    assert np.array_equal(heads.predict(a, x), heads.predict(b, x))
    assert not np.array_equal(heads.predict(a, x), heads.predict(c, x))


def test_standardize_sets_and_skips_statistics():
    x, y = _blobs(20)
    on, _ = heads.train(x, y, 4, Head(epochs=1), seed=0)
    off, _ = heads.train(x, y, 4, Head(epochs=1, standardize=False), seed=0)
    np.testing.assert_allclose(on.mean.numpy(), x.astype(np.float32).mean(0), rtol=1e-4)
    np.testing.assert_allclose(on.std.numpy(), x.astype(np.float32).std(0, ddof=1), rtol=1e-3)
    assert torch.equal(off.mean, torch.zeros(32)) and torch.equal(off.std, torch.ones(32))


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_folded_computes_the_same_logits(kind):
    x, y = _blobs(20)
    head, _ = heads.train(x, y, 4, Head(kind=kind, hidden_dim=16, epochs=2), seed=0)
    assert head.std.min() < 1 < head.std.max() and head.mean.abs().min() > 1  # folding is not trivial here
    folded = head.folded()
    assert not any(isinstance(m, heads.FeatureHead) for m in folded.modules())
    xt = torch.as_tensor(x.astype(np.float32))
    with torch.no_grad():
        expected, got = head(xt), folded(xt)
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-3)
        assert not torch.allclose(head.net(xt), expected, atol=1e-1)  # standardisation matters
    # folding copies: the head itself is unchanged
    with torch.no_grad():
        assert torch.equal(head(xt), expected)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_save_load_round_trip(tmp_path, kind):
    x, y = _blobs(10)
    head, _ = heads.train(x, y, 4, Head(kind=kind, hidden_dim=8, epochs=2), seed=0)
    heads.save(head, tmp_path / "head.safetensors", {"classes": ["a", "b", "c", "d"]})
    loaded = heads.load(tmp_path / "head.safetensors")
    assert loaded.config == head.config and not loaded.training
    assert np.array_equal(heads.predict(loaded, x), heads.predict(head, x))
    for k, v in head.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_feature_constant_in_training_is_not_amplified():
    x, y = _blobs(20)
    x[:, 0] = 0  # dead in every training image
    head, _ = heads.train(x, y, 4, Head(epochs=5), seed=0)
    probe = x[:8].astype(np.float32)
    base = heads.predict(head, probe)
    probe[:, 0] = 0.5  # alive in an unseen image
    assert np.abs(heads.predict(head, probe) - base).max() < 10
    assert head.folded()[0].weight.abs().max() < 1e3
