"""Training and inference loops for whole image models (source pretraining, fine-tuning, scratch)."""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from transferlab.models.devices import autocast_dtype
from transferlab.optim.schedules import warmup_cosine


def _autocast(device: torch.device):
    dtype = autocast_dtype(device)
    return torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()


@dataclass(frozen=True)
class Recipe:
    """How `fit_recipe` trains, apart from the model, the data and the learning rates of the param groups."""

    epochs: int
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    freeze_norm: bool = False  # keep batch-norm statistics fixed (small sets give noisy batch statistics)
    freeze_epochs: int = 0  # the first epochs leave `frozen` untouched (the head trains alone)
    patience: int | None = None  # early stopping on val accuracy (then loss), the best epoch kept; None: off
    class_weights: tuple[float, ...] | None = None
    seed: int | None = None  # reseed shuffling and augmentation per epoch, so a resumed run is exact


class Checkpointer(Protocol):
    """Where `fit_recipe` keeps its state between epochs (transferlab.training.checkpoints.Checkpoint)."""

    def load(self) -> dict | None: ...

    def save(self, state: dict) -> None: ...


class Objective(Protocol):
    """What `fit_recipe` minimises: a batch's mean loss and its size (called under autocast), and the val scores
    early stopping judges: (accuracy, or None where there is none, mean loss). Default: Classification."""

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]: ...

    def score(self, model: nn.Module, val: DataLoader, device: torch.device) -> tuple[float | None, float]: ...


@dataclass(frozen=True)
class Classification:
    """Cross-entropy on (images, labels) batches, with class weights and label smoothing; val: accuracy, loss."""

    weights: torch.Tensor | None = None
    label_smoothing: float = 0.0

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
        x, y = (t.to(device, non_blocking=True) for t in batch)
        return nn.functional.cross_entropy(model(x), y, weight=self.weights,
                                           label_smoothing=self.label_smoothing), len(y)

    def score(self, model: nn.Module, val: DataLoader, device: torch.device) -> tuple[float | None, float]:
        return _val_score(model, val, device)


def fit_recipe(model: nn.Module, groups: list[dict], data: DataLoader, recipe: Recipe, device: torch.device, *,
          val: DataLoader | None = None, frozen: nn.Module | None = None, checkpoint: Checkpointer | None = None,
          desc: str = "train", objective: Objective | None = None) -> dict:
    """AdamW + warmup-cosine over `recipe.epochs` on `objective` (default: the recipe's classification loss);
    with a `checkpoint`, the state is saved after every epoch and a run that finds one there resumes from it
    (model, optimizer, scheduler, epoch, early stopping). With a `val` loader, its scores are recorded every
    epoch (the curves), and early stopping judges them."""
    if checkpoint is not None and recipe.seed is None:
        raise ValueError("a resumable run needs recipe.seed: each epoch's shuffle must not depend on the past")
    if recipe.patience is not None and val is None:
        raise ValueError("early stopping needs a val loader")
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(groups, weight_decay=recipe.weight_decay)
    run = _Run(model, opt, warmup_cosine(opt, recipe.epochs * len(data)),
               torch.amp.GradScaler(device.type, enabled=autocast_dtype(device) == torch.float16))
    resumed = run.restore(checkpoint.load()) if checkpoint is not None else None
    if objective is None:
        weights = torch.tensor(recipe.class_weights, device=device) if recipe.class_weights else None
        objective = Classification(weights, recipe.label_smoothing)
    start = time.perf_counter() - run.seconds
    todo = range(run.epoch, recipe.epochs if not run.stopped else run.epoch)
    for epoch in tqdm(todo, desc=desc, unit="epoch", mininterval=1.0, initial=run.epoch, total=recipe.epochs):
        if recipe.seed is not None:
            _reseed(data, recipe.seed, epoch)
        _set_frozen(frozen, epoch < recipe.freeze_epochs)
        _train_mode(model, frozen if epoch < recipe.freeze_epochs else None, recipe.freeze_norm)
        run.losses.append(_epoch(run, data, objective, device))
        run.lrs.append(run.sched.get_last_lr()[-1])  # the last group's: the head's, or the only one
        if val is not None:
            acc, val_loss = objective.score(model, val, device)
            run.val.append({"accuracy": acc, "loss": val_loss})
            if recipe.patience is not None:
                run.judge((acc, val_loss), recipe.patience)
        run.epoch, run.seconds = epoch + 1, time.perf_counter() - start
        if checkpoint is not None:
            checkpoint.save(run.state(frozen=epoch < recipe.freeze_epochs))
        if run.stopped:
            break
    _set_frozen(frozen, False)
    if run.best_state is not None:
        model.load_state_dict(run.best_state)
    return {"seconds": time.perf_counter() - start, "train_loss": run.losses, "val": run.val, "lr": run.lrs,
            "epochs_run": run.epoch, "best_epoch": run.best_epoch, "resumed_from_epoch": resumed}


