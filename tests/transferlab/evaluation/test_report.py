"""report (transferlab.evaluation.report) over a tiny real project: head, reference, lpft and scratch rows side
by side, with backbone_run."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from tests.projects import subset_imagefolder, tiny_layout
from transferlab.config.errors import PipelineError
from transferlab.config.params import parse
from transferlab.config.paths import FIGURE_KINDS, METRICS_FILE, PLOT_KINDS
from transferlab.evaluation import report
from transferlab.features.build import build
from transferlab.tasks.featureset import run_featureset

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def built(tmp_path_factory, digits_root, private_store):
    tmp = tmp_path_factory.mktemp("report")
    images = subset_imagefolder(digits_root, tmp / "raw", [0, 1, 2], 10)
    layout = tiny_layout(tmp / "proj", images)
    params = parse({
        "device": "cpu", "datasets": {"tiny": {"source": "imagefolder", "root": str(images)}},
        "backbones": {"bb32": {"arch": "resnet18", "weights": "none", "image_size": 32}},
        "features": {"f": {"dataset": "tiny", "backbone": "bb32"}},
        "tasks": {"few": {"features": "f", "shots": 3, "finetune": "lpft", "scratch": True},
                  "plain": {"features": "f"}},
        "head": {"epochs": 10}, "finetune": {"epochs": 1, "batch_size": 8}})
    build("f", params.features["f"], pd.read_parquet(layout.manifest("tiny")), layout.backbone("bb32"),
          layout.features("f"), CPU)
    run_featureset("f", params, layout, log=lambda _: None)
    return layout, params, report.report(params, layout)


def test_report_shows_every_method_and_whether_it_ran_the_backbone(built):
    layout, params, table = built
    assert list(table.columns) == report.COLUMNS
    few = table[table["task"] == "few"].set_index("method")
    assert list(few.index) == ["head", "reference", "prototype", "lpft", "scratch"]
    assert few["backbone_run"].to_dict() == {"head": "no", "reference": "no", "prototype": "no", "lpft": "yes",
                                             "scratch": "yes"}
    metrics = json.loads(layout.metrics("few").read_text())
    for method, kind in (("head", "head"), ("lpft", "finetune"), ("scratch", "scratch")):
        assert few.loc[method, "test_accuracy"] == pytest.approx(metrics[kind]["test_accuracy"])
        assert few.loc[method, "n_train"] == 9  # 3 shots x 3 classes
    run = json.loads(layout.task("f", "few").run_record("scratch").read_text())
    assert few.loc["scratch", "seconds"] == pytest.approx(run["seconds"]) and run["seconds"] > 0
    plain = table[table["task"] == "plain"]
    assert list(plain["method"]) == ["head", "reference", "prototype"] and set(plain["backbone_run"]) == {"no"}
    assert pd.read_csv(layout.summary_csv)["backbone_run"].tolist() == table["backbone_run"].tolist()
    md = layout.report_md.read_text()
    assert "| scratch " in md and "backbone_run" in md


def test_the_report_publishes_every_tasks_results_and_only_those_of_params_yaml(built):
    """results/<kind>/ (in git) holds a copy of each task's results from models/tasks (cached outputs of
    tasks@, which DVC's run-cache carries between machines); a task gone from params.yaml leaves nothing."""
    layout, params, _ = built
    stale = layout.metrics("gone")
    stale.write_text("{}")
    report.report(params, layout)
    assert not stale.exists()
    for name in params.tasks:
        src = layout.task("f", name).results
        assert layout.metrics(name).read_bytes() == (src / METRICS_FILE).read_bytes()
        for kind in PLOT_KINDS:
            assert layout.plot(name, kind).read_bytes() == (src / f"{kind}.csv").read_bytes(), (name, kind)
        for kind in FIGURE_KINDS:
            assert layout.figure(name, kind).read_bytes() == (src / f"{kind}.png").read_bytes(), (name, kind)
    published = {p: p.read_bytes() for p in layout.results("metrics").parent.rglob("*") if p.is_file()}
    missing = params.model_copy(update={"tasks": {**params.tasks, "new": params.tasks["plain"]}})
    with pytest.raises(PipelineError, match=r"new/results/metrics.json not found; run `dvc repro tasks@f`"):
        report.report(missing, layout)
    # nothing lost: the error came before any folder of results/ changed, and no temp folder is left
    assert {p: p.read_bytes() for p in layout.results("metrics").parent.rglob("*") if p.is_file()} == published


def test_runs_json_holds_every_run_records_numbers(built):
    layout, params, _ = built
    runs = json.loads(layout.runs_json.read_text())
    feature_run = json.loads(layout.features_run("f").read_text())
    assert runs["features"]["f"]["extracted"] == feature_run["extracted"] == 30
    assert "store" not in runs["features"]["f"]  # a path is no metric
    record = json.loads(layout.task("f", "few").run_record("finetune").read_text())
    assert runs["finetune"]["few"] == {"seconds": record["seconds"]} and record["resumed_from_epoch"] is None
    tasks_run = json.loads(layout.tasks_run("f").read_text())
    assert runs["tasks"]["f"] == {k: tasks_run[k] for k in ("computed", "reused", "seconds")}
    assert (tasks_run["computed"], tasks_run["reused"]) == (2, 0) and tasks_run["seconds"] > 0
    assert runs["scratch"]["few"]["seconds"] > 0
    # skipped methods record seconds None, which is no number: nothing is left of their record
    assert runs["scratch"]["plain"] == {}


@pytest.mark.parametrize("policy", ["never", "auto"])
def test_a_reference_left_out_has_no_row_and_the_report_says_why(tmp_path, monkeypatch, policy):
    """head.reference: never, or auto on more training values than heads.reference.AUTO_MAX_VALUES."""
    from tests.projects import pixels_features
    from transferlab.heads import reference as ref_module

    if policy == "auto":  # the 600 x 64 pixels are 38,400 values: lower the bound below them
        monkeypatch.setattr(ref_module, "AUTO_MAX_VALUES", 10_000)
    layout, params = pixels_features(tmp_path, head={"optimizer": "lbfgs", "reference": policy,
                                                     "sweep": {"C": [0.1, 1.0]}})
    run_featureset("pixels", params, layout, log=lambda _: None)
    head_dir = layout.task("pixels", "pixels").head
    info = json.loads((head_dir / "head.json").read_text())
    assert set(info["reference"]) == {"skipped"} and f"head.reference: {policy}" in info["reference"]["skipped"]
    assert not (head_dir / "reference.safetensors").exists()
    metrics = json.loads((layout.task("pixels", "pixels").results / METRICS_FILE).read_text())
    assert "reference" not in metrics and {"head", "prototype"} <= set(metrics)
    table = report.report(params, layout)
    assert "reference" not in set(table["method"])
    assert "- pixels: no reference row (head.reference:" in layout.report_md.read_text()
