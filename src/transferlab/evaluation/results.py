"""A task's evaluation: every method's val/test predictions (head, reference, prototype, finetune, scratch) ->
metrics.json, the confusion matrix and the data-efficiency curve (CSV for DVC plots, and PNG).

A task without shot_seeds or efficiency_shots is evaluated without torch and scikit-learn: the trained head
through heads.head_file, the reference and the metrics in numpy, and matplotlib only to draw (when every task
was one DVC stage, those imports were most of this step's time). Only few-label results (shot_seeds,
efficiency_shots) fit heads: the reference loads scikit-learn, AdamW heads torch."""
from __future__ import annotations

import json

import pandas as pd

from transferlab.config import params as P
from transferlab.config.errors import PipelineError
from transferlab.config.paths import (
    FINETUNE_INFO_FILE,
    HEAD_FILE,
    HEAD_INFO_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    REFERENCE_FILE,
    SCRATCH_INFO_FILE,
    SWEEP_FILE,
    ZERO_SHOT_INFO_FILE,
    Layout,
    TaskDir,
)
from transferlab.data.tasks import select
from transferlab.evaluation import fewshot, plots
from transferlab.evaluation.metrics import confusion, scores
from transferlab.features.sets import load_features
from transferlab.heads import head_file, reference, zero_shot
from transferlab.heads.prototypes import fit_prototypes, predict_prototypes
from transferlab.io.atomic import write_csv, write_json


def feature_predictions(task_name: str, task: P.Task, seed: int, layout: Layout, out: TaskDir
                        ) -> dict[str, tuple]:
    """Val/test predictions of the models trained on cached features: kind -> (frame, info)."""
    feats, index = load_features(task.features, layout.root)
    sel = select(index, task, seed, task_name)
    evals = sel.rows[sel.rows["split"].isin(["val", "test"])]
    x = feats[evals["row"].to_numpy()]
    frame = evals[["image_id", "split", "target", "y"]]
    info = json.loads((out.head / HEAD_INFO_FILE).read_text())
    head = head_file.load(out.head / HEAD_FILE)
    preds = {"head": (frame.assign(pred=head_file.predict(head, x).argmax(1)), info)}
    if "skipped" not in info["reference"]:  # head.reference
        ref = reference.load(out.head / REFERENCE_FILE)
        preds["reference"] = (frame.assign(pred=reference.predict(ref, x)), {**info, **info["reference"]})
    return preds


def zero_shot_predictions(task_name: str, task: P.Task, seed: int, layout: Layout, out: TaskDir
                          ) -> tuple | None:
    """Val/test predictions of the zero-shot head (no training image: n_train 0), or None where the task's
    feature set has no text tower."""
    zero_dir = out.zero_shot
    if not (zero_dir / ZERO_SHOT_INFO_FILE).is_file():
        return None
    _, embeddings = zero_shot.read(zero_dir)
    if embeddings is None:
        return None
    feats, index = load_features(task.features, layout.root)
    sel = select(index, task, seed, task_name)
    evals = sel.rows[sel.rows["split"].isin(["val", "test"])]
    pred = zero_shot.predict(embeddings, feats[evals["row"].to_numpy()]).argmax(1)
    return evals[["image_id", "split", "target", "y"]].assign(pred=pred), {"n_train": 0}


def prototype_predictions(task_name: str, task: P.Task, seed: int, layout: Layout) -> tuple[pd.DataFrame, dict]:
    """The training-free prototype head fitted on the task's own train split: (val/test frame, info)."""
    feats, index = load_features(task.features, layout.root)
    sel = select(index, task, seed, task_name)
    train, evals = sel.split("train"), sel.rows[sel.rows["split"].isin(["val", "test"])]
    protos = fit_prototypes(feats[train["row"].to_numpy()], train["y"].to_numpy(), len(sel.classes))
    pred = predict_prototypes(protos, feats[evals["row"].to_numpy()]).argmax(1)
    return evals[["image_id", "split", "target", "y"]].assign(pred=pred), {"n_train": len(train)}


