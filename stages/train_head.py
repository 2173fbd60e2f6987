"""Stage train_head@<task>: train a linear or MLP head on a cached feature set (the backbone never runs).

With `head.sweep`, every head of the grid is trained together and the best on val is kept: the highest val
accuracy, ties to the first in grid order (kind, then lr, then weight decay, as written; the reference keeps
the first of its C grid the same way). head.json and sweep.csv record every head."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from stages import cli, head_file, head_fit, reference
from stages import params as P
from stages.atomic import write_csv, write_json
from stages.feature_store import load_features
from stages.paths import HEAD_FILE, HEAD_INFO_FILE, REFERENCE_FILE, SWEEP_FILE, Layout
from stages.tasks import select

SWEEP_COLUMNS = ["config", "kind", "optimizer", "lr", "weight_decay", "C", "val_accuracy"]


@dataclass(frozen=True)
class HeadResult:
    val_accuracy: float
    n_train: int
    seconds: float


def run(task_name: str, task: P.Task, cfg: P.Head, seed: int, root: Path, out_dir: Path) -> HeadResult:
    feats, index = load_features(task.features, root)
    sel = select(index, task, seed, task_name)
    train, val = sel.split("train"), sel.split("val")
    x, y = feats[train["row"].to_numpy()], train["y"].to_numpy()
    x_val, y_val = feats[val["row"].to_numpy()], val["y"].to_numpy()
    grid = cfg.grid()  # one head without a sweep
    fitted = head_fit.fit_best(x, y, x_val, y_val, len(sel.classes), cfg, seed)
    head, accs, best, stats = fitted.head, fitted.val_accuracy, fitted.best, fitted.stats
    val_acc = accs[best]
    sweep = [{"config": _label(c), "kind": c.kind, "optimizer": c.optimizer, "lr": c.lr,
              "weight_decay": c.weight_decay, "C": c.C,
              "val_accuracy": round(a, 6), "final_train_loss": round(loss, 6)}
             for c, a, loss in zip(grid, accs, stats["final_train_loss"], strict=True)]
    ref_weights, ref = reference.fit(x, y, x_val, y_val, seed)
    info = {"task": task_name, "features": task.features, "classes": sel.classes,
            "hyperparameters": {**grid[best].model_dump(), "sweep": cfg.model_dump()["sweep"]},
            "n_train": int(len(train)),
            "val_accuracy": round(val_acc, 6), "seconds": round(stats["seconds"], 3),
            "selected": sweep[best]["config"], "sweep": sweep, "reference": ref}
    out_dir.mkdir(parents=True, exist_ok=True)
    head_file.save(head, out_dir / HEAD_FILE, {"classes": sel.classes})
    reference.save(ref_weights, out_dir / REFERENCE_FILE, ref)
    write_csv(out_dir / SWEEP_FILE, pd.DataFrame(sweep)[SWEEP_COLUMNS])
    write_json(out_dir / HEAD_INFO_FILE, info)
    return HeadResult(val_acc, len(train), stats["seconds"])


def _label(c: P.Head) -> str:
    """A head's name in the sweep (the x axis of its plot)."""
    if c.optimizer == "lbfgs":
        return f"{c.kind} lbfgs C={c.C:g}"
    return f"{c.kind} lr={c.lr:g} wd={c.weight_decay:g}"


def _main(params: P.Params, task: str) -> str:
    layout = Layout()
    res = run(task, params.tasks[task], params.head, params.seed, layout.root, layout.head(task))
    return (f"train_head@{task}: val accuracy {res.val_accuracy:.3f} on {res.n_train} "
            f"training images ({res.seconds:.1f}s)")


def main(argv: list[str] | None = None) -> None:
    cli.stage_main(__doc__, _main, argv)


if __name__ == "__main__":
    main()
