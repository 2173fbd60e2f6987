"""finetune, scratch + evaluate over a tiny real project: prepare -> backbone -> features -> train_head ->
finetune / scratch -> evaluate."""
from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from sklearn.utils.class_weight import compute_class_weight
from torch.utils.data import DataLoader

from stages import (
    backbone,
    backbones,
    evaluate,
    features,
    finetune,
    heads,
    images,
    paths,
    prepare,
    scratch,
    train_head,
    trainer,
    whole_network,
)
from stages.errors import PipelineError
from stages.params import Backbone, Dataset, Evaluate, FeatureSet, Finetune, Head, Task, parse
from stages.paths import Layout
from tests.conftest import SMALL_PARAMS

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
    # float32: test_lpft_starts_from_the_trained_head bounds the cache's error by float16 storage rounding alone
    features.run("f", FeatureSet(dataset="d", backbone="bb", precision="float32"), manifest, layout.backbone("bb"),
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
    head = heads.load(layout.head("lpft") / paths.HEAD_FILE)
    model, trunk_params, head_params = whole_network.finetune_model(layout.backbone("bb"), layout.head("lpft"),
                                                                    "lpft", 3)
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

    fresh, _, _ = whole_network.finetune_model(layout.backbone("bb"), layout.head("lpft"), "full", 3)
    with torch.no_grad():  # a new head (mode full) is far outside those bounds: the check can fail
        assert not (np.abs(fresh.eval()(x).numpy() - head_on_cache) <= cache_bound).all()


def test_finetune_and_evaluate(project):
    layout, manifest = project
    info = finetune.run("lpft", LPFT, FT, 0, layout, CPU)
    out = layout.finetune("lpft")
    assert info["mode"] == "lpft" and info["classes"] == ["0", "1", "2"]
    assert len(info["train_loss"]) == 1 and np.isfinite(info["train_loss"][0])
    tuned = load_file(out / paths.FINETUNE_WEIGHTS_FILE)
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

    preds = pd.read_parquet(out / paths.PREDICTIONS_FILE)
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
    assert not (layout.finetune("plain") / paths.FINETUNE_WEIGHTS_FILE).exists()
    metrics = evaluate.run("plain", NONE, Evaluate(normalize_confusion=True), 0, layout)
    assert set(metrics) == {"head", "reference", "prototype"}


# --- the training recipe: freeze-then-unfreeze, resume, early stopping, stale checkpoints ----------------


class MemoryStore:
    """A trainer.Store that keeps a copy of every epoch's state (and can hand one back to resume from)."""

    def __init__(self, start: dict | None = None):
        self.start, self.saved = start, []

    def load(self) -> dict | None:
        return self.start

    def save(self, state: dict) -> None:
        self.saved.append(copy.deepcopy(state))


def _train_run(layout, cfg: Finetune, store, task: Task = LPFT, mode: str = "lpft"):
    """A fresh LP-FT model trained with the finetune stage's recipe; -> (model, stats)."""
    imgs = whole_network.task_images("lpft", task, 0, layout)
    torch.manual_seed(0)
    model, trunk, top = whole_network.finetune_model(imgs.backbone, layout.head("lpft"), mode, len(imgs.classes))
    groups = [{"params": trunk, "lr": cfg.lr * cfg.backbone_lr_mult}, {"params": top, "lr": cfg.lr}]
    pre = backbones.read_info(imgs.backbone).preprocessing

    def loader(part, train):
        ds = images.ImageFiles(part["path"], part["y"].tolist(), images.transform(pre, cfg.augment if train
                                                                                 else "none"))
        return DataLoader(ds, batch_size=cfg.batch_size, shuffle=train, generator=torch.Generator().manual_seed(0))

    rec = whole_network.recipe(cfg, 0, imgs)
    stats = trainer.fit_recipe(model, groups, loader(imgs.part("train"), True), rec, CPU,
                               val=loader(imgs.part("val"), False) if rec.patience else None,
                               frozen=model[0], store=store)
    return model, stats


def _same(a: dict, b: dict, prefix: str) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))


def test_freeze_then_unfreeze_and_resume_without_refreezing(project):
    layout, _ = project
    cfg = Finetune(epochs=3, batch_size=8, lr=1e-3, freeze_epochs=1, freeze_norm=False, augment="light")
    store = MemoryStore()
    model, stats = _train_run(layout, cfg, store)
    init = whole_network.finetune_model(layout.backbone("bb"), layout.head("lpft"), "lpft", 3)[0].state_dict()
    first, second, last = (s["model"] for s in store.saved)
    assert [s["frozen"] for s in store.saved] == [True, False, False]
    assert [s["epoch"] for s in store.saved] == [1, 2, 3]
    assert _same(first, init, "0.")  # epoch 1: the trunk untouched, batch-norm statistics included...
    assert not _same(first, init, "1.")  # ...while the head trained
    assert not _same(second, first, "0.")  # epoch 2: the backbone trains
    assert stats["resumed_from_epoch"] is None and len(stats["train_loss"]) == 3

    # Resume from the frozen epoch's checkpoint, and from one after it: each ends bit-identical.
    for state in store.saved[:2]:
        resumed_model, resumed = _train_run(layout, cfg, MemoryStore(copy.deepcopy(state)))
        assert resumed["resumed_from_epoch"] == state["epoch"]
        assert resumed["train_loss"] == stats["train_loss"]
        assert _same(resumed_model.state_dict(), last, "")
    assert _same(model.state_dict(), last, "")


