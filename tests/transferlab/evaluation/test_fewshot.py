"""Very few labels (transferlab.evaluation.fewshot): k-shot draws over seeds, the data-efficiency curve, and their
wiring through evaluate and report (the prototype head: tests/transferlab/heads/test_prototypes.py).

The library tests use scikit-learn's real digits with their 64 raw pixels as the features (no backbone: fast),
the wiring tests a tiny real project (prepare -> backbone -> features -> train_head -> finetune -> evaluate)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import REPO
from tests.projects import out_dir, subset_imagefolder
from transferlab.config import params as P
from transferlab.config.errors import PipelineError
from transferlab.config.params import Head, Task
from transferlab.config.paths import Layout
from transferlab.data.prepare import prepare
from transferlab.data.tasks import select
from transferlab.evaluation import fewshot
from transferlab.evaluation.report import report
from transferlab.evaluation.results import evaluate
from transferlab.features.build import build
from transferlab.heads.task_heads import train_task_head
from transferlab.models import backbones
from transferlab.tasks.featureset import run_featureset
from transferlab.training.task_run import train_on_images

HEAD = Head(optimizer="adamw", epochs=30, batch_size=64, lr=0.05)


# --- shot seeds -----------------------------------------------------------------------------------------


def test_shot_seeds_draw_different_shots_and_give_mean_and_finite_std(raw_digits):
    feats, index = raw_digits
    task = Task(features="f", classes=[1, 3, 5, 7, 8], shots=2, shot_seeds=[0, 1, 2])
    draws = [frozenset(select(index, task, s).split("train")["image_id"]) for s in task.shot_seeds]
    assert len(set(draws)) == 3
    per_seed = fewshot.over_seeds(feats, index, task, "t", task.shot_seeds, HEAD)
    assert len(per_seed) == 3 * len(fewshot.METHODS)
    assert set(per_seed["method"]) == set(fewshot.METHODS) and (per_seed["n_train"] == 10).all()
    summary = fewshot.seed_summary(per_seed)
    for method, s in summary.items():
        acc = per_seed.loc[per_seed["method"] == method, "test_accuracy"].to_numpy()
        assert s["n_seeds"] == 3
        assert s["test_accuracy_mean"] == pytest.approx(acc.mean(), abs=1e-6)
        assert s["test_accuracy_std"] == pytest.approx(acc.std(ddof=1), abs=1e-6)
        assert np.isfinite(s["test_accuracy_std"])
        assert list(s["test_accuracy_seeds"]) == ["0", "1", "2"]
    assert any(summary[m]["test_accuracy_std"] > 0 for m in fewshot.METHODS)  # different draws, other scores
    # the same seeds give the same numbers
    again = fewshot.over_seeds(feats, index, task, "t", task.shot_seeds, HEAD)
    pd.testing.assert_frame_equal(per_seed, again)


# --- the data-efficiency curve --------------------------------------------------------------------------


def test_efficiency_curve_shape_and_trend(raw_digits):
    feats, index = raw_digits
    task = Task(features="f", classes=[0, 2, 4, 6, 9])
    curve = fewshot.efficiency(feats, index, task, "t", [20, 1, 5], [0, 1], HEAD)
    assert list(curve.columns) == fewshot.CURVE_COLUMNS
    assert curve["shots"].tolist() == [1] * 3 + [5] * 3 + [20] * 3  # sorted by shots
    assert (curve["n_train"] == curve["shots"] * 5).all() and (curve["n_seeds"] == 2).all()
    assert curve["test_accuracy"].between(0, 1).all() and (curve["std"] >= 0).all()
    by = curve.set_index(["method", "shots"])["test_accuracy"]
    for method in fewshot.METHODS:
        assert by[method, 20] > by[method, 1], curve  # more labels help every method
    # a k already computed over the same seeds is reused as is, with the same result
    known = {5: fewshot.over_seeds(feats, index, task.model_copy(update={"shots": 5}), "t", [0, 1], HEAD)}
    reused = fewshot.efficiency(feats, index, task, "t", [1, 5, 20], [0, 1], HEAD, known=known)
    pd.testing.assert_frame_equal(curve, reused)


def test_efficiency_shots_beyond_a_class_name_the_class_and_count(raw_digits):
    feats, index = raw_digits
    task = Task(features="f", classes=[3, 4])
    n = {c: int(((index["label"] == c) & (index["split"] == "train")).sum()) for c in ("3", "4")}
    short = min(n, key=n.get)
    with pytest.raises(PipelineError) as err:
        fewshot.efficiency(feats, index, task, "few", [1, n[short] + 1], [0], HEAD)
    msg = str(err.value)
    assert "tasks.few.efficiency_shots" in msg and f"class '{short}' has {n[short]} training images" in msg


def test_own_points_use_the_seed_mean_where_there_is_one():
    metrics = {"head": {"test_accuracy": 0.8, "n_train": 50, "test_accuracy_mean": 0.7, "test_accuracy_std": 0.1,
                        "n_seeds": 5},
               "finetune": {"test_accuracy": 0.9, "n_train": 50, "mode": "lpft"}}
    curve = fewshot.own_points(metrics, 10)
    assert curve.to_dict("records") == [
        {"shots": 10, "method": "head", "test_accuracy": 0.7, "std": 0.1, "n_seeds": 5, "n_train": 50},
        {"shots": 10, "method": "lpft", "test_accuracy": 0.9, "std": 0.0, "n_seeds": 1, "n_train": 50}]


def test_plot_template_renders_one_line_per_method(tmp_path, raw_digits):
    from dvc_render.vega import VegaRenderer

    feats, index = raw_digits
    curve = fewshot.efficiency(feats, index, Task(features="f", classes=[0, 1]), "t", [1, 3], [0, 1], HEAD)
    rows = [{k: str(v) for k, v in r.items()} | {"rev": "workspace"} for r in curve.to_dict("records")]
    # the template dvc.yaml names (template: lines_by_method), which DVC finds in .dvc/plots
    spec = VegaRenderer(rows, "efficiency.csv", template=str(REPO / ".dvc/plots/lines_by_method.json"),
                        x="shots", y="test_accuracy").get_filled_template()
    assert "<DVC_METRIC" not in json.dumps(spec)
    assert spec["encoding"]["color"]["field"] == "method" and spec["encoding"]["x"]["field"] == "shots"
    assert spec["layer"][0]["encoding"]["y"]["field"] == "test_accuracy"
    assert len(spec["data"]["values"]) == len(curve) == 6


# --- through evaluate and report ------------------------------------------------------------------------

FEW = Task(features="f", classes=[0, 1, 2], shots=2, shot_seeds=[0, 1, 2], efficiency_shots=[1, 2, 4])
PLAIN = Task(features="f", classes=[0, 1, 2])


@pytest.fixture(scope="module")
def project(tmp_path_factory, digits_root):
    """45 real digit images of 3 classes, through train_head and finetune (none) for tasks FEW and PLAIN."""
    tmp = tmp_path_factory.mktemp("fewproj")
    root = subset_imagefolder(digits_root, tmp / "raw", [0, 1, 2], 15)
    layout = Layout(tmp)
    dataset = P.Dataset(source="imagefolder", root=str(root), val_fraction=0.2, test_fraction=0.2)
    prepare(dataset, layout.prepared("d"), seed=0)
    manifest = pd.read_parquet(layout.manifest("d"))
    bb = P.Backbone(arch="resnet18", weights="none", image_size=32)
    backbones.create("bb", bb, layout.backbone("bb"), seed=0)
    build("f", P.FeatureSet(dataset="d", backbone="bb"), manifest, layout.backbone("bb"), layout.features("f"),
          torch.device("cpu"))
    for name, task in (("few", FEW), ("plain", PLAIN)):
        train_task_head(name, task, HEAD, 0, layout.root, out_dir(layout, name).head)
        train_on_images("finetune", name, task, P.Finetune(), 0, layout, out_dir(layout, name),
                        torch.device("cpu"))
    params = P.Params(datasets={"d": dataset}, backbones={"bb": bb},
                      features={"f": P.FeatureSet(dataset="d", backbone="bb")},
                      tasks={"few": FEW, "plain": PLAIN}, head=HEAD)
    return layout, params


def test_evaluate_writes_prototype_seed_stats_and_the_curve(project):
    layout, params = project
    metrics = evaluate("few", FEW, P.Evaluate(), 0, layout, out_dir(layout, "few"), HEAD)
    assert json.loads((out_dir(layout, "few").results / "metrics.json").read_text()) == metrics
    assert set(metrics) == {"head", "reference", "prototype"}
    contract = {"test_accuracy", "val_accuracy", "macro_f1", "n_train", "n_test"}
    for method in fewshot.METHODS:
        m = metrics[method]
        assert contract <= set(m) and m["n_train"] == 6 and m["n_seeds"] == 3
        assert np.isfinite(m["test_accuracy_std"]) and list(m["test_accuracy_seeds"]) == ["0", "1", "2"]
    # test_accuracy stays the one of the task's own seed (0): the same draw and fit as the seed-0 entry (the
    # head is left out: train_head may choose its head otherwise than params.head)
    for method in ("prototype", "reference"):
        assert metrics[method]["test_accuracy_seeds"]["0"] == pytest.approx(metrics[method]["test_accuracy"])
    curve = pd.read_csv(out_dir(layout, "few").results / "efficiency.csv")
    assert list(curve.columns) == fewshot.CURVE_COLUMNS
    assert sorted(set(curve["shots"])) == [1, 2, 4] and len(curve) == 9
    at2 = curve[curve["shots"] == 2].set_index("method")["test_accuracy"]
    for method in fewshot.METHODS:  # the curve's point at the task's own k is the seeds' mean
        assert at2[method] == pytest.approx(metrics[method]["test_accuracy_mean"], abs=1e-6)
    assert (out_dir(layout, "few").results / "efficiency.png").stat().st_size > 0


def test_evaluate_without_shot_seeds_keeps_the_contract_and_writes_one_point(project):
    layout, params = project
    metrics = evaluate("plain", PLAIN, P.Evaluate(), 0, layout, out_dir(layout, "plain"), HEAD)
    assert set(metrics) == {"head", "reference", "prototype"}
    assert not any("n_seeds" in m for m in metrics.values())
    curve = pd.read_csv(out_dir(layout, "plain").results / "efficiency.csv")
    assert curve["method"].tolist() == ["head", "reference", "prototype"]
    assert (curve["n_train"] == metrics["head"]["n_train"]).all() and (curve["std"] == 0).all()
    assert curve["shots"].iloc[0] == pytest.approx(metrics["head"]["n_train"] / 3, abs=0.05)


def test_evaluate_rejects_efficiency_shots_beyond_a_class(project):
    layout, _ = project
    too_many = FEW.model_copy(update={"efficiency_shots": [1, 50]})
    with pytest.raises(PipelineError, match=r"tasks\.few\.efficiency_shots: class '\d' has \d+ training images"):
        evaluate("few", too_many, P.Evaluate(), 0, layout, out_dir(layout, "few"), HEAD)


def test_report_shows_prototype_rows_seed_means_and_the_curve(project):
    layout, params = project
    run_featureset("f", params, layout, log=lambda _: None)  # into models/tasks/f; report publishes
    table = report(params, layout)
    few = table[table["task"] == "few"].set_index("method")
    assert set(few.index) == {"head", "reference", "prototype"}
    metrics = json.loads(layout.metrics("few").read_text())
    for method in fewshot.METHODS:
        assert few.loc[method, "test_accuracy_mean"] == pytest.approx(metrics[method]["test_accuracy_mean"])
        assert few.loc[method, "n_seeds"] == 3
    assert table.loc[table["task"] == "plain", "n_seeds"].isna().all()
    text = layout.report_md.read_text()
    m = metrics["prototype"]
    assert f"{m['test_accuracy_mean']:.3f} ± {m['test_accuracy_std']:.3f} (3)" in text
    assert "## Data efficiency" in text and "### few" in text and "### plain" not in text
    assert "| nan" not in text
