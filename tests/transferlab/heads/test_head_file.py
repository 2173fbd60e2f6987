"""A saved head applied with numpy (transferlab.heads.head_file, what evaluate uses, without torch): the same
logits as the torch head, a file that is not a head rejected, the earlier metadata still read."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.feature_heads import predict
from tests.transferlab.heads.test_torch_heads import SWEEP, _blobs
from transferlab.config.params import Head
from transferlab.heads import head_file, torch_heads


def _trained_heads(x, y):
    """AdamW heads as train_head saves them: linear and mlp, one without standardisation, a sweep's mlp (the
    L-BFGS probe is written by head_file itself: tests/transferlab/heads/test_linear_probe.py)."""
    yield torch_heads.train(x, y, 4, Head(optimizer="adamw", kind="linear", epochs=5), seed=0)[0]
    yield torch_heads.train(x, y, 4, Head(optimizer="adamw", kind="mlp", hidden_dim=16, epochs=5), seed=0)[0]
    plain = Head(optimizer="adamw", kind="mlp", hidden_dim=16, epochs=5, standardize=False)
    yield torch_heads.train(x, y, 4, plain, seed=1)[0]
    yield torch_heads.train_sweep(x, y, 4, SWEEP.grid(), seed=0)[0][-1]


def test_head_file_predicts_without_torch_as_the_torch_head(tmp_path):
    """evaluate's numpy path: the same logits as predict(torch_heads.load(...)) up to float32 rounding."""
    x, y = _blobs(30)
    probe, _ = _blobs(20, seed=1)  # unseen points
    kinds = []
    for i, head in enumerate(_trained_heads(x, y)):
        path = tmp_path / f"h{i}.safetensors"
        head_file.save(torch_heads.to_file(head), path, {"classes": list("abcd")})
        want = predict(torch_heads.load(path), probe)
        loaded = head_file.load(path)
        got = head_file.predict(loaded, probe)
        assert loaded.config == head.config and got.dtype == np.float32 and got.shape == want.shape
        assert np.array_equal(got.argmax(1), want.argmax(1)), head.config
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
        kinds.append(head.config["kind"])
    assert kinds.count("mlp") == 3


def test_head_file_rejects_a_file_that_is_not_a_head(tmp_path):
    from safetensors.numpy import save_file

    from transferlab.config.errors import PipelineError

    save_file({"mean": np.zeros(3, np.float32)}, tmp_path / "odd.safetensors", metadata={"config": "{}"})
    with pytest.raises(PipelineError, match=r"odd\.safetensors: not a feature head .*re-run the tasks@ stage"):
        head_file.load(tmp_path / "odd.safetensors")


def test_head_file_reads_the_earlier_two_entry_metadata(tmp_path):
    """Heads saved before the single "head" entry (in DVC caches of earlier commits) still load."""
    from safetensors.numpy import save_file

    x, y = _blobs(20)
    head = torch_heads.train(x, y, 4, Head(optimizer="adamw", epochs=1), seed=0)[0]
    state = {k: v.numpy() for k, v in head.state_dict().items()}
    meta = {"config": json.dumps(head.config), "extra": json.dumps({"classes": list("abcd")})}
    save_file(state, tmp_path / "old.safetensors", metadata=meta)
    assert np.array_equal(predict(torch_heads.load(tmp_path / "old.safetensors"), x), predict(head, x))