class _Run:
    """The mutable state of one training run: what a checkpoint holds."""

    def __init__(self, model: nn.Module, opt, sched, scaler):
        self.model, self.opt, self.sched, self.scaler = model, opt, sched, scaler
        self.epoch, self.seconds, self.losses, self.val, self.lrs = 0, 0.0, [], [], []
        self.best_score, self.best_epoch, self.best_state, self.bad, self.stopped = None, None, None, 0, False

    def judge(self, score: tuple[float | None, float], patience: int) -> None:
        """Early stopping: better = higher val accuracy, then lower val loss (no accuracy: lower loss)."""
        acc, loss = score
        key = [-loss] if acc is None else [acc, -loss]
        if self.best_score is None or tuple(key) > tuple(self.best_score):
            self.best_score, self.best_epoch, self.bad = key, self.epoch + 1, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        else:
            self.bad += 1
            self.stopped = self.bad >= patience

    def state(self, frozen: bool) -> dict:
        return {"epoch": self.epoch, "seconds": self.seconds, "frozen": frozen, "stopped": self.stopped,
                "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "scaler": self.scaler.state_dict(),
                "train_loss": self.losses, "val": self.val, "lr": self.lrs, "best_score": self.best_score,
                "best_epoch": self.best_epoch, "best_state": self.best_state, "bad": self.bad}

    def restore(self, state: dict | None) -> int | None:
        """Load a saved state; the epoch it resumes from (None: nothing saved, a fresh run)."""
        if state is None:
            return None
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.seconds, self.stopped = state["epoch"], state["seconds"], state["stopped"]
        self.losses, self.val, self.bad = list(state["train_loss"]), list(state["val"]), state["bad"]
        self.lrs = list(state["lr"])
        self.best_score, self.best_epoch, self.best_state = (state["best_score"], state["best_epoch"],
                                                             state["best_state"])
        return self.epoch


def _reseed(data: DataLoader, seed: int, epoch: int) -> None:
    # The shuffle (the loader's generator) and augmentation (torch's global RNG, also the workers' seeds)
    # of epoch e depend on (seed, e) only, so a run resumed at epoch e draws exactly what it would have.
    epoch_seed = seed * 100_003 + epoch
    torch.manual_seed(epoch_seed)
    if data.generator is not None:
        data.generator.manual_seed(epoch_seed)


def _set_frozen(module: nn.Module | None, frozen: bool) -> None:
    if module is not None:
        for p in module.parameters():
            p.requires_grad_(not frozen)


def _train_mode(model: nn.Module, frozen: nn.Module | None, freeze_norm: bool) -> None:
    model.train()
    for m in model.modules():
        if freeze_norm and isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    if frozen is not None:  # a frozen trunk is a fixed feature extractor, batch-norm statistics included
        frozen.eval()


def _epoch(run: _Run, data: DataLoader, objective: Objective, device: torch.device) -> float:
    total, n = 0.0, 0
    for batch in data:
        with _autocast(device):
            loss, size = objective.loss(run.model, batch, device)
        run.opt.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.opt)  # skips the step when fp16 gradients overflowed
        run.scaler.update()
        run.sched.step()
        total, n = total + loss.item() * size, n + size
    return total / max(n, 1)


@torch.inference_mode()
def mean_loss(objective: Objective, model: nn.Module, data: DataLoader, device: torch.device) -> float:
    """The objective's loss over a loader in eval mode, each batch weighted by its size (an Objective's score)."""
    model.eval()
    total, n = 0.0, 0
    for batch in data:
        with _autocast(device):
            loss, size = objective.loss(model, batch, device)
        total, n = total + float(loss) * size, n + size
    return total / max(n, 1)


@torch.inference_mode()
def _val_score(model: nn.Module, val: DataLoader, device: torch.device) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on a labelled loader."""
    model.eval()
    correct, total, n = 0, 0.0, 0
    for x, y in val:
        with _autocast(device):
            logits = model(x.to(device, non_blocking=True)).float()
        y = y.to(device)
        correct += int((logits.argmax(1) == y).sum())
        total += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        n += len(y)
    return correct / max(n, 1), total / max(n, 1)


@torch.inference_mode()
def predict(model: nn.Module, data: DataLoader, device: torch.device) -> np.ndarray:
    """Logits for every batch of `data`, in order, as float32."""
    model.to(device).eval()
    out = []
    for x, _ in data:
        with _autocast(device):
            out.append(model(x.to(device, non_blocking=True)).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)
