"""Fit the configured head on cached features and keep the best on val: the linear probe (optimizer lbfgs,
numpy + scipy) or AdamW heads (torch, loaded only for them). Heads come back as head_file.HeadFile."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transferlab.config.methods import Head
from transferlab.heads import head_file, linear_probe
from transferlab.heads.head_file import HeadFile


@dataclass(frozen=True)
class Fitted:
    """The heads of a config's grid (one without a sweep; lbfgs: then those of sweep.refine), their configs and
    val accuracy, and the one kept."""

    configs: list[Head]
    heads: list[HeadFile]
    val_accuracy: list[float]
    best: int
    stats: dict

    @property
    def head(self) -> HeadFile:
        return self.heads[self.best]


def fit_best(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, n_classes: int, cfg: Head,
             seed: int) -> Fitted:
    """Fit cfg's head, or each head of cfg.sweep, and keep the best on val: the highest val accuracy, ties to
    the first in grid order (kind, then lr, then weight decay, as written); lbfgs: ties to the smallest C, the
    strongest regularisation (the heads: C as written, then the Cs of sweep.refine in the order fitted).
    Without val rows nothing can be chosen: a ValueError (the stages say which task, before fitting)."""
    if not len(y_val):
        raise ValueError("no val rows to choose a head on")
    if cfg.optimizer == "lbfgs":  # one full-batch L-BFGS per C on the warm-started path, then sweep.refine's
        fits = linear_probe.search(x, y, x_val, y_val, n_classes, cfg)
        stats = {"seconds": sum(f.stats["seconds"] for f in fits),
                 "final_train_loss": [f.stats["final_train_loss"] for f in fits]}
        accs = [f.val_accuracy for f in fits]
        # ties to the strongest regularisation (the smallest C), wherever sweep.refine put it in the order
        best = min(range(len(fits)), key=lambda i: (-accs[i], fits[i].cfg.C))
        return Fitted([f.cfg for f in fits], [f.head for f in fits], accs, best, stats)
    from transferlab.heads import torch_heads as heads  # torch

    if cfg.sweep is None:
        head, stats = heads.train(x, y, n_classes, cfg, seed)
        modules, stats["final_train_loss"] = [head], [stats["final_train_loss"]]
    else:
        modules, stats = heads.train_sweep(x, y, n_classes, cfg.grid(), seed)  # in one pass together
    trained = [heads.to_file(h) for h in modules]
    accs = [float((head_file.predict(h, x_val).argmax(1) == y_val).mean()) for h in trained]
    best = int(np.argmax(accs))  # the first of the best
    return Fitted(cfg.grid(), trained, accs, best, stats)
