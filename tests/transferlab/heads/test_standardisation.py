"""One standardisation everywhere: every head scales features as scikit-learn's StandardScaler does (the
population std, ddof=0), so a head and the reference fitted on the same rows see the same inputs."""
from __future__ import annotations

import numpy as np
from sklearn.preprocessing import StandardScaler

from transferlab.config.params import Head
from transferlab.heads import linear_probe, reference, torch_heads


def test_every_head_standardises_as_standard_scaler():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 8)  # 24 rows: ddof 0 and 1 differ by 2 %
    x = (rng.normal(size=(24, 6)) * rng.uniform(0.5, 5, 6) + 3).astype(np.float32)
    x_val, y_val = x[:6], y[:6]
    want = StandardScaler().fit(x.astype(np.float64))
    adamw, _ = torch_heads.train(x, y, 3, Head(optimizer="adamw", epochs=1), seed=0)
    sweep, _ = torch_heads.train_sweep(x, y, 3, Head(optimizer="adamw", epochs=1).grid(), seed=0)
    (probe, _), = linear_probe.lbfgs_path(x, y, 3, [Head(optimizer="lbfgs")])
    ref, _ = reference.fit(x, y, x_val, y_val, seed=0)
    for name, mean, std in [("adamw", adamw.mean.numpy(), adamw.std.numpy()),
                            ("sweep", sweep[0].mean.numpy(), sweep[0].std.numpy()),
                            ("lbfgs", probe.tensors["mean"], probe.tensors["std"]),
                            ("reference", ref["mean"], ref["scale"])]:
        np.testing.assert_allclose(mean, want.mean_, rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(std, want.scale_, rtol=1e-5, err_msg=name)
