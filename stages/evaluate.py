"""Stage evaluate@<task>: metrics.json per model kind (head, finetune), a confusion matrix as CSV and PNG."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from stages import cli, heads, reference
from stages import params as P
from stages.atomic import atomic_path, write_csv, write_json
from stages.features import load_features
from stages.finetune import INFO_FILE as FT_INFO
from stages.finetune import PREDICTIONS_FILE
from stages.paths import Layout
from stages.tasks import select
from stages.train_head import HEAD_FILE, REFERENCE_FILE, SWEEP_FILE
from stages.train_head import INFO_FILE as HEAD_INFO


def scores(preds: pd.DataFrame, n_train: int, n_classes: int) -> dict:
    """The contract metrics from a frame with split, y (truth) and pred."""
    val, test = preds[preds["split"] == "val"], preds[preds["split"] == "test"]
    labels = list(range(n_classes))
    return {"test_accuracy": round(float(accuracy_score(test["y"], test["pred"])), 6),
            "val_accuracy": round(float(accuracy_score(val["y"], val["pred"])), 6) if len(val) else None,
            "macro_f1": round(float(f1_score(test["y"], test["pred"], labels=labels, average="macro",
                                             zero_division=0)), 6),
            "n_train": int(n_train), "n_test": int(len(test))}


def feature_predictions(task_name: str, task: P.Task, seed: int, layout: Layout) -> dict[str, tuple]:
    """Val/test predictions of the models trained on cached features: kind -> (frame, info)."""
    feats, index = load_features(task.features, layout.root)
    sel = select(index, task, seed, task_name)
    evals = sel.rows[sel.rows["split"].isin(["val", "test"])]
    x = feats[evals["row"].to_numpy()]
    frame = evals[["image_id", "split", "target", "y"]]
    info = json.loads((layout.head(task_name) / HEAD_INFO).read_text())
    head = heads.load(layout.head(task_name) / HEAD_FILE)
    ref = reference.load(layout.head(task_name) / REFERENCE_FILE)
    return {"head": (frame.assign(pred=heads.predict(head, x).argmax(1)), info),
            "reference": (frame.assign(pred=reference.predict(ref, x)), {**info, **info["reference"]})}


def _plot(confusions: dict[str, np.ndarray], classes: list[str], dest: Path, normalize: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(confusions), figsize=(4.5 * len(confusions), 4), squeeze=False)
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
    plt.close(fig)


def run(task_name: str, task: P.Task, cfg: P.Evaluate, seed: int, layout: Layout) -> dict:
    out_dir = layout.results(task_name)
    all_preds = feature_predictions(task_name, task, seed, layout)
    preds, head_info = all_preds["head"]
    classes = head_info["classes"]
    ft_info = json.loads((layout.finetune(task_name) / FT_INFO).read_text())
    if ft_info["mode"] != "none":
        all_preds["finetune"] = (pd.read_parquet(layout.finetune(task_name) / PREDICTIONS_FILE), ft_info)
    metrics = {}
    for kind, (p, info) in all_preds.items():
        metrics[kind] = scores(p, info["n_train"], len(classes))  # wall-clock stays out: metrics compare runs
        if kind == "finetune":
            metrics[kind]["mode"] = info["mode"]
    write_json(out_dir / "metrics.json", metrics)
    test = preds[preds["split"] == "test"]
    write_csv(out_dir / "confusion.csv", pd.DataFrame({"actual": test["target"].to_numpy(),
                                                       "predicted": [classes[i] for i in test["pred"]]}))
    cms = {k: confusion_matrix(p[p["split"] == "test"]["y"], p[p["split"] == "test"]["pred"],
                               labels=range(len(classes))) for k, (p, _) in all_preds.items()}
    _plot(cms, classes, out_dir / "confusion.png", cfg.normalize_confusion)
    # the head sweep's val accuracy per head, as a DVC plot beside the confusion matrix
    write_csv(out_dir / SWEEP_FILE, pd.read_csv(layout.head(task_name) / SWEEP_FILE))
    return metrics


def _main(params: P.Params, task: str) -> str:
    metrics = run(task, params.tasks[task], params.evaluate, params.seed, Layout())
    return f"evaluate@{task}: " + ", ".join(f"{k} test accuracy {m['test_accuracy']:.3f}"
                                            for k, m in metrics.items())


def main(argv: list[str] | None = None) -> None:
    cli.stage_main(__doc__, _main, argv)


if __name__ == "__main__":
    main()
