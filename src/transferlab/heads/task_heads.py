"""A task's heads on a cached feature set (the backbone never runs): the configured head, or every head of
head.sweep with the best on val kept (the highest val accuracy, ties to the first in grid order: kind, then lr,
then weight decay, as written; lbfgs: to the smallest C, as the reference keeps the first of its ascending C
grid), and the reference row. head.json and sweep.csv record every head."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from transferlab.config import params as P
from transferlab.config.errors import PipelineError
from transferlab.config.paths import HEAD_FILE, HEAD_INFO_FILE, REFERENCE_FILE, SWEEP_FILE
from transferlab.data.tasks import select
from transferlab.features.sets import load_features
from transferlab.heads import head_file, reference
from transferlab.heads.fit import fit_best
from transferlab.io.atomic import write_csv, write_json

SWEEP_COLUMNS = ["config", "kind", "optimizer", "lr", "weight_decay", "C", "val_accuracy"]


@dataclass(frozen=True)
class HeadResult:
    val_accuracy: float
    n_train: int
    seconds: float


def train_task_head(task_name: str, task: P.Task, cfg: P.Head, seed: int, root: Path, out_dir: Path) -> HeadResult:
    """Fit the head (or head.sweep's best on val) and the reference (as head.reference says) on the task's
    cached features; write head.safetensors, reference.safetensors, sweep.csv and head.json into out_dir."""
    feats, index = load_features(task.features, root)
    sel = select(index, task, seed, task_name)
    train, val = sel.split("train"), sel.split("val")
    x, y = feats[train["row"].to_numpy()], train["y"].to_numpy()
    x_val, y_val = feats[val["row"].to_numpy()], val["y"].to_numpy()
    if not len(val):  # one rule for the head, its sweep and the reference: what val chooses needs val rows
        raise PipelineError(f"tasks.{task_name}: no val images among its classes, and the head and the "
                            "reference's C are chosen on them; raise the dataset's val_fraction or add images")
    fitted = fit_best(x, y, x_val, y_val, len(sel.classes), cfg, seed)
    grid = fitted.configs  # one head without a sweep; lbfgs: the grid, then sweep.refine's Cs
    head, accs, best, stats = fitted.head, fitted.val_accuracy, fitted.best, fitted.stats
    val_acc = accs[best]
    sweep = [{"config": _label(c), "kind": c.kind, "optimizer": c.optimizer, "lr": c.lr,
              "weight_decay": c.weight_decay, "C": c.C,
              "val_accuracy": round(a, 6), "final_train_loss": round(loss, 6)}
             for c, a, loss in zip(grid, accs, stats["final_train_loss"], strict=True)]
    ref_path = out_dir / REFERENCE_FILE
    if why := reference.skipped(cfg.reference, *x.shape):
        ref_weights, ref = None, {"skipped": why}
    else:
        ref_weights, ref = reference.fit(x, y, x_val, y_val, seed)
    info = {"task": task_name, "features": task.features, "classes": sel.classes,
            "hyperparameters": {**grid[best].model_dump(), "sweep": cfg.model_dump()["sweep"]},
            "n_train": int(len(train)),
            "val_accuracy": round(val_acc, 6), "seconds": round(stats["seconds"], 3),
            "selected": sweep[best]["config"], "sweep": sweep, "reference": ref}
    out_dir.mkdir(parents=True, exist_ok=True)
    head_file.save(head, out_dir / HEAD_FILE, {"classes": sel.classes})
    if ref_weights is None:
        ref_path.unlink(missing_ok=True)
    else:
        reference.save(ref_weights, ref_path, ref)
    write_csv(out_dir / SWEEP_FILE, pd.DataFrame(sweep)[SWEEP_COLUMNS])
    write_json(out_dir / HEAD_INFO_FILE, info)
    return HeadResult(val_acc, len(train), stats["seconds"])


def _label(c: P.Head) -> str:
    """A head's name in the sweep (the x axis of its plot)."""
    if c.optimizer == "lbfgs":
        return f"{c.kind} lbfgs C={c.C:g}"
    return f"{c.kind} lr={c.lr:g} wd={c.weight_decay:g}"
