"""A backbone trained on a prepared source dataset, saved like any other backbone (models/backbones/<name>)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from transferlab.config import params as P
from transferlab.config.errors import PipelineError
from transferlab.data import transforms
from transferlab.data.tasks import label_order
from transferlab.models import backbones
from transferlab.training import checkpoints, loop
from transferlab.training.curves import write_curves


def pretrain(name: str, entry: P.Pretrain, manifest: pd.DataFrame, out_dir: Path, seed: int,
             device: torch.device, curves_dir: Path, checkpoint_dir: Path) -> backbones.BackboneInfo:
    """Train entry.arch from a seeded random init on the source classes of `manifest` (AdamW, warmup + cosine,
    entry's augmentation and label smoothing; with patience, the best epoch on source val kept); save it into
    out_dir, its per-epoch curves into curves_dir. Checkpointed every epoch under checkpoint_dir: a killed run
    resumes to the same weights, and the checkpoint is removed once the backbone is saved. Method simclr:
    transferlab.training.simclr, on the same images, their labels ignored."""
    frame = source_images(name, entry, manifest)
    if entry.method == "simclr":
        from transferlab.training import simclr  # lightly is imported only for a self-supervised run

        return simclr.pretrain(name, entry, frame, out_dir, seed, device, curves_dir, checkpoint_dir)
    classes = entry.classes or label_order(frame["label"])
    to_y = {c: i for i, c in enumerate(classes)}
    pre = backbones.preprocessing(entry)
    tf = transforms.transform(pre)

    def loader(split: str, shuffle: bool) -> DataLoader:
        part = frame[frame["split"] == split]
        ds = transforms.ImageFiles(part["path"], [to_y[str(v)] for v in part["label"]],
                                   transforms.transform(pre, entry.augment) if shuffle else tf)
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(ds, batch_size=entry.batch_size, shuffle=shuffle, generator=gen,
                          pin_memory=device.type == "cuda")

    torch.manual_seed(seed)
    model = backbones.build(entry.arch, len(classes))
    train = loader("train", True)
    val = loader("val", False)
    recipe = loop.Recipe(entry.epochs, weight_decay=entry.weight_decay, label_smoothing=entry.label_smoothing,
                         patience=entry.patience, seed=seed)
    used = frame[["image_id", "split", "label", "sha256"]].astype(str).to_json(orient="values")
    checkpoint = checkpoints.for_run(checkpoint_dir, (loop, backbones, transforms, sys.modules[__name__]),
                                     entry=entry.model_dump(), seed=seed, device=str(device), rows=used,
                                     recipe=recipe, versions=backbones.versions())
    stats = loop.fit_recipe(model, [{"params": model.parameters(), "lr": entry.lr}], train, recipe, device,
                            val=val, checkpoint=checkpoint, desc=f"pretrain@{name}")
    write_curves(curves_dir, stats)
    val_acc = float((loop.predict(model, val, device).argmax(1) == np.array(val.dataset.targets)).mean())
    source = {"kind": "pretrain", "dataset": entry.dataset, "classes": classes, "epochs": entry.epochs,
              "epochs_run": stats["epochs_run"], "best_epoch": stats["best_epoch"],
              "source_val_accuracy": round(val_acc, 4), "seconds": round(stats["seconds"], 2),
              "resumed_from_epoch": stats["resumed_from_epoch"]}
    info = backbones.save(model.cpu(), out_dir, name, entry.arch, pre, source)
    checkpoint.clear()
    return info


def source_images(name: str, entry: P.Pretrain, manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest's rows of entry.classes (every row without classes); a PipelineError when a class is missing
    or none of them is in val (what the curves and early stopping measure)."""
    frame = manifest if entry.classes is None else manifest[manifest["label"].astype(str).isin(entry.classes)]
    missing = sorted(set(entry.classes or ()) - set(frame["label"].astype(str)))
    if missing:
        raise PipelineError(f"pretrain.{name}.classes: {missing} not in dataset {entry.dataset}")
    if not (frame["split"] == "val").any():
        what = "the val NT-Xent loss" if entry.method == "simclr" else "the source accuracy"
        raise PipelineError(f"pretrain.{name}: dataset {entry.dataset} has no val images of its classes to "
                            f"measure {what} on; raise its val_fraction or add images")
    return frame