def few_label_results(task_name: str, task: P.Task, head_cfg: P.Head, seed: int, layout: Layout, out: TaskDir,
                      metrics: dict, n_classes: int) -> pd.DataFrame:
    """shot_seeds: mean +- std over the k-shot draws, added to `metrics`; the data-efficiency curve (the
    efficiency_shots, else the task's own point) -> efficiency.csv (a DVC plot) and efficiency.png."""
    feats, index = load_features(task.features, layout.root)
    known = {}
    methods = fewshot.METHODS if head_cfg.reference != "never" else tuple(
        m for m in fewshot.METHODS if m != "reference")  # the draws are few-shot: auto fits it on them
    if task.shot_seeds:
        known[task.shots] = fewshot.over_seeds(feats, index, task, task_name, task.shot_seeds, head_cfg,
                                               methods)
        for method, summary in fewshot.seed_summary(known[task.shots]).items():
            if method in metrics:  # a reference left out of the full task (head.reference) has no row
                metrics[method].update(summary)
    if task.efficiency_shots:
        curve = fewshot.efficiency(feats, index, task, task_name, task.efficiency_shots,
                                   task.shot_seeds or [seed], head_cfg, methods, known=known)
    else:  # a task using every training image: its mean count per class
        curve = fewshot.own_points(metrics, task.shots or round(metrics["head"]["n_train"] / n_classes, 1))
    if "zero_shot" in metrics:  # no training image: the curve's k = 0 point
        curve = fewshot.with_zero_shot(curve, metrics["zero_shot"])
    write_csv(out.results / "efficiency.csv", curve)
    plots.plot_curve(curve, out.results / "efficiency.png",
                     f"{task_name}: test accuracy vs training images per class")
    return curve


def _require_inputs(out: TaskDir) -> None:
    """The trained models' files (transferlab.tasks.run trains them first), before anything is read."""
    for path in [out.head / HEAD_INFO_FILE, out.head / HEAD_FILE, out.finetune / FINETUNE_INFO_FILE]:
        if not path.is_file():
            raise PipelineError(f"{path} not found; train the task's head and its finetune method first")


def evaluate(task_name: str, task: P.Task, cfg: P.Evaluate, seed: int, layout: Layout, out: TaskDir,
             head: P.Head | None = None) -> dict:
    """Every method's scores from the models in `out` into out.results (layout: where the features are).
    `head`: the settings of the heads fitted per shot seed and efficiency point (params.head)."""
    _require_inputs(out)
    out_dir = out.results
    all_preds = feature_predictions(task_name, task, seed, layout, out)
    all_preds["prototype"] = prototype_predictions(task_name, task, seed, layout)
    if (zero := zero_shot_predictions(task_name, task, seed, layout, out)) is not None:
        all_preds["zero_shot"] = zero
    preds, head_info = all_preds["head"]
    classes = head_info["classes"]
    if not (preds["split"] == "test").any():  # scikit-learn's metrics raised here; ours would give NaN
        raise PipelineError(f"tasks.{task_name}: no test images among its classes; add images or raise the "
                            f"test_fraction of the dataset of feature set {task.features!r}")
    ft_info = json.loads((out.finetune / FINETUNE_INFO_FILE).read_text())
    if ft_info["mode"] != "none":
        all_preds["finetune"] = (pd.read_parquet(out.finetune / PREDICTIONS_FILE), ft_info)
    scratch_path = out.scratch / SCRATCH_INFO_FILE  # absent where the scratch method never ran
    if scratch_path.is_file() and (sc_info := json.loads(scratch_path.read_text()))["ran"]:
        all_preds["scratch"] = (pd.read_parquet(out.scratch / PREDICTIONS_FILE), sc_info)
    metrics = {}
    for kind, (p, info) in all_preds.items():
        metrics[kind] = scores(p, info["n_train"], len(classes))  # wall-clock stays out: metrics compare runs
        if kind == "finetune":
            metrics[kind]["mode"] = info["mode"]
    few_label_results(task_name, task, head or P.Head(), seed, layout, out, metrics, len(classes))
    write_json(out_dir / METRICS_FILE, metrics)
    test = preds[preds["split"] == "test"]
    write_csv(out_dir / "confusion.csv", pd.DataFrame({"actual": test["target"].to_numpy(),
                                                       "predicted": [classes[i] for i in test["pred"]]}))
    cms = {k: confusion(p[p["split"] == "test"]["y"], p[p["split"] == "test"]["pred"], len(classes))
           for k, (p, _) in all_preds.items()}
    plots.plot_confusions(cms, classes, out_dir / "confusion.png", cfg.normalize_confusion)
    # the head sweep's val accuracy per head, as a DVC plot beside the confusion matrix
    write_csv(out_dir / SWEEP_FILE, pd.read_csv(out.head / SWEEP_FILE))
    return metrics
