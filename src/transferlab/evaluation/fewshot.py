"""Very few labels: k-shot draws repeated over several sampling seeds (mean +- std), and test accuracy against
shots per class (the data-efficiency curve), for the head, the prototype head and the reference.

Heads are fitted through transferlab.heads.fit: the default linear probe (optimizer lbfgs) in numpy and scipy;
torch is loaded only for AdamW heads."""
from __future__ import annotations

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from transferlab.config.errors import PipelineError
from transferlab.config.methods import Head
from transferlab.config.sections import Task
from transferlab.data.tasks import Selection, label_order, select
from transferlab.heads import fit as head_fit
from transferlab.heads import head_file, reference
from transferlab.heads.prototypes import fit_prototypes, predict_prototypes

METHODS = ("head", "prototype", "reference")  # the methods fitted per draw (a fine-tune is too slow for that)
CURVE_COLUMNS = ["shots", "method", "test_accuracy", "std", "n_seeds", "n_train"]


def fit_and_score(feats: np.ndarray, sel: Selection, head_cfg: Head, seed: int,
                    methods: tuple[str, ...] = METHODS) -> dict[str, float]:
    """Fit each method on the selection's train split (head and reference seeded by `seed`) -> test accuracy."""
    train, val, test = (sel.split(s) for s in ("train", "val", "test"))
    x, y = feats[train["row"].to_numpy()], train["y"].to_numpy()
    x_val, y_val = feats[val["row"].to_numpy()], val["y"].to_numpy()
    x_test, y_test = feats[test["row"].to_numpy()], test["y"].to_numpy()
    n_classes = len(sel.classes)
    preds = {}
    if "head" in methods:  # the same method as the task's head: head.sweep's best on val, if there is a sweep
        head = head_fit.fit_best(x, y, x_val, y_val, n_classes, head_cfg, seed).head
        preds["head"] = head_file.predict(head, x_test).argmax(1)
    if "prototype" in methods:
        preds["prototype"] = predict_prototypes(fit_prototypes(x, y, n_classes), x_test).argmax(1)
    if "reference" in methods:
        weights, _ = reference.fit(x, y, x_val, y_val, seed)
        preds["reference"] = reference.predict(weights, x_test)
    return {m: float((preds[m] == y_test).mean()) for m in methods}


def over_seeds(feats: np.ndarray, index: pd.DataFrame, task: Task, name: str, seeds: list[int],
               head_cfg: Head, methods: tuple[str, ...] = METHODS) -> pd.DataFrame:
    """One k-shot draw per seed (transferlab.data.tasks.select with that seed), every method fitted on each draw ->
    a frame with seed, method, test_accuracy, n_train."""
    rows = []
    with threadpool_limits(1):  # tiny fits, many of them (AdamW heads limit torch's threads themselves)
        for seed in seeds:
            sel = select(index, task, seed, name)
            n_train = len(sel.split("train"))
            for method, acc in fit_and_score(feats, sel, head_cfg, seed, methods).items():
                rows.append({"seed": seed, "method": method, "test_accuracy": acc, "n_train": n_train})
    return pd.DataFrame(rows, columns=["seed", "method", "test_accuracy", "n_train"])


def seed_summary(per_seed: pd.DataFrame) -> dict[str, dict]:
    """method -> test_accuracy_mean, test_accuracy_std (sample std, ddof=1), n_seeds, test_accuracy_seeds."""
    out = {}
    for method, g in per_seed.groupby("method", sort=False):
        acc, seeds = g["test_accuracy"].to_numpy(), g["seed"].to_numpy()
        out[method] = {"test_accuracy_mean": round(float(acc.mean()), 6),
                       "test_accuracy_std": round(float(acc.std(ddof=1)) if len(acc) > 1 else 0.0, 6),
                       "n_seeds": int(len(acc)),
                       "test_accuracy_seeds": {str(s): round(float(a), 6)
                                               for s, a in zip(seeds, acc, strict=True)}}
    return out


def check_shots(index: pd.DataFrame, task: Task, name: str, shots: list[int], key: str) -> None:
    """Raise a PipelineError naming the class and its count when a k exceeds a class's training images."""
    train = select(index, task.model_copy(update={"shots": None}), 0, name).split("train")
    counts = train["target"].value_counts().reindex(label_order(train["target"]), fill_value=0)
    k = max(shots)
    short = counts[counts < k]
    if not short.empty:
        cls, n = short.index[0], int(short.iloc[0])
        raise PipelineError(f"tasks.{name}.{key}: class {cls!r} has {n} training images, fewer than {k}; "
                            f"use values up to {int(counts.min())} or add images")


def efficiency(feats: np.ndarray, index: pd.DataFrame, task: Task, name: str, shots: list[int],
               seeds: list[int], head_cfg: Head, methods: tuple[str, ...] = METHODS,
               known: dict[int, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Test accuracy against k shots per class, mean and std over the seeds' draws -> CURVE_COLUMNS.
    `known`: k -> an over_seeds frame already computed with these seeds and methods (not fitted again)."""
    check_shots(index, task, name, shots, "efficiency_shots")
    known = known or {}
    rows = []
    for k in sorted(shots):
        per_seed = known[k] if k in known else over_seeds(
            feats, index, task.model_copy(update={"shots": k}), name, seeds, head_cfg, methods)
        for method, s in seed_summary(per_seed).items():
            rows.append({"shots": k, "method": method, "test_accuracy": s["test_accuracy_mean"],
                         "std": s["test_accuracy_std"], "n_seeds": s["n_seeds"],
                         "n_train": int(per_seed["n_train"].iloc[0])})
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def own_points(metrics: dict[str, dict], shots: float) -> pd.DataFrame:
    """The task's own results as a one-point curve per method (for a task without efficiency_shots); zero-shot
    has its own point (with_zero_shot)."""
    rows = [{"shots": shots, "method": m.get("mode", kind) if kind == "finetune" else kind,
             "test_accuracy": m.get("test_accuracy_mean", m["test_accuracy"]),
             "std": m.get("test_accuracy_std", 0.0), "n_seeds": m.get("n_seeds", 1), "n_train": m["n_train"]}
            for kind, m in metrics.items() if kind != "zero_shot"]
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def with_zero_shot(curve: pd.DataFrame, zero: dict) -> pd.DataFrame:
    """The curve starting at k = 0: the zero-shot head's test accuracy (no draw, so no spread)."""
    row = pd.DataFrame([{"shots": 0, "method": "zero_shot", "test_accuracy": zero["test_accuracy"], "std": 0.0,
                         "n_seeds": 1, "n_train": 0}], columns=CURVE_COLUMNS)
    return pd.concat([row, curve], ignore_index=True)
