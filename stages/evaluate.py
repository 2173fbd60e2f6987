"""Stage evaluate@<task>: metrics.json per model kind (head, reference, prototype, finetune, scratch), a
confusion matrix and the data-efficiency curve as CSV (DVC plots) and PNG.

A task without shot_seeds or efficiency_shots is evaluated without torch and scikit-learn: the trained head
through stages.head_file, the reference and the metrics below in numpy. Every DVC stage is a fresh process,
and those imports were most of this one's time: `import stages.evaluate` took 3.2-3.8 s with them and takes
0.6-0.7 s without; the stage on 2,000 x 2048 features of 5 classes, 4.1-5.3 s then, 1.4-1.8 s now (measured
on 2 cores). Only few-label results (shot_seeds, efficiency_shots) fit heads: the reference loads scikit-learn,
AdamW heads torch."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from stages import cli, fewshot, head_file, reference
from stages import params as P
from stages.atomic import atomic_path, write_csv, write_json
from stages.errors import PipelineError
from stages.feature_store import load_features
from stages.paths import (
    FINETUNE_INFO_FILE,
    HEAD_FILE,
    HEAD_INFO_FILE,
    PREDICTIONS_FILE,
    REFERENCE_FILE,
    SCRATCH_INFO_FILE,
    SWEEP_FILE,
    Layout,
)
from stages.tasks import select

# ---- metrics: scikit-learn's, in numpy ---------------------------------------------------------------
# Not sklearn.metrics: importing it costs a fresh stage process 0.7-1.4 s (measured, after numpy and pandas),
# far more than these computations on any test split. tests/stages/test_evaluate.py checks them against
# scikit-learn's.


def confusion(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """confusion_matrix(y, pred, labels=range(n_classes)): counts, rows the truth, columns the prediction."""
    y, pred = np.asarray(y, np.int64), np.asarray(pred, np.int64)
    if len(y) and (min(y.min(), pred.min()) < 0 or max(y.max(), pred.max()) >= n_classes):
        raise ValueError(f"class indices must lie in 0..{n_classes - 1}")
    return np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """accuracy_score(y, pred)."""
    return float(np.mean(np.asarray(y) == np.asarray(pred)))


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """f1_score(y, pred, labels=range(n_classes), average="macro", zero_division=0): the mean over every class
    of 2 tp / (2 tp + fp + fn), 0 for a class neither in y nor predicted."""
    cm = confusion(y, pred, n_classes)
    denom = cm.sum(0) + cm.sum(1)  # predicted + actual = 2 tp + fp + fn
    f1 = np.divide(2.0 * np.diag(cm), denom, out=np.zeros(n_classes), where=denom > 0)
    return float(f1.mean())


def scores(preds: pd.DataFrame, n_train: int, n_classes: int) -> dict:
    """The contract metrics from a frame with split, y (truth) and pred."""
    val, test = preds[preds["split"] == "val"], preds[preds["split"] == "test"]
    return {"test_accuracy": round(accuracy(test["y"], test["pred"]), 6),
            "val_accuracy": round(accuracy(val["y"], val["pred"]), 6) if len(val) else None,
            "macro_f1": round(macro_f1(test["y"], test["pred"], n_classes), 6),
            "n_train": int(n_train), "n_test": int(len(test))}


def feature_predictions(task_name: str, task: P.Task, seed: int, layout: Layout) -> dict[str, tuple]:
    """Val/test predictions of the models trained on cached features: kind -> (frame, info)."""
    feats, index = load_features(task.features, layout.root)
    sel = select(index, task, seed, task_name)
    evals = sel.rows[sel.rows["split"].isin(["val", "test"])]
    x = feats[evals["row"].to_numpy()]
    frame = evals[["image_id", "split", "target", "y"]]
    info = json.loads((layout.head(task_name) / HEAD_INFO_FILE).read_text())
    head = head_file.load(layout.head(task_name) / HEAD_FILE)
    ref = reference.load(layout.head(task_name) / REFERENCE_FILE)
    return {"head": (frame.assign(pred=head_file.predict(head, x).argmax(1)), info),
            "reference": (frame.assign(pred=reference.predict(ref, x)), {**info, **info["reference"]})}


def prototype_predictions(task_name: str, task: P.Task, seed: int, layout: Layout) -> tuple[pd.DataFrame, dict]:
    """The training-free prototype head fitted on the task's own train split: (val/test frame, info)."""
    feats, index = load_features(task.features, layout.root)
    sel = select(index, task, seed, task_name)
    train, evals = sel.split("train"), sel.rows[sel.rows["split"].isin(["val", "test"])]
    protos = fewshot.fit_prototypes(feats[train["row"].to_numpy()], train["y"].to_numpy(), len(sel.classes))
    pred = fewshot.predict_prototypes(protos, feats[evals["row"].to_numpy()]).argmax(1)
    return evals[["image_id", "split", "target", "y"]].assign(pred=pred), {"n_train": len(train)}


