"""Classification heads trained on cached features: linear or a small MLP, with standardisation built in."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from stages.atomic import atomic_path
from stages.params import Head
from stages.trainer import warmup_cosine


class FeatureHead(nn.Module):
    """(x - mean) / std, then a linear layer or a one-hidden-layer MLP."""

    def __init__(self, in_dim: int, n_classes: int, kind: str = "linear", hidden_dim: int = 256):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        layers = ([nn.Linear(in_dim, n_classes)] if kind == "linear" else
                  [nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, n_classes)])
        self.net = nn.Sequential(*layers)
        self.config = {"in_dim": in_dim, "n_classes": n_classes, "kind": kind, "hidden_dim": hidden_dim}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)

    def folded(self) -> nn.Sequential:
        """The same function without the standardisation step, folded into the first linear layer
        (what LP-FT puts on top of the backbone)."""
        net = nn.Sequential(*[type(m)() if not isinstance(m, nn.Linear) else
                              nn.Linear(m.in_features, m.out_features) for m in self.net])
        net.load_state_dict(self.net.state_dict())
        first = net[0]
        with torch.no_grad():
            first.bias += -(first.weight * (self.mean / self.std)).sum(1)
            first.weight /= self.std
        return net


def train(x: np.ndarray, y: np.ndarray, n_classes: int, cfg: Head, seed: int) -> tuple[FeatureHead, dict]:
    """Fit a head on features with AdamW + warmup-cosine (full fp32 on CPU; features are small)."""
    torch.manual_seed(seed)
    xt, yt = torch.as_tensor(np.asarray(x, np.float32)), torch.as_tensor(y, dtype=torch.long)
    head = FeatureHead(xt.shape[1], n_classes, cfg.kind, cfg.hidden_dim)
    if cfg.standardize:
        head.mean.copy_(xt.mean(0))
        std = xt.std(0)  # a feature constant in training keeps scale 1 (as StandardScaler does)
        head.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = -(-len(xt) // cfg.batch_size)
    sched = warmup_cosine(opt, cfg.epochs * steps)
    gen = torch.Generator().manual_seed(seed)
    loss_fn, start = nn.CrossEntropyLoss(), time.perf_counter()
    head.train()
    for _ in range(cfg.epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(cfg.batch_size):
            loss = loss_fn(head(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    head.eval()
    return head, {"seconds": time.perf_counter() - start, "final_train_loss": loss.item()}


@torch.inference_mode()
def predict(head: FeatureHead, x: np.ndarray) -> np.ndarray:
    return head(torch.as_tensor(np.asarray(x, np.float32))).numpy()


def save(head: FeatureHead, path: Path, extra: dict) -> None:
    meta = {"config": json.dumps(head.config), "extra": json.dumps(extra)}
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in head.state_dict().items()}, tmp, metadata=meta)


def load(path: Path) -> FeatureHead:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        config = json.loads(f.metadata()["config"])
    head = FeatureHead(**config)
    head.load_state_dict(load_file(path))
    return head.eval()
