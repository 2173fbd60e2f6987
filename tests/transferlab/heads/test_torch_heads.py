"""Feature heads (transferlab.heads.torch_heads): training on separable features, the folded form LP-FT uses,
and save/load."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler

from tests.feature_heads import predict
from transferlab.config.params import Head
from transferlab.heads import head_file, torch_heads


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
    cfg = Head(optimizer="adamw", kind=kind, hidden_dim=32, epochs=30, batch_size=32, lr=0.01)
    head, stats = torch_heads.train(x[train], y[train], 4, cfg, seed=0)
    acc = (predict(head, x[test]).argmax(1) == y[test]).mean()
    assert acc >= 0.95
    assert stats["final_train_loss"] < 0.3
    assert head.config == {"in_dim": 32, "n_classes": 4, "kind": kind, "hidden_dim": 32}


def test_training_is_seeded():
    x, y = _blobs(20)
    cfg = Head(optimizer="adamw", epochs=3, batch_size=16)
    a, _ = torch_heads.train(x, y, 4, cfg, seed=0)
    b, _ = torch_heads.train(x, y, 4, cfg, seed=0)
    c, _ = torch_heads.train(x, y, 4, cfg, seed=1)
    assert np.array_equal(predict(a, x), predict(b, x))
    assert not np.array_equal(predict(a, x), predict(c, x))


def test_standardize_sets_and_skips_statistics():
    x, y = _blobs(20)
    on, _ = torch_heads.train(x, y, 4, Head(optimizer="adamw", epochs=1), seed=0)
    off, _ = torch_heads.train(x, y, 4, Head(optimizer="adamw", epochs=1, standardize=False), seed=0)
    np.testing.assert_allclose(on.mean.numpy(), x.astype(np.float32).mean(0), rtol=1e-4)
    np.testing.assert_allclose(on.std.numpy(), StandardScaler().fit(x.astype(np.float32)).scale_, rtol=1e-4)
    assert torch.equal(off.mean, torch.zeros(32)) and torch.equal(off.std, torch.ones(32))


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_folded_computes_the_same_logits(kind):
    x, y = _blobs(20)
    head, _ = torch_heads.train(x, y, 4, Head(optimizer="adamw", kind=kind, hidden_dim=16, epochs=2), seed=0)
    assert head.std.min() < 1 < head.std.max() and head.mean.abs().min() > 1  # folding is not trivial here
    folded = head.folded()
    assert not any(isinstance(m, torch_heads.FeatureHead) for m in folded.modules())
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
    head, _ = torch_heads.train(x, y, 4, Head(optimizer="adamw", kind=kind, hidden_dim=8, epochs=2), seed=0)
    head_file.save(torch_heads.to_file(head), tmp_path / "head.safetensors", {"classes": ["a", "b", "c", "d"]})
    loaded = torch_heads.load(tmp_path / "head.safetensors")
    assert loaded.config == head.config and not loaded.training
    assert np.array_equal(predict(loaded, x), predict(head, x))
    for k, v in head.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_feature_constant_in_training_is_not_amplified():
    x, y = _blobs(20)
    x[:, 0] = 0  # dead in every training image
    head, _ = torch_heads.train(x, y, 4, Head(optimizer="adamw", epochs=5), seed=0)
    probe = x[:8].astype(np.float32)
    base = predict(head, probe)
    probe[:, 0] = 0.5  # alive in an unseen image
    assert np.abs(predict(head, probe) - base).max() < 10
    assert head.folded()[0].weight.abs().max() < 1e3


# ---- the sweep: many heads trained together -----------------------------------------------------------------

SWEEP = Head(optimizer="adamw", kind="linear", hidden_dim=16, epochs=8, batch_size=16,
             sweep={"kind": ["linear", "mlp"], "lr": [0.003, 0.03], "weight_decay": [0.0, 0.5]})


def test_grid_order_and_single_head():
    grid = SWEEP.grid()
    assert [(c.kind, c.lr, c.weight_decay) for c in grid] == [
        (k, lr, wd) for k in ("linear", "mlp") for lr in (0.003, 0.03) for wd in (0.0, 0.5)]
    assert all(c.sweep is None and c.epochs == 8 and c.hidden_dim == 16 for c in grid)
    # left-out axes: the single values
    partial = Head(optimizer="adamw", lr=0.02, weight_decay=0.1, sweep={"lr": [0.1, 0.2]})
    assert [(c.kind, c.lr, c.weight_decay) for c in partial.grid()] == [("linear", 0.1, 0.1), ("linear", 0.2, 0.1)]
    assert Head(optimizer="adamw", lr=0.02).grid() == [Head(optimizer="adamw", lr=0.02)]


@pytest.mark.parametrize("bad, key", [({"lr": [0.1, 0.1]}, "repeat"), ({"lr": []}, "at least 1"),
                                      ({"lr": [0.0]}, "> 0"), ({"weight_decay": [-1.0]}, ">= 0"),
                                      ({"kind": ["cnn"]}, "cnn"), ({"lr": [0.2], "weight_decay": [5.0]}, ">= 1")])
def test_bad_sweeps_are_rejected(bad, key):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=key):
        Head(optimizer="adamw", sweep=bad)


def test_each_head_of_a_sweep_equals_that_head_trained_alone():
    x, y = _blobs(40)
    grid = SWEEP.grid()
    together, stats = torch_heads.train_sweep(x, y, 4, grid, seed=0)
    assert len(together) == len(grid) == len(stats["final_train_loss"])
    logits = [predict(h, x) for h in together]
    for cfg, head, got in zip(grid, together, logits, strict=True):
        alone, alone_stats = torch_heads.train(x, y, 4, cfg, seed=0)
        assert head.config == alone.config
        want = predict(alone, x)
        # the same function up to float32 rounding (the batched products round differently; see torch_heads.py)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        assert np.array_equal(got.argmax(1), want.argmax(1)), (cfg.kind, cfg.lr, cfg.weight_decay)
        for k, v in alone.state_dict().items():
            torch.testing.assert_close(head.state_dict()[k], v, rtol=1e-4, atol=1e-5)
    # ...and the heads really differ from one another: lr and weight decay reached each head
    assert len({np.round(g, 3).tobytes() for g in logits}) == len(grid)


def test_sweep_is_seeded_and_shares_one_standardisation():
    x, y = _blobs(20)
    grid = SWEEP.grid()
    a, _ = torch_heads.train_sweep(x, y, 4, grid, seed=0)
    b, _ = torch_heads.train_sweep(x, y, 4, grid, seed=0)
    c, _ = torch_heads.train_sweep(x, y, 4, grid, seed=1)
    for ha, hb, hc in zip(a, b, c, strict=True):
        assert np.array_equal(predict(ha, x), predict(hb, x))
        assert not np.array_equal(predict(ha, x), predict(hc, x))
        assert torch.equal(ha.mean, a[0].mean) and torch.equal(ha.std, a[0].std)  # fitted on train once
    np.testing.assert_allclose(a[0].std.numpy(), StandardScaler().fit(x.astype(np.float32)).scale_, rtol=1e-4)


def test_sweep_heads_are_feature_heads(tmp_path):
    """What LP-FT and evaluate use: save/load and the folded form work for a head trained in a sweep."""
    x, y = _blobs(20)
    for head in torch_heads.train_sweep(x, y, 4, SWEEP.grid(), seed=0)[0][::3]:
        head_file.save(torch_heads.to_file(head), tmp_path / "h.safetensors", {"classes": list("abcd")})
        loaded = torch_heads.load(tmp_path / "h.safetensors")
        assert np.array_equal(predict(loaded, x), predict(head, x))
        xt = torch.as_tensor(x.astype(np.float32))
        with torch.no_grad():
            assert torch.allclose(head.folded()(xt), head(xt), rtol=1e-4, atol=1e-3)


def test_sweep_needs_one_epochs_and_batch_size():
    x, y = _blobs(5)
    with pytest.raises(ValueError, match="share"):
        torch_heads.train_sweep(x, y, 4, [Head(optimizer="adamw", epochs=e) for e in (1, 2)], seed=0)


def test_training_restores_the_thread_count():
    x, y = _blobs(5)
    before = torch.get_num_threads()
    torch_heads.train_sweep(x, y, 4, SWEEP.grid()[:2], seed=0)
    torch_heads.train(x, y, 4, Head(optimizer="adamw", epochs=1), seed=0)
    assert torch.get_num_threads() == before