def test_early_stopping_keeps_the_best_epoch(project):
    layout, _ = project
    cfg = Finetune(epochs=4, batch_size=8, lr=0.05, backbone_lr_mult=1.0, patience=1, freeze_norm=False)
    store = MemoryStore()
    model, stats = _train_run(layout, cfg, store)
    scores = [(v["accuracy"], -v["loss"]) for v in stats["val"]]
    assert len(scores) == stats["epochs_run"] == len(store.saved) <= 4
    best = max(range(len(scores)), key=lambda i: scores[i])
    assert stats["best_epoch"] == best + 1
    if stats["epochs_run"] < 4:  # stopped: the epoch after the best was no better
        assert scores[best + 1] <= scores[best] and best + 2 == stats["epochs_run"]
    # the model handed back is the best epoch's, not the last one's
    assert _same(model.state_dict(), store.saved[best]["model"], "")
    if best + 1 < stats["epochs_run"]:
        assert not _same(model.state_dict(), store.saved[-1]["model"], "")


def test_a_changed_config_never_resumes_from_a_stale_checkpoint(project, monkeypatch):
    layout, _ = project
    monkeypatch.setattr(whole_network.checkpoints.Checkpoint, "clear", lambda self: None)  # keep them all
    ckpts = layout.checkpoints("lpft", "finetune")
    first = finetune.run("lpft", LPFT, FT, 0, layout, CPU)
    preds = pd.read_parquet(layout.finetune("lpft") / paths.PREDICTIONS_FILE)
    [key] = [p.name for p in ckpts.iterdir()]
    again = finetune.run("lpft", LPFT, FT, 0, layout, CPU)  # the same run: it finds its finished state
    assert first["resumed_from_epoch"] is None and again["resumed_from_epoch"] == FT.epochs
    pd.testing.assert_frame_equal(pd.read_parquet(layout.finetune("lpft") / paths.PREDICTIONS_FILE), preds)
    for changed in (FT.model_copy(update={"lr": 2e-3}), FT.model_copy(update={"augment": "light"})):
        info = finetune.run("lpft", LPFT, changed, 0, layout, CPU)
        assert info["resumed_from_epoch"] is None, changed
        keys = [p.name for p in ckpts.iterdir()]
        assert len(keys) == 1 and key not in keys  # the stale one is gone
        key = keys[0]
    assert finetune.run("lpft", LPFT, FT, 1, layout, CPU)["resumed_from_epoch"] is None  # another seed
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


def test_light_augmentation_moves_pixels_reproducibly(project):
    layout, manifest = project
    pre = backbones.read_info(layout.backbone("bb")).preprocessing
    img = images.decode(manifest["path"].iloc[0])
    plain = images.transform(pre)(img)
    torch.manual_seed(3)
    a = [images.transform(pre, "light")(img) for _ in range(4)]
    torch.manual_seed(3)
    b = [images.transform(pre, "light")(img) for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))  # drawn from torch's RNG only
    assert all(x.shape == plain.shape for x in a)
    assert sum(not torch.allclose(x, plain) for x in a) >= 3
    with pytest.raises(PipelineError, match="augment 'flip'"):
        images.transform(pre, "flip")


# --- scratch: the no-transfer baseline ------------------------------------------------------------------


def test_scratch_trains_the_architecture_from_random_init_and_is_evaluated(project):
    layout, manifest = project
    task = LPFT.model_copy(update={"scratch": True})
    info = scratch.run("lpft", task, FT, 0, layout, CPU)
    assert info["ran"] and info["arch"] == "resnet18" and info["resumed_from_epoch"] is None
    weights = load_file(layout.scratch("lpft") / paths.SCRATCH_WEIGHTS_FILE)
    assert weights["fc.weight"].shape == (3, 512)  # the architecture, sized to the task's classes
    torch.manual_seed(0)
    init = backbones.build("resnet18", 3).state_dict()
    moved = [k for k, v in init.items() if v.is_floating_point() and not torch.equal(weights[k], v)]
    assert "conv1.weight" in moved and "fc.weight" in moved  # every layer trained from its seeded init
    assert not layout.checkpoints("lpft", "scratch").exists()

    finetune.run("lpft", NONE, FT, 0, layout, CPU)  # evaluate reads the finetune stage's record too
    metrics = evaluate.run("lpft", task, Evaluate(), 0, layout)
    assert set(metrics) == {"head", "reference", "prototype", "scratch"}
    used = manifest[manifest["label"].isin(["0", "1", "2"])]
    assert metrics["scratch"]["n_train"] == info["n_train"] == (used["split"] == "train").sum()
    preds = pd.read_parquet(layout.scratch("lpft") / paths.PREDICTIONS_FILE)
    test = preds[preds["split"] == "test"]
    assert metrics["scratch"]["test_accuracy"] == pytest.approx((test["pred"] == test["y"]).mean(), abs=1e-6)

    finetune.run("plain", NONE, FT, 0, layout, CPU)
    skipped = scratch.run("plain", NONE, FT, 0, layout, CPU)
    assert skipped == {"task": "plain", "method": "scratch", "ran": False}
    assert not (layout.scratch("plain") / paths.SCRATCH_WEIGHTS_FILE).exists()
    assert "scratch" not in evaluate.run("plain", NONE, Evaluate(), 0, layout)
