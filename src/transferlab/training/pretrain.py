"""A backbone trained on a prepared source dataset, saved like any other backbone (models/backbones/<name>)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from transferlab.config import params as P
from transferlab.config.errors import PipelineError
from transferlab.data.tasks import label_order
from transferlab.data.transforms import ImageFiles, transform
from transferlab.models import backbones
from transferlab.training import loop
from transferlab.training.curves import write_curves


def pretrain(name: str, entry: P.Pretrain, manifest: pd.DataFrame, out_dir: Path, seed: int,
             device: torch.device, curves_dir: Path) -> backbones.BackboneInfo:
    """Train entry.arch from a seeded random init on the source classes of `manifest`; save it into out_dir,
    its per-epoch curves into curves_dir."""
    classes = entry.classes or label_order(manifest["label"])
    frame = manifest[manifest["label"].astype(str).isin(classes)]
    missing = sorted(set(classes) - set(frame["label"].astype(str)))
    if missing:
        raise PipelineError(f"pretrain.{name}.classes: {missing} not in dataset {entry.dataset}")
    to_y = {c: i for i, c in enumerate(classes)}
    pre = backbones.preprocessing(entry)
    tf = transform(pre)

    def loader(split: str, shuffle: bool) -> DataLoader:
        part = frame[frame["split"] == split]
        ds = ImageFiles(part["path"], [to_y[str(v)] for v in part["label"]], tf)
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(ds, batch_size=entry.batch_size, shuffle=shuffle, generator=gen,
                          pin_memory=device.type == "cuda")

    if not (frame["split"] == "val").any():
        raise PipelineError(f"pretrain.{name}: dataset {entry.dataset} has no val images of its classes to "
                            "measure the source accuracy on; raise its val_fraction or add images")
    torch.manual_seed(seed)
    model = backbones.build(entry.arch, len(classes))
    train = loader("train", True)
    val = loader("val", False)
    stats = loop.fit_recipe(model, [{"params": model.parameters(), "lr": entry.lr}], train,
                            loop.Recipe(entry.epochs, weight_decay=entry.weight_decay), device, val=val,
                            desc=f"pretrain@{name}")
    write_curves(curves_dir, stats)
    val_acc = float((loop.predict(model, val, device).argmax(1) == np.array(val.dataset.targets)).mean())
    source = {"kind": "pretrain", "dataset": entry.dataset, "classes": classes, "epochs": entry.epochs,
              "source_val_accuracy": round(val_acc, 4), "seconds": round(stats["seconds"], 2)}
    return backbones.save(model.cpu(), out_dir, name, entry.arch, pre, source)
