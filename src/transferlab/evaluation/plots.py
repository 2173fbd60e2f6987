"""The figures written beside the metrics: confusion matrices and the data-efficiency curve, as PNG files.

matplotlib's Figure without pyplot, as its docs advise for files written by a server: no backend to select, no
global figure registry to close."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from transferlab.io.atomic import atomic_path


def plot_confusions(confusions: dict[str, np.ndarray], classes: list[str], dest: Path, normalize: bool) -> None:
    """One confusion matrix per method, side by side (counts, or rows normalised)."""
    fig = Figure(figsize=(4.5 * len(confusions), 4))
    axes = fig.subplots(1, len(confusions), squeeze=False)
    for ax, (kind, cm) in zip(axes[0], confusions.items(), strict=True):
        shown = cm / cm.sum(1, keepdims=True).clip(min=1) if normalize else cm
        ax.imshow(shown, cmap="Blues")
        ax.set(title=f"{kind} (test)", xlabel="predicted", ylabel="actual",
               xticks=range(len(classes)), yticks=range(len(classes)))
        ax.set_xticklabels(classes, rotation=45, ha="right")
        ax.set_yticklabels(classes)
        for (i, j), v in np.ndenumerate(shown):
            ax.text(j, i, f"{v:.2f}" if normalize else str(v), ha="center", va="center", fontsize=7)
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def plot_curve(curve: pd.DataFrame, dest: Path, title: str) -> None:
    """Accuracy against shots per class, one line per method with a +-std band (log-scaled x)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for method, g in curve.groupby("method", sort=False):
        ax.plot(g["shots"], g["test_accuracy"], marker="o", label=method)
        ax.fill_between(g["shots"], g["test_accuracy"] - g["std"], g["test_accuracy"] + g["std"], alpha=0.2)
    if curve["shots"].nunique() > 1 and curve["shots"].min() > 0:
        ax.set_xscale("log")
    ax.set_xticks(sorted(curve["shots"].unique()), [f"{s:g}" for s in sorted(curve["shots"].unique())])
    ax.set(title=title, xlabel="training images per class", ylabel="test accuracy", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