def few_label_results(task_name: str, task: P.Task, head_cfg: P.Head, seed: int, layout: Layout,
                      metrics: dict, n_classes: int) -> pd.DataFrame:
    """shot_seeds: mean +- std over the k-shot draws, added to `metrics`; the data-efficiency curve (the
    efficiency_shots, else the task's own point) -> efficiency.csv (a DVC plot) and efficiency.png."""
    feats, index = load_features(task.features, layout.root)
    known = {}
    if task.shot_seeds:
        known[task.shots] = fewshot.over_seeds(feats, index, task, task_name, task.shot_seeds, head_cfg)
        for method, summary in fewshot.seed_summary(known[task.shots]).items():
            metrics[method].update(summary)
    if task.efficiency_shots:
        curve = fewshot.efficiency(feats, index, task, task_name, task.efficiency_shots,
                                   task.shot_seeds or [seed], head_cfg, known=known)
    else:  # a task using every training image: its mean count per class
        curve = fewshot.own_points(metrics, task.shots or round(metrics["head"]["n_train"] / n_classes, 1))
    write_csv(layout.results(task_name) / "efficiency.csv", curve)
    fewshot.plot_curve(curve, layout.results(task_name) / "efficiency.png",
                       f"{task_name}: test accuracy vs training images per class")
    return curve


def _plot(confusions: dict[str, np.ndarray], classes: list[str], dest: Path, normalize: bool) -> None:
    # matplotlib's Figure without pyplot, as its docs advise for files written by a server: no backend to
    # select, no global figure registry to close
    from matplotlib.figure import Figure

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


def _require_inputs(task_name: str, layout: Layout) -> None:
    """The trained models' files, named with the stage that writes them, before anything is read."""
    needed = {layout.head(task_name) / f: "train_head" for f in (HEAD_INFO_FILE, HEAD_FILE, REFERENCE_FILE)}
    needed[layout.finetune(task_name) / FINETUNE_INFO_FILE] = "finetune"
    for path, stage in needed.items():
        if not path.is_file():
            raise PipelineError(f"{path} not found; run `dvc repro {stage}@{task_name}` first")


def run(task_name: str, task: P.Task, cfg: P.Evaluate, seed: int, layout: Layout,
        head: P.Head | None = None) -> dict:
    """`head`: the settings of the heads fitted per shot seed and efficiency point (params.head)."""
    _require_inputs(task_name, layout)
    out_dir = layout.results(task_name)
    all_preds = feature_predictions(task_name, task, seed, layout)
    all_preds["prototype"] = prototype_predictions(task_name, task, seed, layout)
    preds, head_info = all_preds["head"]
    classes = head_info["classes"]
    if not (preds["split"] == "test").any():  # scikit-learn's metrics raised here; ours would give NaN
        raise PipelineError(f"tasks.{task_name}: no test images among its classes; add images or raise the "
                            f"test_fraction of the dataset of feature set {task.features!r}")
    ft_info = json.loads((layout.finetune(task_name) / FINETUNE_INFO_FILE).read_text())
    if ft_info["mode"] != "none":
        all_preds["finetune"] = (pd.read_parquet(layout.finetune(task_name) / PREDICTIONS_FILE), ft_info)
    scratch_path = layout.scratch(task_name) / SCRATCH_INFO_FILE  # absent where scratch@<task> never ran
    if scratch_path.is_file() and (sc_info := json.loads(scratch_path.read_text()))["ran"]:
        all_preds["scratch"] = (pd.read_parquet(layout.scratch(task_name) / PREDICTIONS_FILE), sc_info)
    metrics = {}
    for kind, (p, info) in all_preds.items():
        metrics[kind] = scores(p, info["n_train"], len(classes))  # wall-clock stays out: metrics compare runs
        if kind == "finetune":
            metrics[kind]["mode"] = info["mode"]
    few_label_results(task_name, task, head or P.Head(), seed, layout, metrics, len(classes))
    write_json(out_dir / "metrics.json", metrics)
    test = preds[preds["split"] == "test"]
    write_csv(out_dir / "confusion.csv", pd.DataFrame({"actual": test["target"].to_numpy(),
                                                       "predicted": [classes[i] for i in test["pred"]]}))
    cms = {k: confusion(p[p["split"] == "test"]["y"], p[p["split"] == "test"]["pred"], len(classes))
           for k, (p, _) in all_preds.items()}
    _plot(cms, classes, out_dir / "confusion.png", cfg.normalize_confusion)
    # the head sweep's val accuracy per head, as a DVC plot beside the confusion matrix
    write_csv(out_dir / SWEEP_FILE, pd.read_csv(layout.head(task_name) / SWEEP_FILE))
    return metrics


def _main(params: P.Params, task: str) -> str:
    metrics = run(task, params.tasks[task], params.evaluate, params.seed, Layout(), params.head)
    return f"evaluate@{task}: " + ", ".join(f"{k} test accuracy {m['test_accuracy']:.3f}"
                                            for k, m in metrics.items())


def main(argv: list[str] | None = None) -> None:
    cli.stage_main(__doc__, _main, argv)


if __name__ == "__main__":
    main()
