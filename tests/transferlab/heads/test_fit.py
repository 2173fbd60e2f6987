"""fit_best (transferlab.heads.fit) over an L-BFGS sweep of C: every head of the grid fitted, the first best on
val kept."""
from __future__ import annotations

import numpy as np

from tests.transferlab.heads.test_linear_probe import _overlapping
from transferlab.config.params import Head
from transferlab.heads import fit as head_fit


def test_lbfgs_sweep_keeps_the_first_best_c_on_val():
    x, y = _overlapping(60, 3)
    xv, yv = _overlapping(30, 3, seed=2)
    cfg = Head(optimizer="lbfgs", sweep={"C": [1e-4, 0.1, 10.0]})
    fitted = head_fit.fit_best(x, y, xv, yv, 3, cfg, seed=0)
    assert [c.C for c in cfg.grid()] == [1e-4, 0.1, 10.0]
    assert len(fitted.heads) == 3 and fitted.val_accuracy[fitted.best] == max(fitted.val_accuracy)
    assert fitted.best == fitted.val_accuracy.index(max(fitted.val_accuracy))
    # C = 1e-4 shrinks the weights to almost nothing: far smaller than C = 10's
    w = [np.abs(h.tensors["net.0.weight"]).sum() for h in fitted.heads]
    assert w[0] < w[1] < w[2]


def test_nothing_is_chosen_without_val_rows():
    """The one rule (the stages name the task first): fit_best and the reference refuse to choose blind."""
    import pytest

    from transferlab.heads import reference

    x, y = _overlapping(20, 3)
    empty_x, empty_y = x[:0], y[:0]
    with pytest.raises(ValueError, match="no val rows"):
        head_fit.fit_best(x, y, empty_x, empty_y, 3, Head(optimizer="lbfgs"), seed=0)
    with pytest.raises(ValueError, match="no val rows"):
        reference.fit(x, y, empty_x, empty_y, seed=0)


def test_refine_tries_the_midpoints_either_side_of_the_best_c():
    """sweep.refine 1 over a decade grid: after the grid, the half-decades either side of the best on val
    (one side at the grid's edge), each fitted; the head kept is the best of all, the smallest C among ties."""
    x, y = _overlapping(60, 3)
    xv, yv = _overlapping(30, 3, seed=2)
    grid = [1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0]
    plain = head_fit.fit_best(x, y, xv, yv, 3, Head(sweep={"C": grid}), seed=0)
    fitted = head_fit.fit_best(x, y, xv, yv, 3, Head(sweep={"C": grid, "refine": 1}), seed=0)
    cs = [c.C for c in fitted.configs]
    assert cs[:len(grid)] == grid and fitted.val_accuracy[:len(grid)] == plain.val_accuracy
    best = grid[plain.best]
    i = grid.index(best)
    expected = [np.sqrt(best * grid[j]) for j in (i - 1, i + 1) if 0 <= j < len(grid)]
    np.testing.assert_allclose(cs[len(grid):], expected)
    assert fitted.val_accuracy[fitted.best] == max(fitted.val_accuracy) >= plain.val_accuracy[plain.best]
    tied = [c for c, a in zip(cs, fitted.val_accuracy, strict=True) if a == max(fitted.val_accuracy)]
    assert cs[fitted.best] == min(tied)  # ties: the strongest regularisation, though refine fitted it later
    two = head_fit.fit_best(x, y, xv, yv, 3, Head(sweep={"C": grid, "refine": 2}), seed=0)
    assert len(two.configs) > len(fitted.configs)  # round two: midpoints around the new best
