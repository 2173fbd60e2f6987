"""Stage finetune@<task>: optionally train the whole network on the task (full: new head; lpft: from the
trained head), then predict val and test. With mode none it records that it was skipped."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader

from stages import backbones, cli, devices, feature_store, heads, images, trainer
from stages import params as P
from stages.atomic import atomic_path, write_json, write_parquet
from stages.paths import Layout
from stages.tasks import select
from stages.train_head import HEAD_FILE

INFO_FILE, WEIGHTS_FILE, PREDICTIONS_FILE = "finetune.json", "finetuned.safetensors", "predictions.parquet"


def _model(backbone_dir: Path, head_dir: Path, mode: str, n_classes: int) -> tuple[nn.Module, list, list]:
    trunk, info = backbones.load_trunk(backbone_dir)
    if mode == "lpft":  # LP-FT (Kumar et al. 2022): start from the linear probe, not a random head
        top = heads.load(head_dir / HEAD_FILE).folded()
    else:
        top = nn.Linear(info.feature_dim, n_classes)
    return nn.Sequential(trunk, top), list(trunk.parameters()), list(top.parameters())


def run(task_name: str, task: P.Task, cfg: P.Finetune, seed: int, layout: Layout,
        device: torch.device) -> dict:
    out_dir = layout.finetune(task_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    if task.finetune == "none":
        info = {"task": task_name, "mode": "none"}
        write_json(out_dir / INFO_FILE, info)
        return info
    meta = feature_store.read_meta(layout.features(task.features))
    manifest = pd.read_parquet(layout.manifest(meta["dataset"]))[["image_id", "path"]]
    _, index = feature_store.read(layout.features(task.features))
    sel = select(index, task, seed, task_name)
    rows = sel.rows.merge(manifest, on="image_id", how="left", validate="many_to_one")
    torch.manual_seed(seed)
    model, trunk_params, head_params = _model(layout.backbone(meta["backbone"]), layout.head(task_name),
                                              task.finetune, len(sel.classes))
    pre = backbones.read_info(layout.backbone(meta["backbone"])).preprocessing
    tf = images.transform(pre)

    def loader(part: pd.DataFrame, shuffle: bool) -> DataLoader:
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(images.ImageFiles(part["path"], part["y"].tolist(), tf), batch_size=cfg.batch_size,
                          shuffle=shuffle, generator=gen, pin_memory=device.type == "cuda")

    groups = [{"params": trunk_params, "lr": cfg.lr * cfg.backbone_lr_mult},
              {"params": head_params, "lr": cfg.lr}]
    stats = trainer.fit(model, groups, loader(rows[rows["split"] == "train"], True), cfg.epochs, device,
                        cfg.weight_decay, cfg.label_smoothing, cfg.freeze_norm, desc=f"finetune@{task_name}")
    evals = rows[rows["split"].isin(["val", "test"])]
    logits = trainer.predict(model, loader(evals, False), device)
    preds = evals[["image_id", "split", "target", "y"]].assign(pred=logits.argmax(1))
    write_parquet(out_dir / PREDICTIONS_FILE, preds)
    with atomic_path(out_dir / WEIGHTS_FILE) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp)
    info = {"task": task_name, "mode": task.finetune, "classes": sel.classes,
            "hyperparameters": cfg.model_dump(), "n_train": int((rows["split"] == "train").sum()),
            "seconds": round(stats["seconds"], 3), "train_loss": [round(x, 5) for x in stats["train_loss"]]}
    write_json(out_dir / INFO_FILE, info)
    return info


def _main(params: P.Params, task: str) -> str:
    info = run(task, params.tasks[task], params.finetune, params.seed, Layout(), devices.resolve(params.device))
    return f"finetune@{task}: mode {info['mode']}"


def main(argv: list[str] | None = None) -> None:
    cli.stage_main(__doc__, _main, argv)


if __name__ == "__main__":
    main()
