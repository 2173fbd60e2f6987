"""Stage pretrain@<name>: train a backbone on a prepared source dataset; saved like any other backbone."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from stages import backbones, cli, devices, images, trainer
from stages import params as P
from stages.errors import PipelineError
from stages.paths import Layout
from stages.tasks import label_order


def run(name: str, entry: P.Pretrain, manifest: pd.DataFrame, out_dir: Path, seed: int,
        device: torch.device) -> backbones.BackboneInfo:
    classes = entry.classes or label_order(manifest["label"])
    frame = manifest[manifest["label"].astype(str).isin(classes)]
    missing = sorted(set(classes) - set(frame["label"].astype(str)))
    if missing:
        raise PipelineError(f"pretrain.{name}.classes: {missing} not in dataset {entry.dataset}")
    to_y = {c: i for i, c in enumerate(classes)}
    pre = backbones.preprocessing(entry)
    tf = images.transform(pre)

    def loader(split: str, shuffle: bool) -> DataLoader:
        part = frame[frame["split"] == split]
        ds = images.ImageFiles(part["path"], [to_y[str(v)] for v in part["label"]], tf)
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(ds, batch_size=entry.batch_size, shuffle=shuffle, generator=gen,
                          pin_memory=device.type == "cuda")

    torch.manual_seed(seed)
    model = backbones.build(entry.arch, len(classes))
    train = loader("train", True)
    stats = trainer.fit(model, [{"params": model.parameters(), "lr": entry.lr}], train, entry.epochs,
                        device, weight_decay=entry.weight_decay, desc=f"pretrain@{name}")
    val = loader("val", False)
    val_acc = float((trainer.predict(model, val, device).argmax(1) == np.array(val.dataset.targets)).mean())
    source = {"kind": "pretrain", "dataset": entry.dataset, "classes": classes, "epochs": entry.epochs,
              "source_val_accuracy": round(val_acc, 4), "seconds": round(stats["seconds"], 2)}
    return backbones.save(model.cpu(), out_dir, name, entry.arch, pre, source)


def _main(params: P.Params, name: str) -> str:
    entry, layout = params.pretrain[name], Layout()
    manifest = pd.read_parquet(layout.manifest(entry.dataset))
    info = run(name, entry, manifest, layout.backbone(name), params.seed, devices.resolve(params.device))
    return f"pretrain@{name}: source val accuracy {info.source['source_val_accuracy']:.3f}"


def main(argv: list[str] | None = None) -> None:
    cli.stage_main(__doc__, _main, argv)


if __name__ == "__main__":
    main()
