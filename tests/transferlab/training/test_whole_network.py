"""transferlab.training.whole_network over a tiny real project: prepare -> backbone -> features -> task head ->
finetune / scratch -> evaluate. The training loop's own behaviour (freeze, resume, early stopping) is in
test_loop.py, the records of a skipped method in test_task_run.py."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from sklearn.utils.class_weight import compute_class_weight

from tests.conftest import SMALL_PARAMS
from tests.feature_heads import predict
from tests.projects import out_dir, subset_imagefolder
from transferlab import load_features
from transferlab.config import paths
from transferlab.config.errors import PipelineError
from transferlab.config.params import Backbone, Dataset, Evaluate, FeatureSet, Finetune, Head, Task, parse
from transferlab.config.paths import Layout
from transferlab.data import images, transforms
from transferlab.data.prepare import prepare
from transferlab.evaluation import results
from transferlab.features.build import build
from transferlab.heads import torch_heads
from transferlab.heads.task_heads import train_task_head
from transferlab.models import backbones
from transferlab.training import checkpoints, whole_network
from transferlab.training.task_run import train_on_images

CPU = torch.device("cpu")
LPFT = Task(features="f", classes=[0, 1, 2], finetune="lpft")
NONE = Task(features="f", classes=[0, 1, 2])
FT = Finetune(epochs=1, batch_size=8, lr=1e-3)


def make_project(tmp, digits_root) -> tuple[Layout, pd.DataFrame]:
    """30 real digit images of 3 classes (+ 10 of a 4th the tasks leave out), through the task heads."""
    root = subset_imagefolder(digits_root, tmp / "raw", [0, 1, 2, 3], 10)
    layout = Layout(tmp)
    prepare(Dataset(source="imagefolder", root=str(root), val_fraction=0.2, test_fraction=0.2),
            layout.prepared("d"), seed=0, name="d")
    manifest = pd.read_parquet(layout.manifest("d"))
    backbones.create("bb", Backbone(arch="resnet18", weights="none", image_size=32), layout.backbone("bb"), seed=0)
    # float32: test_lpft_starts_from_the_trained_head bounds the cache's error by float16 storage rounding alone
    build("f", FeatureSet(dataset="d", backbone="bb", precision="float32"), manifest, layout.backbone("bb"),
          layout.features("f"), CPU)
    head_cfg = Head(optimizer="adamw", epochs=30, batch_size=8, lr=0.01)
    for name, task in (("lpft", LPFT), ("plain", NONE)):
        train_task_head(name, task, head_cfg, 0, layout.root, out_dir(layout, name).head)
    return layout, manifest


@pytest.fixture(scope="module")
def project(tmp_path_factory, digits_root):
    return make_project(tmp_path_factory.mktemp("ftproj"), digits_root)


def _images(manifest: pd.DataFrame, pre: dict) -> torch.Tensor:
    tf = transforms.transform(pre)
    return torch.stack([tf(images.decode(p)) for p in manifest["path"]])


def test_lpft_starts_from_the_trained_head(project):
    layout, manifest = project
    feats, index = load_features("f", layout.root)
    head = torch_heads.load(out_dir(layout, "lpft").head / paths.HEAD_FILE)
    model, trunk_params, head_params = whole_network.finetune_model(layout.backbone("bb"),
                                                                    out_dir(layout, "lpft").head,
                                                                    "lpft", 3)
    assert len(head_params) == 2 and len(trunk_params) > 10
    info = backbones.read_info(layout.backbone("bb"))
    x = _images(manifest, info.preprocessing)
    model.eval()
    with torch.no_grad():
        ft_logits = model(x).numpy()
        trunk_feats = model[0](x)
        head_on_fp32 = head(trunk_feats).numpy()
    head_on_cache = predict(head, feats)
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

    fresh, _, _ = whole_network.finetune_model(layout.backbone("bb"), out_dir(layout, "lpft").head, "full", 3)
    with torch.no_grad():  # a new head (mode full) is far outside those bounds: the check can fail
        assert not (np.abs(fresh.eval()(x).numpy() - head_on_cache) <= cache_bound).all()


def test_finetune_and_evaluate(project):
    layout, manifest = project
    info = train_on_images("finetune", "lpft", LPFT, FT, 0, layout, out_dir(layout, "lpft"), CPU)
    out = out_dir(layout, "lpft").finetune
    assert info["mode"] == "lpft" and info["classes"] == ["0", "1", "2"]
    assert len(info["train_loss"]) == 1 and np.isfinite(info["train_loss"][0])
    tuned = load_file(out / paths.FINETUNE_WEIGHTS_FILE)
    start = load_file(layout.backbone("bb") / backbones.WEIGHTS_FILE)
    assert not torch.equal(tuned["0.conv1.weight"], start["conv1.weight"])  # the backbone was trained too

    metrics = results.evaluate("lpft", LPFT, Evaluate(), 0, layout, out_dir(layout, "lpft"))
    on_disk = json.loads((out_dir(layout, "lpft").results / "metrics.json").read_text())
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

    preds = pd.read_parquet(out / paths.PREDICTIONS_FILE)
    test = preds[preds["split"] == "test"]
    assert on_disk["finetune"]["test_accuracy"] == pytest.approx((test["pred"] == test["y"]).mean(), abs=1e-6)
    assert set(preds["image_id"]) == set(used.loc[used["split"] != "train", "image_id"])

    preds_by_kind = results.feature_predictions("lpft", LPFT, 0, layout, out_dir(layout, "lpft"))
    for kind, (kind_preds, _) in preds_by_kind.items():
        ktest = kind_preds[kind_preds["split"] == "test"]
        assert on_disk[kind]["test_accuracy"] == pytest.approx((ktest["pred"] == ktest["y"]).mean(), abs=1e-6)
    confusion = pd.read_csv(out_dir(layout, "lpft").results / "confusion.csv")
    assert len(confusion) == on_disk["head"]["n_test"]
    assert (out_dir(layout, "lpft").results / "confusion.png").stat().st_size > 0


# --- the run's checkpoint key, the recipe, augmentation -------------------------------------------------


def test_a_changed_config_never_resumes_from_a_stale_checkpoint(project, monkeypatch):
    layout, _ = project
    monkeypatch.setattr(checkpoints.Checkpoint, "clear", lambda self: None)  # keep them all
    ckpts = layout.checkpoints("lpft", "finetune")
    first = train_on_images("finetune", "lpft", LPFT, FT, 0, layout, out_dir(layout, "lpft"), CPU)
    preds = pd.read_parquet(out_dir(layout, "lpft").finetune / paths.PREDICTIONS_FILE)
    [key] = [p.name for p in ckpts.iterdir()]
    # the same run: its finished state
    again = train_on_images("finetune", "lpft", LPFT, FT, 0, layout, out_dir(layout, "lpft"), CPU)
    assert first["resumed_from_epoch"] is None and again["resumed_from_epoch"] == FT.epochs
    pd.testing.assert_frame_equal(pd.read_parquet(out_dir(layout, "lpft").finetune / paths.PREDICTIONS_FILE),
                                  preds)
    for changed in (FT.model_copy(update={"lr": 2e-3}), FT.model_copy(update={"augment": "light"})):
        info = train_on_images("finetune", "lpft", LPFT, changed, 0, layout, out_dir(layout, "lpft"), CPU)
        assert info["resumed_from_epoch"] is None, changed
        keys = [p.name for p in ckpts.iterdir()]
        assert len(keys) == 1 and key not in keys  # the stale one is gone
        key = keys[0]
    seed1 = train_on_images("finetune", "lpft", LPFT, FT, 1, layout, out_dir(layout, "lpft"), CPU)
    assert seed1["resumed_from_epoch"] is None
    shutil.rmtree(ckpts.parent)


def test_balanced_class_weights_and_validation(project):
    layout, _ = project
    imgs = whole_network.task_images("lpft", LPFT, 0, layout)
    train = imgs.part("train")
    drop = train.index[train["y"] == 0][:4]  # make class 0 rare
    imbalanced = whole_network.TaskImages(imgs.name, imgs.rows.drop(drop), imgs.classes, imgs.backbone)
    y = imbalanced.part("train")["y"].to_numpy()
    rec = whole_network.recipe(Finetune(class_weight="balanced"), 0, imbalanced)
    want = compute_class_weight("balanced", classes=np.arange(3), y=y)
    assert np.allclose(rec.class_weights, want) and rec.class_weights[0] > 1 > rec.class_weights[1]
    assert whole_network.recipe(Finetune(), 0, imbalanced).class_weights is None
    no_val = whole_network.TaskImages(imgs.name, imgs.rows[imgs.rows["split"] != "val"], imgs.classes,
                                      imgs.backbone)
    with pytest.raises(PipelineError, match="finetune.patience"):
        whole_network.recipe(Finetune(patience=2), 0, no_val)
    with pytest.raises(PipelineError, match="finetune.freeze_epochs"):
        parse({**SMALL_PARAMS, "finetune": {**SMALL_PARAMS["finetune"], "freeze_epochs": 1}})
    with pytest.raises(PipelineError, match="finetune.augment"):
        parse({**SMALL_PARAMS, "finetune": {**SMALL_PARAMS["finetune"], "augment": "flip"}})


@pytest.mark.parametrize("augment", ["light", "crop", "crop+flip"])
def test_augmentation_moves_pixels_reproducibly(project, augment):
    layout, manifest = project
    pre = backbones.read_info(layout.backbone("bb")).preprocessing
    img = images.decode(manifest["path"].iloc[0])
    plain = transforms.transform(pre)(img)
    torch.manual_seed(3)
    a = [transforms.transform(pre, augment)(img) for _ in range(4)]
    torch.manual_seed(3)
    b = [transforms.transform(pre, augment)(img) for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))  # drawn from torch's RNG only
    assert all(x.shape == plain.shape for x in a)
    assert sum(not torch.allclose(x, plain) for x in a) >= 3
    with pytest.raises(PipelineError, match="augment 'flip'"):
        transforms.transform(pre, "flip")


# --- scratch: the no-transfer baseline ------------------------------------------------------------------


def test_scratch_trains_the_architecture_from_random_init_and_is_evaluated(project):
    layout, manifest = project
    task = LPFT.model_copy(update={"scratch": True})
    info = train_on_images("scratch", "lpft", task, FT, 0, layout, out_dir(layout, "lpft"), CPU)
    assert info["ran"] and info["arch"] == "resnet18" and info["resumed_from_epoch"] is None
    weights = load_file(out_dir(layout, "lpft").scratch / paths.SCRATCH_WEIGHTS_FILE)
    assert weights["fc.weight"].shape == (3, 512)  # the architecture, sized to the task's classes
    torch.manual_seed(0)
    init = backbones.build("resnet18", 3).state_dict()
    moved = [k for k, v in init.items() if v.is_floating_point() and not torch.equal(weights[k], v)]
    assert "conv1.weight" in moved and "fc.weight" in moved  # every layer trained from its seeded init
    assert not layout.checkpoints("lpft", "scratch").exists()

    # evaluate reads the finetune record too
    train_on_images("finetune", "lpft", NONE, FT, 0, layout, out_dir(layout, "lpft"), CPU)
    metrics = results.evaluate("lpft", task, Evaluate(), 0, layout, out_dir(layout, "lpft"))
    assert set(metrics) == {"head", "reference", "prototype", "scratch"}
    used = manifest[manifest["label"].isin(["0", "1", "2"])]
    assert metrics["scratch"]["n_train"] == info["n_train"] == (used["split"] == "train").sum()
    preds = pd.read_parquet(out_dir(layout, "lpft").scratch / paths.PREDICTIONS_FILE)
    test = preds[preds["split"] == "test"]
    assert metrics["scratch"]["test_accuracy"] == pytest.approx((test["pred"] == test["y"]).mean(), abs=1e-6)
