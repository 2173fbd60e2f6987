"""train_head with a sweep (transferlab.heads.task_heads), over a tiny real project (prepare -> backbone ->
features): the best head on val is kept, the whole sweep is recorded, evaluate publishes it, and the single-head
path is the one it always was."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from tests.feature_heads import predict
from tests.projects import out_dir, subset_imagefolder
from transferlab import load_features
from transferlab.config import paths
from transferlab.config.errors import PipelineError
from transferlab.config.params import Backbone, Dataset, Evaluate, FeatureSet, Finetune, Head, Task
from transferlab.config.paths import Layout
from transferlab.data.prepare import prepare
from transferlab.data.tasks import select
from transferlab.evaluation.results import evaluate
from transferlab.features.build import build
from transferlab.heads import task_heads, torch_heads
from transferlab.models import backbones
from transferlab.training.task_run import train_on_images

TASK = Task(features="f", classes=[0, 1, 2, 3])
# a grid whose heads reach different val accuracies: tiny lr barely moves from the random init
SWEEP = Head(optimizer="adamw", epochs=15, batch_size=8,
             sweep={"lr": [1e-5, 0.003, 0.03], "weight_decay": [0.0, 1.0]})


@pytest.fixture(scope="module")
def layout(tmp_path_factory, digits_root) -> Layout:
    tmp = tmp_path_factory.mktemp("headproj")
    root = subset_imagefolder(digits_root, tmp / "raw", [0, 1, 2, 3], 15)
    layout = Layout(tmp)
    prepare(Dataset(source="imagefolder", root=str(root), val_fraction=0.3, test_fraction=0.2),
            layout.prepared("d"), seed=0)
    backbones.create("bb", Backbone(arch="resnet18", weights="none", image_size=24), layout.backbone("bb"),
                     seed=0)
    build("f", FeatureSet(dataset="d", backbone="bb"), pd.read_parquet(layout.manifest("d")),
          layout.backbone("bb"), layout.features("f"), torch.device("cpu"))
    return layout


def _split(layout: Layout, name: str):
    feats, index = load_features("f", layout.root)
    sel = select(index, TASK, 0, "t")
    rows = sel.split(name)
    return feats[rows["row"].to_numpy()], rows["y"].to_numpy()


def test_sweep_keeps_the_first_best_head_on_val_and_records_all(layout):
    res = task_heads.train_task_head("t", TASK, SWEEP, 0, layout.root, out_dir(layout, "t").head)
    info = json.loads((out_dir(layout, "t").head / paths.HEAD_INFO_FILE).read_text())
    grid = SWEEP.grid()
    sweep = pd.read_csv(out_dir(layout, "t").head / paths.SWEEP_FILE)
    assert list(sweep.columns) == task_heads.SWEEP_COLUMNS
    assert [(r["kind"], r["lr"], r["weight_decay"]) for r in info["sweep"]] == [
        (c.kind, c.lr, c.weight_decay) for c in grid]
    assert sweep["val_accuracy"].tolist() == [r["val_accuracy"] for r in info["sweep"]]
    accs = sweep["val_accuracy"].to_numpy()
    assert accs.max() > accs.min()  # the choice matters here
    best = int(np.flatnonzero(accs == accs.max())[0])  # ties: the first in grid order
    assert info["selected"] == sweep["config"][best]
    assert info["val_accuracy"] == res.val_accuracy == pytest.approx(accs.max(), abs=1e-6)
    chosen = info["hyperparameters"]
    assert (chosen["lr"], chosen["weight_decay"]) == (grid[best].lr, grid[best].weight_decay)
    assert chosen["sweep"]["lr"] == [1e-5, 0.003, 0.03]

    # the saved head is that config trained alone (up to float32 rounding), and scores as recorded on val
    x, y = _split(layout, "train")
    x_val, y_val = _split(layout, "val")
    saved = torch_heads.load(out_dir(layout, "t").head / paths.HEAD_FILE)
    alone, _ = torch_heads.train(x, y, 4, grid[best], seed=0)
    np.testing.assert_allclose(predict(saved, x_val), predict(alone, x_val), rtol=1e-4, atol=1e-4)
    for row, cfg in zip(info["sweep"], grid, strict=True):
        h, _ = torch_heads.train(x, y, 4, cfg, seed=0)
        assert (predict(h, x_val).argmax(1) == y_val).mean() == pytest.approx(row["val_accuracy"], abs=1e-6)


def test_evaluate_publishes_the_sweep(layout):
    task_heads.train_task_head("t", TASK, SWEEP, 0, layout.root, out_dir(layout, "t").head)
    # finetune: none, recorded only
    train_on_images("finetune", "t", TASK, Finetune(), 0, layout, out_dir(layout, "t"), torch.device("cpu"))
    evaluate("t", TASK, Evaluate(), 0, layout, out_dir(layout, "t"))
    published = pd.read_csv(out_dir(layout, "t").results / paths.SWEEP_FILE)
    pd.testing.assert_frame_equal(published, pd.read_csv(out_dir(layout, "t").head / paths.SWEEP_FILE))
    assert len(published) == len(SWEEP.grid())


def test_single_head_path_is_heads_train(layout):
    single = SWEEP.model_copy(update={"sweep": None, "lr": 0.01})
    task_heads.train_task_head("one", TASK, single, 0, layout.root, out_dir(layout, "one").head)
    info = json.loads((out_dir(layout, "one").head / paths.HEAD_INFO_FILE).read_text())
    assert info["hyperparameters"] == single.model_dump()
    assert [r["config"] for r in info["sweep"]] == [info["selected"]] == ["linear lr=0.01 wd=0.0001"]
    x, y = _split(layout, "train")
    alone, _ = torch_heads.train(x, y, 4, single, seed=0)
    saved = torch_heads.load(out_dir(layout, "one").head / paths.HEAD_FILE)
    for k, v in alone.state_dict().items():
        assert torch.equal(saved.state_dict()[k], v), k  # bit for bit: no sweep machinery involved


def test_a_task_without_val_rows_fails_naming_it_and_writes_nothing(tmp_path):
    """One rule where val chooses: the head's sweep and the reference's C both need val rows (before, the head
    kept its first config with a NaN score and the reference its first C with 0.0)."""
    from tests.projects import pixels_features

    layout, params = pixels_features(tmp_path, split_p=(0.8, 0.0, 0.2))
    with pytest.raises(PipelineError, match=r"^tasks.pixels: no val images among its classes"):
        task_heads.train_task_head("pixels", params.tasks["pixels"], params.head, 0, tmp_path,
                                   out_dir(layout, "pixels").head)
    assert not out_dir(layout, "pixels").head.exists()
