"""Training and inference loops for whole image models (source pretraining and fine-tuning)."""
from __future__ import annotations

import math
import time
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from stages.devices import autocast_dtype


def _autocast(device: torch.device):
    dtype = autocast_dtype(device)
    return torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_frac: float = 0.05):
    """Linear warmup, then cosine decay to zero, stepped once per batch."""
    warmup = max(1, int(total_steps * warmup_frac))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fit(model: nn.Module, groups: list[dict], train: DataLoader, epochs: int, device: torch.device,
        weight_decay: float = 0.0, label_smoothing: float = 0.0, freeze_norm: bool = False,
        desc: str = "train") -> dict:
    """Train with AdamW + warmup-cosine; `groups` are optimizer param groups with their own lr.
    freeze_norm keeps batch-norm statistics fixed (small target sets give noisy batch statistics)."""
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(groups, weight_decay=weight_decay)
    sched = warmup_cosine(opt, epochs * len(train))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    start, losses = time.perf_counter(), []
    for _ in tqdm(range(epochs), desc=desc, unit="epoch", mininterval=1.0):
        model.train()
        if freeze_norm:
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        total, n = 0.0, 0
        for x, y in train:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with _autocast(device):
                loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + loss.item() * len(y), n + len(y)
        losses.append(total / max(n, 1))
    return {"seconds": time.perf_counter() - start, "train_loss": losses}


@torch.inference_mode()
def predict(model: nn.Module, data: DataLoader, device: torch.device) -> np.ndarray:
    """Logits for every batch of `data`, in order, as float32."""
    model.to(device).eval()
    out = []
    for x, _ in data:
        with _autocast(device):
            out.append(model(x.to(device, non_blocking=True)).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)
