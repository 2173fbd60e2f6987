"""A task's evaluation: every method's val/test predictions (head, reference, prototype, finetune, scratch) ->
metrics.json, the confusion matrix and the data-efficiency curve (CSV for DVC plots, and PNG).

A task without shot_seeds or efficiency_shots is evaluated without torch and scikit-learn: the trained head
through heads.head_file, the reference and the metrics in numpy, and matplotlib only to draw. Every DVC stage
is a fresh process, and those imports were most of this one's time: importing the stage took 3.2-3.8 s with
them and takes 0.6-0.7 s without; the stage on 2,000 x 2048 features of 5 classes, 4.1-5.3 s then, 1.4-1.8 s
now (measured on 2 cores). Only few-label results (shot_seeds, efficiency_shots) fit heads: the reference
loads scikit-learn, AdamW heads torch."""
from __future__ import annotations

import json

import pandas as pd

from transferlab.config import params as P
from transferlab.config.errors import PipelineError
from transferlab.config.paths import (
    FINETUNE_INFO_FILE,
    HEAD_FILE,
    HEAD_INFO_FILE,
    PREDICTIONS_FILE,
    REFERENCE_FILE,
    SCRATCH_INFO_FILE,
    SWEEP_FILE,
    ZERO_SHOT_INFO_FILE,
    Layout,
)
from transferlab.data.tasks import select
from transferlab.evaluation import fewshot, plots
from transferlab.evaluation.metrics import confusion, scores
from transferlab.features.sets import load_features
from transferlab.heads import head_file, reference, zero_shot
from transferlab.heads.prototypes import fit_prototypes, predict_prototypes
from transferlab.io.atomic import write_csv, write_json


def feature_predictions(task_name: str, task: P.Task, seed: int, layout: Layout) -> dict[str, tuple]:
    """Val/test predictions of the models trained on cached features: kind -> (frame, info)."""
    feats, index = load_features(task.features, layout.root)
    sel = select(index, task, seed, task_name)
    evals = sel.rows[sel.rows["split"].isin(["val", "test"])]
    x = feats[evals["row"].to_numpy()]
    frame = evals[["image_id", "split", "target", "y"]]
    info = json.loads((layout.head(task_name) / HEAD_INFO_FILE).read_text())
    head = head_file.load(layout.head(task_name) / HEAD_FILE)
    preds = {"head": (frame.assign(pred=head_file.predict(head, x).argmax(1)), info)}
    if "skipped" not in info["reference"]:  # head.reference
        ref = reference.load(layout.head(task_name) / REFERENCE_FILE)
        preds["reference"] = (frame.assign(pred=reference.predict(ref, x)), {**info, **info["reference"]})
    return preds


def zero_shot_predictions(task_name: str, task: P.Task, seed: int, layout: Layout) -> tuple | None:
    """Val/test predictions of the zero-shot head (no training image: n_train 0), or None where the task's
    feature set has no text tower."""
    zero_dir = layout.zero_shot(task_name)
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


def few_label_results(task_name: str, task: P.Task, head_cfg: P.Head, seed: int, layout: Layout,
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
    write_csv(layout.results(task_name) / "efficiency.csv", curve)
    plots.plot_curve(curve, layout.results(task_name) / "efficiency.png",
                       f"{task_name}: test accuracy vs training images per class")
    return curve


def _require_inputs(task_name: str, layout: Layout) -> None:
    """The trained models' files, named with the stage that writes them, before anything is read."""
    needed = {layout.head(task_name) / f: "train_head" for f in (HEAD_INFO_FILE, HEAD_FILE)}
    needed[layout.finetune(task_name) / FINETUNE_INFO_FILE] = "finetune"
    for path, stage in needed.items():
        if not path.is_file():
            raise PipelineError(f"{path} not found; run `dvc repro {stage}@{task_name}` first")


def evaluate(task_name: str, task: P.Task, cfg: P.Evaluate, seed: int, layout: Layout,
             head: P.Head | None = None) -> dict:
    """`head`: the settings of the heads fitted per shot seed and efficiency point (params.head)."""
    _require_inputs(task_name, layout)
    out_dir = layout.results(task_name)
    all_preds = feature_predictions(task_name, task, seed, layout)
    all_preds["prototype"] = prototype_predictions(task_name, task, seed, layout)
    if (zero := zero_shot_predictions(task_name, task, seed, layout)) is not None:
        all_preds["zero_shot"] = zero
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
    plots.plot_confusions(cms, classes, out_dir / "confusion.png", cfg.normalize_confusion)
    # the head sweep's val accuracy per head, as a DVC plot beside the confusion matrix
    write_csv(out_dir / SWEEP_FILE, pd.read_csv(layout.head(task_name) / SWEEP_FILE))
    return metrics
