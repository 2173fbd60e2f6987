"""Self-supervised pretraining (pretrain.<n>.method: simclr): SimCLR (Chen et al. 2020) on a dataset's images,
their labels ignored. Two random views of each train image (transferlab.data.transforms.simclr_view), the
backbone's pooled features through lightly's SimCLRProjectionHead, lightly's NTXentLoss between the views, trained
by the supervised recipe's loop (loop.fit_recipe: AdamW, warmup + cosine, a checkpoint per epoch, patience).

The val images' NT-Xent loss, on the same views every epoch, is the curve and what patience judges; test images are
never read. The backbone saved is the encoder alone, in the layout of every backbone (features@ loads it as it
loads any): the projection head is dropped, and the classifier is the architecture's untrained one, as a
`weights: none` backbone of the same seed has it."""
from __future__ import annotations

import sys
from pathlib import Path

import lightly
import pandas as pd
import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms.multi_view_transform import MultiViewTransform
from torch import nn
from torch.utils.data import DataLoader

from transferlab.config import params as P
from transferlab.config.errors import PipelineError
from transferlab.data import transforms
from transferlab.models import backbones
from transferlab.training import checkpoints, loop
from transferlab.training.curves import write_curves

TEMPERATURE = 0.5  # NT-Xent's: lightly's default, SimCLR's choice for CIFAR-10-sized data
PROJECTION_DIM = 128  # SimCLR's output width; the hidden layer is as wide as the backbone's features


class SimCLR(nn.Module):
    """The encoder (a backbone, its classifier bypassed) and the projection head the loss reads."""

    def __init__(self, encoder: nn.Module, width: int):
        super().__init__()
        self.encoder, self.head = encoder, SimCLRProjectionHead(width, width, PROJECTION_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class Contrastive:
    """loop.Objective: NT-Xent between the projections of a batch's two views (one forward pass over both, so
    batch norm sees all of them); val: its mean over views drawn from `seed`, the same in every epoch."""

    def __init__(self, seed: int):
        self.ntxent, self.seed = NTXentLoss(temperature=TEMPERATURE), seed

    def loss(self, model: nn.Module, batch, device: torch.device) -> tuple[torch.Tensor, int]:
        (x0, x1), _ = batch
        z0, z1 = model(torch.cat([x0, x1]).to(device, non_blocking=True)).float().chunk(2)
        return self.ntxent(z0, z1), len(x0)

    def score(self, model: nn.Module, val: DataLoader, device: torch.device) -> tuple[float | None, float]:
        with torch.random.fork_rng(devices=[]):  # the training run's own draws go on untouched
            torch.manual_seed(self.seed)
            return None, loop.mean_loss(self, model, val, device)


def pretrain(name: str, entry: P.Pretrain, frame: pd.DataFrame, out_dir: Path, seed: int, device: torch.device,
             curves_dir: Path, checkpoint_dir: Path) -> backbones.BackboneInfo:
    """SimCLR on the train images of `frame` (training.pretrain.source_images: labels are not read), the val
    NT-Xent loss per epoch; the encoder saved into out_dir, as training.pretrain.pretrain saves its model."""
    pre = backbones.preprocessing(entry)
    view = transforms.simclr_view(pre, entry.augment)
    train, val = (_loader(name, entry, frame, split, view, seed, device) for split in ("train", "val"))
    torch.manual_seed(seed)
    encoder = backbones.build(entry.arch)  # the init of backbone@ with weights none and this seed
    cls_name, classifier = backbones.last_linear(encoder)
    _replace(encoder, cls_name, nn.Identity())
    model = SimCLR(encoder, classifier.in_features)
    recipe = loop.Recipe(entry.epochs, weight_decay=entry.weight_decay, patience=entry.patience, seed=seed)
    used = frame[["image_id", "split", "sha256"]].astype(str).to_json(orient="values")  # no label: none is read
    versions = {**backbones.versions(), "lightly": lightly.__version__}
    checkpoint = checkpoints.for_run(checkpoint_dir, (loop, backbones, transforms, sys.modules[__name__]),
                                     entry=entry.model_dump(), seed=seed, device=str(device), rows=used,
                                     recipe=recipe, versions=versions)
    stats = loop.fit_recipe(model, [{"params": model.parameters(), "lr": entry.lr}], train, recipe, device,
                            val=val, checkpoint=checkpoint, desc=f"pretrain@{name}", objective=Contrastive(seed))
    write_curves(curves_dir, stats)
    _replace(encoder, cls_name, classifier.to(device))  # the projection head stays behind
    kept = stats["val"][(stats["best_epoch"] or stats["epochs_run"]) - 1]["loss"]
    source = {"kind": "pretrain", "method": "simclr", "dataset": entry.dataset, "classes": entry.classes,
              "images": len(train.dataset), "epochs": entry.epochs, "epochs_run": stats["epochs_run"],
              "best_epoch": stats["best_epoch"], "source_val_loss": round(kept, 4), "loss": "nt_xent",
              "seconds": round(stats["seconds"], 2), "resumed_from_epoch": stats["resumed_from_epoch"]}
    info = backbones.save(encoder.cpu(), out_dir, name, entry.arch, pre, source)
    checkpoint.clear()
    return info


def _loader(name: str, entry: P.Pretrain, frame: pd.DataFrame, split: str, view, seed: int,
            device: torch.device) -> DataLoader:
    part = frame[frame["split"] == split]
    if len(part) < 2:
        raise PipelineError(f"pretrain.{name}: dataset {entry.dataset} has {len(part)} {split} image(s) of its "
                            "classes; SimCLR contrasts an image with others, so it needs at least 2")
    ds = transforms.ImageFiles(part["path"], [0] * len(part), MultiViewTransform([view, view]))
    # a last batch of one image has no other to contrast with, nor batch statistics for the projection head
    return DataLoader(ds, batch_size=entry.batch_size, shuffle=split == "train",
                      generator=torch.Generator().manual_seed(seed), drop_last=len(part) % entry.batch_size == 1,
                      pin_memory=device.type == "cuda")


def _replace(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent, _, child = dotted.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
