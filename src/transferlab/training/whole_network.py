"""Training a whole network (trunk and classifier) on a task's images, what a task's finetune and scratch methods
do when the task asks for them: the task's image rows, the shared recipe, train-then-predict, the saved outputs.

transferlab.training.task_run imports it only when there is something to train, so that a task without
fine-tuning or a scratch baseline records that without loading torch and torchvision. Checkpoints every epoch
under .cache/checkpoints/<task>/<method>: an interrupted run resumes where it stopped."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader

from transferlab.config import params as P
from transferlab.config.errors import PipelineError
from transferlab.config.paths import (
    FINETUNE_INFO_FILE,
    FINETUNE_WEIGHTS_FILE,
    HEAD_FILE,
    PREDICTIONS_FILE,
    SCRATCH_INFO_FILE,
    SCRATCH_WEIGHTS_FILE,
    Layout,
    TaskDir,
)
from transferlab.data import images, transforms
from transferlab.data.tasks import select
from transferlab.features import sets
from transferlab.heads import torch_heads
from transferlab.io.atomic import atomic_path, write_json, write_parquet
from transferlab.io.hashing import file_sha256, fingerprint
from transferlab.models import backbones, devices
from transferlab.training import checkpoints
from transferlab.training import loop as trainer
from transferlab.training.curves import write_curves

# What the numbers of a run depend on besides its inputs: a checkpoint written by other code is not resumed.
_CODE = [Path(m.__file__) for m in (trainer, transforms, images, backbones)] + [
    Path(backbones.__file__).with_name(f) for f in ("timm_backbones.py", "clip_backbones.py", "cnn_blocks.py",
                                                    "blocks.py")] + [Path(__file__)]


@dataclass(frozen=True)
class TaskImages:
    """A task's selected images (rows: image_id, split, target, y, path, sha256) and where they come from."""

    name: str
    rows: pd.DataFrame
    classes: list[str]
    backbone: Path
    # the feature set's (pooling, blocks): what its head was fit on
    readout: tuple[str, int | tuple[int, ...]] = ("model", 1)

    def part(self, *splits: str) -> pd.DataFrame:
        return self.rows[self.rows["split"].isin(splits)]


def task_images(task_name: str, task: P.Task, seed: int, layout: Layout) -> TaskImages:
    meta, index = sets.read_index(layout.features(task.features))  # the rows only: no shard is read
    sel = select(index, task, seed, task_name)
    wanted = ["image_id"] + [c for c in ("path", "sha256") if c not in sel.rows.columns]
    manifest = pd.read_parquet(layout.manifest(meta["dataset"]))[wanted]
    rows = sel.rows.merge(manifest, on="image_id", how="left", validate="many_to_one")
    readout = meta.get("readout", {})
    blocks = readout.get("blocks", 1)  # a list in meta.json: the config's tuple
    return TaskImages(task_name, rows, sel.classes, layout.backbone(meta["backbone"]),
                      (readout.get("pooling", "model"), blocks if isinstance(blocks, int) else tuple(blocks)))


def recipe(cfg: P.Finetune, seed: int, imgs: TaskImages, scratch: bool = False) -> trainer.Recipe:
    """The training recipe of finetune (and scratch: nothing to freeze, batch-norm statistics must learn)."""
    weights = None
    if cfg.class_weight == "balanced":  # n / (k * n_c), as scikit-learn's class_weight="balanced"
        counts = np.bincount(imgs.part("train")["y"], minlength=len(imgs.classes)).clip(min=1)
        weights = tuple(float(w) for w in counts.sum() / (len(counts) * counts))
    if cfg.patience is not None and imgs.part("val").empty:
        raise PipelineError(f"finetune.patience: task {imgs.name} has no val images to stop on; "
                            "set patience: null or give the dataset a val_fraction")
    return trainer.Recipe(epochs=cfg.epochs, weight_decay=cfg.weight_decay, label_smoothing=cfg.label_smoothing,
                          freeze_norm=cfg.freeze_norm and not scratch,
                          freeze_epochs=0 if scratch else cfg.freeze_epochs, patience=cfg.patience,
                          class_weights=weights, seed=seed)


def train_and_predict(method: str, imgs: TaskImages, model: nn.Module, groups: list[dict],
                      frozen: nn.Module | None, rec: trainer.Recipe, cfg: P.Finetune, key: dict, layout: Layout,
                      device: torch.device) -> tuple[pd.DataFrame, dict, checkpoints.Checkpoint]:
    """Train (resuming from this exact run's checkpoint, if any), then predict val and test. The caller
    clears the checkpoint once its outputs are written: a kill before that still resumes."""
    pre = backbones.read_info(imgs.backbone).preprocessing

    def loader(part: pd.DataFrame, train: bool) -> DataLoader:
        tf = transforms.transform(pre, cfg.augment if train else "none")
        # batch-norm that learns cannot take a batch of one image: drop such a last batch (a different image
        # each epoch, as the shuffle differs)
        single = train and not rec.freeze_norm and len(part) % cfg.batch_size == 1 and len(part) > 1
        return DataLoader(transforms.ImageFiles(part["path"], part["y"].tolist(), tf), batch_size=cfg.batch_size,
                          shuffle=train, generator=torch.Generator().manual_seed(rec.seed), drop_last=single,
                          pin_memory=device.type == "cuda")

    used = imgs.rows[["image_id", "split", "y", "sha256"]].to_json(orient="values")
    checkpoint = checkpoints.Checkpoint(layout.checkpoints(imgs.name, method), fingerprint({
        "method": method, "recipe": rec, "cfg": cfg.model_dump(), "device": str(device), "rows": used,
        "code": [file_sha256(p) for p in _CODE],
        "versions": backbones.versions(backbones.read_info(imgs.backbone).library), **key}))
    stats = trainer.fit_recipe(model, groups, loader(imgs.part("train"), True), rec, device,
                               val=loader(imgs.part("val"), False) if len(imgs.part("val")) else None,
                               frozen=frozen, checkpoint=checkpoint, desc=f"{method}@{imgs.name}")
    evals = imgs.part("val", "test")
    logits = trainer.predict(model, loader(evals, False), device)
    preds = evals[["image_id", "split", "target", "y"]].assign(pred=logits.argmax(1))
    return preds, stats, checkpoint


