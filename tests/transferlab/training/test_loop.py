"""transferlab.training.loop.fit_recipe, trained as finetune@<task> trains (the recipe of
transferlab.training.whole_network) on the tiny real project of test_whole_network: freeze-then-unfreeze,
resuming from a saved state, early stopping."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import DataLoader

from tests.projects import out_dir
from transferlab.config.params import Finetune, Task
from transferlab.data import transforms
from transferlab.models import backbones
from transferlab.training import loop, whole_network

from .test_whole_network import CPU, LPFT, make_project


@pytest.fixture(scope="module")
def project(tmp_path_factory, digits_root):
    return make_project(tmp_path_factory.mktemp("loopproj"), digits_root)


class MemoryCheckpoint:
    """A loop.Checkpointer that keeps a copy of every epoch's state (and can hand one back to resume from)."""

    def __init__(self, start: dict | None = None):
        self.start, self.saved = start, []

    def load(self) -> dict | None:
        return self.start

    def save(self, state: dict) -> None:
        self.saved.append(copy.deepcopy(state))


def _train_run(layout, cfg: Finetune, checkpoint: loop.Checkpointer, task: Task = LPFT, mode: str = "lpft"):
    """A fresh LP-FT model trained with the finetune stage's recipe; -> (model, stats)."""
    imgs = whole_network.task_images("lpft", task, 0, layout)
    torch.manual_seed(0)
    model, trunk, top = whole_network.finetune_model(imgs.backbone, out_dir(layout, "lpft").head, mode,
                                                     len(imgs.classes))
    groups = [{"params": trunk, "lr": cfg.lr * cfg.backbone_lr_mult}, {"params": top, "lr": cfg.lr}]
    pre = backbones.read_info(imgs.backbone).preprocessing

    def loader(part, train):
        ds = transforms.ImageFiles(part["path"], part["y"].tolist(),
                                   transforms.transform(pre, cfg.augment if train else "none"))
        return DataLoader(ds, batch_size=cfg.batch_size, shuffle=train, generator=torch.Generator().manual_seed(0))

    rec = whole_network.recipe(cfg, 0, imgs)
    stats = loop.fit_recipe(model, groups, loader(imgs.part("train"), True), rec, CPU,
                            val=loader(imgs.part("val"), False) if rec.patience else None,
                            frozen=model[0], checkpoint=checkpoint)
    return model, stats


def _same(a: dict, b: dict, prefix: str) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))


def test_freeze_then_unfreeze_and_resume_without_refreezing(project):
    layout, _ = project
    cfg = Finetune(epochs=3, batch_size=8, lr=1e-3, freeze_epochs=1, freeze_norm=False, augment="light")
    memory = MemoryCheckpoint()
    model, stats = _train_run(layout, cfg, memory)
    init = whole_network.finetune_model(layout.backbone("bb"), out_dir(layout, "lpft").head, "lpft",
                                        3)[0].state_dict()
    first, second, last = (s["model"] for s in memory.saved)
    assert [s["frozen"] for s in memory.saved] == [True, False, False]
    assert [s["epoch"] for s in memory.saved] == [1, 2, 3]
    assert _same(first, init, "0.")  # epoch 1: the trunk untouched, batch-norm statistics included...
    assert not _same(first, init, "1.")  # ...while the head trained
    assert not _same(second, first, "0.")  # epoch 2: the backbone trains
    assert stats["resumed_from_epoch"] is None and len(stats["train_loss"]) == 3

    # Resume from the frozen epoch's checkpoint, and from one after it: each ends bit-identical.
    for state in memory.saved[:2]:
        resumed_model, resumed = _train_run(layout, cfg, MemoryCheckpoint(copy.deepcopy(state)))
        assert resumed["resumed_from_epoch"] == state["epoch"]
        assert resumed["train_loss"] == stats["train_loss"]
        assert _same(resumed_model.state_dict(), last, "")
    assert _same(model.state_dict(), last, "")


def test_early_stopping_keeps_the_best_epoch(project):
    layout, _ = project
    cfg = Finetune(epochs=4, batch_size=8, lr=0.05, backbone_lr_mult=1.0, patience=1, freeze_norm=False)
    memory = MemoryCheckpoint()
    model, stats = _train_run(layout, cfg, memory)
    scores = [(v["accuracy"], -v["loss"]) for v in stats["val"]]
    assert len(scores) == stats["epochs_run"] == len(memory.saved) <= 4
    best = max(range(len(scores)), key=lambda i: scores[i])
    assert stats["best_epoch"] == best + 1
    if stats["epochs_run"] < 4:  # stopped: the epoch after the best was no better
        assert scores[best + 1] <= scores[best] and best + 2 == stats["epochs_run"]
    # the model handed back is the best epoch's, not the last one's
    assert _same(model.state_dict(), memory.saved[best]["model"], "")
    if best + 1 < stats["epochs_run"]:
        assert not _same(model.state_dict(), memory.saved[-1]["model"], "")
