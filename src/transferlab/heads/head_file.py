"""A feature head as a file: read, applied and written with numpy alone.

Evaluating a trained head is one standardisation and one or two small matrix products; doing it with
transferlab.heads.torch_heads would import torch, which costs a fresh process 1.3-2.3 s (measured). The file
holds FeatureHead's state_dict (mean, std, net.0.weight, net.0.bias and, for an mlp, net.2.weight, net.2.bias
after a ReLU) and its config as json metadata."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from transferlab.config.errors import PipelineError
from transferlab.io.atomic import atomic_path

LAYERS = {"linear": ("net.0",), "mlp": ("net.0", "net.2")}


@dataclass(frozen=True)
class HeadFile:
    """A head's config (in_dim, n_classes, kind, hidden_dim) and its float32 tensors by state_dict key."""

    config: dict
    tensors: dict[str, np.ndarray]


def load(path: Path) -> HeadFile:
    with safe_open(str(path), "np") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    # one "head" entry; files written before it have "config" (and "extra") instead
    config = json.loads(meta["head"])["config"] if "head" in meta else json.loads(meta.get("config", "{}"))
    layers = LAYERS.get(config.get("kind"))
    needed = ["mean", "std"] + [f"{layer}.{p}" for layer in layers or () for p in ("weight", "bias")]
    missing = [k for k in needed if k not in tensors]
    if layers is None or missing:
        raise PipelineError(f"{path}: not a feature head (kind {config.get('kind')!r}, missing {missing}); "
                            "re-run the tasks@ stage of its feature set")
    return HeadFile(config, tensors)


def save(head: HeadFile, path: Path, extra: dict) -> None:
    """The head's state_dict tensors, and its config and `extra` (e.g. the class names) as one json metadata
    entry: safetensors writes its metadata map in an order that changes from process to process, so with two
    entries the same head came out as different bytes half the time (measured), and DVC saw a new output."""
    meta = {"head": json.dumps({"config": head.config, "extra": extra})}
    with atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in head.tensors.items()}, tmp, metadata=meta)


def predict(head: HeadFile, x: np.ndarray) -> np.ndarray:
    """Logits (N, n_classes) in float32, as torch_heads.FeatureHead computes them: (x - mean) / std, then the
    linear layer, or linear -> ReLU -> linear (equal up to float32 rounding: the products may sum in another
    order)."""
    t = head.tensors
    z = (np.asarray(x, np.float32) - t["mean"]) / t["std"]
    for i, layer in enumerate(LAYERS[head.config["kind"]]):
        if i:
            z = np.maximum(z, 0)
        z = z @ t[f"{layer}.weight"].T + t[f"{layer}.bias"]
    return z