def save_outputs(out_dir: Path, weights_file: str, model: nn.Module, preds: pd.DataFrame, info: dict,
                 info_file: str) -> None:
    write_parquet(out_dir / PREDICTIONS_FILE, preds)
    with atomic_path(out_dir / weights_file) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp)
    write_json(out_dir / info_file, info)


def run_summary(imgs: TaskImages, cfg: P.Finetune, stats: dict) -> dict:
    """The info fields finetune and scratch share."""
    return {"classes": imgs.classes, "hyperparameters": cfg.model_dump(),
            "n_train": int(len(imgs.part("train"))),
            "train_loss": [round(x, 5) for x in stats["train_loss"]], "epochs_run": stats["epochs_run"],
            "best_epoch": stats["best_epoch"]}


def record_run(out: TaskDir, method: str, stats: dict) -> dict:
    """The run record beside the method's folder (TaskDir.run_record): what differs between runs of the same
    training, kept out of the folder."""
    run = {"seconds": round(stats["seconds"], 3), "resumed_from_epoch": stats["resumed_from_epoch"]}
    write_json(out.run_record(method), run)
    return run


def finetune_model(backbone_dir: Path, head_dir: Path, mode: str, n_classes: int,
                   readout: tuple[str, int] = ("model", 1)) -> tuple[nn.Module, list, list]:
    """(trunk + head, the trunk's parameters, the head's) of a fine-tune in `mode` (full or lpft); the trunk
    computes the features the head was fit on (the feature set's pooling and blocks)."""
    trunk, info = backbones.load_trunk(backbone_dir, *readout)
    if mode == "lpft":  # LP-FT (Kumar et al. 2022): start from the linear probe, not a random head
        top = torch_heads.load(head_dir / HEAD_FILE).folded()
    else:
        top = nn.Linear(backbones.readout(info, *readout)[1], n_classes)
    return nn.Sequential(trunk, top), list(trunk.parameters()), list(top.parameters())


def finetune(task_name: str, task: P.Task, cfg: P.Finetune, seed: int, layout: Layout, out: TaskDir,
             device: torch.device | str) -> dict:
    """Fine-tune the feature set's backbone on the task (task.finetune: full or lpft), predict val and test,
    write them, the weights and the info into out.finetune -> the info."""
    device = devices.resolve(device)
    imgs = task_images(task_name, task, seed, layout)
    torch.manual_seed(seed)
    model, trunk_params, head_params = finetune_model(imgs.backbone, out.head, task.finetune,
                                                      len(imgs.classes), imgs.readout)
    groups = [{"params": trunk_params, "lr": cfg.lr * cfg.backbone_lr_mult},
              {"params": head_params, "lr": cfg.lr}]
    head_file = out.head / HEAD_FILE
    start = {"backbone": backbones.read_info(imgs.backbone).fingerprint, "mode": task.finetune,
             "readout": list(imgs.readout), "head": file_sha256(head_file) if task.finetune == "lpft" else None}
    preds, stats, checkpoint = train_and_predict("finetune", imgs, model, groups, model[0],
                                                 recipe(cfg, seed, imgs), cfg, start, layout, device)
    info = {"task": task_name, "mode": task.finetune, **run_summary(imgs, cfg, stats)}
    save_outputs(out.finetune, FINETUNE_WEIGHTS_FILE, model, preds, info, FINETUNE_INFO_FILE)
    write_curves(out.curves("finetune"), stats)
    run = record_run(out, "finetune", stats)
    checkpoint.clear()
    return {**info, **run}


def scratch(task_name: str, task: P.Task, cfg: P.Finetune, seed: int, layout: Layout, out: TaskDir,
            device: torch.device | str) -> dict:
    """Train the feature set's backbone architecture from a seeded random init on the task with the finetune
    recipe, predict val and test, write them, the weights and the info into out.scratch."""
    device = devices.resolve(device)
    imgs = task_images(task_name, task, seed, layout)
    info = backbones.read_info(imgs.backbone)
    arch = info.arch
    torch.manual_seed(seed)
    # every layer random, the classifier sized to the task
    model = backbones.build(arch, len(imgs.classes), info.library, info.model_kwargs)
    # One learning rate for all: backbone_lr_mult protects pretrained weights, and these have none.
    groups = [{"params": list(model.parameters()), "lr": cfg.lr}]
    rec = recipe(cfg, seed, imgs, scratch=True)
    preds, stats, checkpoint = train_and_predict("scratch", imgs, model, groups, None, rec, cfg,
                                            {"arch": arch, "seed": seed}, layout, device)
    info = {"task": task_name, "method": "scratch", "ran": True, "arch": arch, **run_summary(imgs, cfg, stats)}
    save_outputs(out.scratch, SCRATCH_WEIGHTS_FILE, model, preds, info, SCRATCH_INFO_FILE)
    write_curves(out.curves("scratch"), stats)
    run = record_run(out, "scratch", stats)
    checkpoint.clear()
    return {**info, **run}
