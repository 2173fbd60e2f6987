"""finetune + evaluate over a tiny real project: prepare -> backbone -> features -> train_head -> finetune -> evaluate."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from stages import backbone, backbones, evaluate, features, finetune, heads, images, prepare, train_head
from stages.params import Backbone, Dataset, Evaluate, FeatureSet, Finetune, Head, Task
from stages.paths import Layout

from .conftest import subset_imagefolder

CPU = torch.device("cpu")
LPFT = Task(features="f", classes=[0, 1, 2], finetune="lpft")
NONE = Task(features="f", classes=[0, 1, 2])
FT = Finetune(epochs=1, batch_size=8, lr=1e-3)


@pytest.fixture(scope="module")
def project(tmp_path_factory, digits_root):
    """30 real digit images of 3 classes (+ 10 of a 4th the tasks leave out), through train_head."""
    tmp = tmp_path_factory.mktemp("ftproj")
    root = subset_imagefolder(digits_root, tmp / "raw", [0, 1, 2, 3], 10)
    layout = Layout(tmp)
    prepare.run(Dataset(source="imagefolder", root=str(root), val_fraction=0.2, test_fraction=0.2),
                layout.prepared("d"), seed=0)
    manifest = pd.read_parquet(layout.manifest("d"))
    backbone.run("bb", Backbone(arch="resnet18", weights="none", image_size=32), layout.backbone("bb"), seed=0)
    features.run("f", FeatureSet(dataset="d", backbone="bb"), manifest, layout.backbone("bb"),
                 layout.features("f"), CPU)
    head_cfg = Head(epochs=30, batch_size=8, lr=0.01)
    for name, task in (("lpft", LPFT), ("plain", NONE)):
        train_head.run(name, task, head_cfg, 0, layout.root, layout.head(name))
    return layout, manifest


def _images(manifest: pd.DataFrame, pre: dict) -> torch.Tensor:
    tf = images.transform(pre)
    return torch.stack([tf(images.decode(p)) for p in manifest["path"]])


def test_lpft_starts_from_the_trained_head(project):
    layout, manifest = project
    feats, index = features.load_features("f", layout.root)
    head = heads.load(layout.head("lpft") / train_head.HEAD_FILE)
    model, trunk_params, head_params = finetune._model(layout.backbone("bb"), layout.head("lpft"), "lpft", 3)
    assert len(head_params) == 2 and len(trunk_params) > 10
    info = backbones.read_info(layout.backbone("bb"))
    x = _images(manifest, info.preprocessing)
    model.eval()
    with torch.no_grad():
        ft_logits = model(x).numpy()
        trunk_feats = model[0](x)
        head_on_fp32 = head(trunk_feats).numpy()
    head_on_cache = heads.predict(head, feats)
    assert np.abs(head_on_cache).max() > 0.5  # a trained head, not zeros
    # Rounding bounds per logit: |W_folded| @ |x| + |b| bounds every partial sum of the logit.
    first = model[1][0]
    mag = (np.abs(first.weight.detach().numpy()) @ np.abs(trunk_feats.numpy()).T).T \
        + np.abs(first.bias.detach().numpy())
    # the same function as the head on the trunk's features (up to float32 rounding)...
    assert (np.abs(ft_logits - head_on_fp32) <= 1e-5 * mag + 1e-5).all()
    # ...and on the float16 feature cache the head was trained on (up to float16 storage rounding, 2^-11)
    cache_bound = 2.0 ** -10 * mag + 1e-3
    assert (np.abs(ft_logits - head_on_cache) <= cache_bound).all()
    assert (ft_logits.argmax(1) == head_on_cache.argmax(1)).mean() >= 0.9

    fresh, _, _ = finetune._model(layout.backbone("bb"), layout.head("lpft"), "full", 3)
    with torch.no_grad():  # a new head (mode full) is far outside those bounds: the check can fail
        assert not (np.abs(fresh.eval()(x).numpy() - head_on_cache) <= cache_bound).all()


def test_finetune_and_evaluate(project):
    layout, manifest = project
    info = finetune.run("lpft", LPFT, FT, 0, layout, CPU)
    out = layout.finetune("lpft")
    assert info["mode"] == "lpft" and info["classes"] == ["0", "1", "2"]
    assert len(info["train_loss"]) == 1 and np.isfinite(info["train_loss"][0])
    tuned = load_file(out / finetune.WEIGHTS_FILE)
    start = load_file(layout.backbone("bb") / backbones.WEIGHTS_FILE)
    assert not torch.equal(tuned["0.conv1.weight"], start["conv1.weight"])  # the backbone was trained too

    metrics = evaluate.run("lpft", LPFT, Evaluate(), 0, layout)
    on_disk = json.loads((layout.results("lpft") / "metrics.json").read_text())
    assert on_disk == metrics
    assert set(on_disk) == {"head", "reference", "prototype", "finetune"}
    wanted = {"test_accuracy", "val_accuracy", "macro_f1", "n_train", "n_test"}
    used = manifest[manifest["label"].isin(["0", "1", "2"])]
    for kind in ("head", "finetune"):
        m = on_disk[kind]
        assert wanted <= set(m), kind
        assert m["n_train"] == (used["split"] == "train").sum() == info["n_train"]
        assert m["n_test"] == (used["split"] == "test").sum()
        for k in ("test_accuracy", "val_accuracy", "macro_f1"):
            assert 0.0 <= m[k] <= 1.0
    assert on_disk["finetune"]["mode"] == "lpft"

    preds = pd.read_parquet(out / finetune.PREDICTIONS_FILE)
    test = preds[preds["split"] == "test"]
    assert on_disk["finetune"]["test_accuracy"] == pytest.approx((test["pred"] == test["y"]).mean(), abs=1e-6)
    assert set(preds["image_id"]) == set(used.loc[used["split"] != "train", "image_id"])

    for kind, (kind_preds, _) in evaluate.feature_predictions("lpft", LPFT, 0, layout).items():
        ktest = kind_preds[kind_preds["split"] == "test"]
        assert on_disk[kind]["test_accuracy"] == pytest.approx((ktest["pred"] == ktest["y"]).mean(), abs=1e-6)
    confusion = pd.read_csv(layout.results("lpft") / "confusion.csv")
    assert len(confusion) == on_disk["head"]["n_test"]
    assert (layout.results("lpft") / "confusion.png").stat().st_size > 0


def test_finetune_none_is_recorded_and_evaluated_as_head_only(project):
    layout, _ = project
    info = finetune.run("plain", NONE, FT, 0, layout, CPU)
    assert info == {"task": "plain", "mode": "none"}
    assert not (layout.finetune("plain") / finetune.WEIGHTS_FILE).exists()
    metrics = evaluate.run("plain", NONE, Evaluate(normalize_confusion=True), 0, layout)
    assert set(metrics) == {"head", "reference", "prototype"}
