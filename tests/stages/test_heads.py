"""Feature heads: training on separable features, the folded form LP-FT uses, and save/load."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stages import head_file, heads
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


# ---- the sweep: many heads trained together -----------------------------------------------------------------

SWEEP = Head(kind="linear", hidden_dim=16, epochs=8, batch_size=16,
             sweep={"kind": ["linear", "mlp"], "lr": [0.003, 0.03], "weight_decay": [0.0, 0.5]})


def test_grid_order_and_single_head():
    grid = SWEEP.grid()
    assert [(c.kind, c.lr, c.weight_decay) for c in grid] == [
        (k, lr, wd) for k in ("linear", "mlp") for lr in (0.003, 0.03) for wd in (0.0, 0.5)]
    assert all(c.sweep is None and c.epochs == 8 and c.hidden_dim == 16 for c in grid)
    partial = Head(lr=0.02, weight_decay=0.1, sweep={"lr": [0.1, 0.2]})  # left-out axes: the single values
    assert [(c.kind, c.lr, c.weight_decay) for c in partial.grid()] == [("linear", 0.1, 0.1), ("linear", 0.2, 0.1)]
    assert Head(lr=0.02).grid() == [Head(lr=0.02)]


@pytest.mark.parametrize("bad, key", [({"lr": [0.1, 0.1]}, "repeat"), ({"lr": []}, "at least 1"),
                                      ({"lr": [0.0]}, "> 0"), ({"weight_decay": [-1.0]}, ">= 0"),
                                      ({"kind": ["cnn"]}, "cnn"), ({"lr": [0.2], "weight_decay": [5.0]}, ">= 1")])
def test_bad_sweeps_are_rejected(bad, key):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=key):
        Head(sweep=bad)


def test_each_head_of_a_sweep_equals_that_head_trained_alone():
    x, y = _blobs(40)
    grid = SWEEP.grid()
    together, stats = heads.train_sweep(x, y, 4, grid, seed=0)
    assert len(together) == len(grid) == len(stats["final_train_loss"])
    logits = [heads.predict(h, x) for h in together]
    for cfg, head, got in zip(grid, together, logits, strict=True):
        alone, alone_stats = heads.train(x, y, 4, cfg, seed=0)
        assert head.config == alone.config
        want = heads.predict(alone, x)
        # the same function up to float32 rounding (the batched products round differently; see heads.py)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        assert np.array_equal(got.argmax(1), want.argmax(1)), (cfg.kind, cfg.lr, cfg.weight_decay)
        for k, v in alone.state_dict().items():
            torch.testing.assert_close(head.state_dict()[k], v, rtol=1e-4, atol=1e-5)
    # ...and the heads really differ from one another: lr and weight decay reached each head
    assert len({np.round(g, 3).tobytes() for g in logits}) == len(grid)


def test_sweep_is_seeded_and_shares_one_standardisation():
    x, y = _blobs(20)
    grid = SWEEP.grid()
    a, _ = heads.train_sweep(x, y, 4, grid, seed=0)
    b, _ = heads.train_sweep(x, y, 4, grid, seed=0)
    c, _ = heads.train_sweep(x, y, 4, grid, seed=1)
    for ha, hb, hc in zip(a, b, c, strict=True):
        assert np.array_equal(heads.predict(ha, x), heads.predict(hb, x))
        assert not np.array_equal(heads.predict(ha, x), heads.predict(hc, x))
        assert torch.equal(ha.mean, a[0].mean) and torch.equal(ha.std, a[0].std)  # fitted on train once
    np.testing.assert_allclose(a[0].std.numpy(), x.astype(np.float32).std(0, ddof=1), rtol=1e-3)


def test_sweep_heads_are_feature_heads(tmp_path):
    """What LP-FT and evaluate use: save/load and the folded form work for a head trained in a sweep."""
    x, y = _blobs(20)
    for head in heads.train_sweep(x, y, 4, SWEEP.grid(), seed=0)[0][::3]:
        heads.save(head, tmp_path / "h.safetensors", {"classes": list("abcd")})
        loaded = heads.load(tmp_path / "h.safetensors")
        assert np.array_equal(heads.predict(loaded, x), heads.predict(head, x))
        xt = torch.as_tensor(x.astype(np.float32))
        with torch.no_grad():
            assert torch.allclose(head.folded()(xt), head(xt), rtol=1e-4, atol=1e-3)


def test_sweep_needs_one_epochs_and_batch_size():
    x, y = _blobs(5)
    with pytest.raises(ValueError, match="share"):
        heads.train_sweep(x, y, 4, [Head(epochs=1), Head(epochs=2)], seed=0)


def test_training_restores_the_thread_count():
    x, y = _blobs(5)
    before = torch.get_num_threads()
    heads.train_sweep(x, y, 4, SWEEP.grid()[:2], seed=0)
    heads.train(x, y, 4, Head(epochs=1), seed=0)
    assert torch.get_num_threads() == before


# --- stages.head_file: a saved head applied with numpy (what evaluate uses, without torch) -----------


def _trained_heads(x, y):
    """AdamW heads as train_head saves them: linear and mlp, one without standardisation, a sweep's mlp (the
    L-BFGS probe is written by head_file itself: tests/stages/test_linear_probe.py)."""
    yield heads.train(x, y, 4, Head(kind="linear", epochs=5), seed=0)[0]
    yield heads.train(x, y, 4, Head(kind="mlp", hidden_dim=16, epochs=5), seed=0)[0]
    yield heads.train(x, y, 4, Head(kind="mlp", hidden_dim=16, epochs=5, standardize=False), seed=1)[0]
    yield heads.train_sweep(x, y, 4, SWEEP.grid(), seed=0)[0][-1]


def test_head_file_predicts_without_torch_as_the_torch_head(tmp_path):
    """evaluate's numpy path: the same logits as heads.predict(heads.load(...)) up to float32 rounding."""
    x, y = _blobs(30)
    probe, _ = _blobs(20, seed=1)  # unseen points
    kinds = []
    for i, head in enumerate(_trained_heads(x, y)):
        path = tmp_path / f"h{i}.safetensors"
        heads.save(head, path, {"classes": list("abcd")})
        want = heads.predict(heads.load(path), probe)
        loaded = head_file.load(path)
        got = head_file.predict(loaded, probe)
        assert loaded.config == head.config and got.dtype == np.float32 and got.shape == want.shape
        assert np.array_equal(got.argmax(1), want.argmax(1)), head.config
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
        kinds.append(head.config["kind"])
    assert kinds.count("mlp") == 3


def test_head_file_rejects_a_file_that_is_not_a_head(tmp_path):
    from safetensors.numpy import save_file

    from stages.errors import PipelineError

    save_file({"mean": np.zeros(3, np.float32)}, tmp_path / "odd.safetensors", metadata={"config": "{}"})
    with pytest.raises(PipelineError, match=r"odd\.safetensors: not a feature head .*re-run its train_head"):
        head_file.load(tmp_path / "odd.safetensors")


def test_head_file_reads_the_earlier_two_entry_metadata(tmp_path):
    """Heads saved before the single "head" entry (in DVC caches of earlier commits) still load."""
    from safetensors.numpy import save_file

    x, y = _blobs(20)
    head = heads.train(x, y, 4, Head(epochs=1), seed=0)[0]
    state = {k: v.numpy() for k, v in head.state_dict().items()}
    meta = {"config": json.dumps(head.config), "extra": json.dumps({"classes": list("abcd")})}
    save_file(state, tmp_path / "old.safetensors", metadata=meta)
    assert np.array_equal(heads.predict(heads.load(tmp_path / "old.safetensors"), x), heads.predict(head, x))
