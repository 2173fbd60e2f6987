"""Stage features@<set>: run a backbone over a prepared dataset once; cache float16 features to disk.

Public reader (contract): load_features(name, root=".") -> (N×D array, DataFrame[image_id, label, split]).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import PIL
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from stages import backbones, cli, devices, feature_store, images
from stages import params as P
from stages.devices import autocast_dtype
from stages.paths import Layout


@dataclass(frozen=True)
class FeaturesResult:
    n: int
    dim: int
    seconds: float
    key_hash: str


def load_features(name: str, root: str | Path = ".") -> tuple[np.ndarray, pd.DataFrame]:
    """A cached feature set: (features N×D float16, DataFrame with image_id, label, split in row order)."""
    feats, index = feature_store.read(Layout(Path(root)).features(name))
    return feats, index[["image_id", "label", "split"]]


def feature_key(info: backbones.BackboneInfo, device: torch.device) -> dict:
    """Everything that determines the numbers: same key, same features."""
    dtype = autocast_dtype(device)
    return {"backbone_fingerprint": info.fingerprint, "arch": info.arch,
            "layer": f"input of {info.classifier}", "preprocessing": info.preprocessing,
            "decoder": f"PIL {PIL.__version__} exif_transpose RGB",
            "compute_dtype": str(dtype or torch.float32).removeprefix("torch."),
            "storage_dtype": "float16", **backbones.versions()}


@torch.inference_mode()
def _extract(trunk: torch.nn.Module, data: DataLoader, device: torch.device, writer, desc: str) -> None:
    trunk.to(device).eval()
    if device.type == "cuda":
        trunk.to(memory_format=torch.channels_last)
    dtype = autocast_dtype(device)
    for x, _ in tqdm(data, desc=desc, unit="batch", mininterval=1.0):
        x = x.to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype) if dtype else torch.autocast("cpu", enabled=False):
            out = trunk(x)
        writer.add(out.float().flatten(1).cpu().numpy())


def run(name: str, fs: P.FeatureSet, manifest: pd.DataFrame, backbone_dir: Path, out_dir: Path,
        device: torch.device) -> FeaturesResult:
    trunk, info = backbones.load_trunk(backbone_dir)
    key = feature_key(info, device)
    ds = images.ImageFiles(manifest["path"], [0] * len(manifest), images.transform(info.preprocessing))
    loader = DataLoader(ds, batch_size=fs.batch_size, num_workers=fs.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=fs.num_workers > 0)
    writer = feature_store.ShardWriter(out_dir)
    start = time.perf_counter()
    _extract(trunk, loader, device, writer, f"features@{name}")
    seconds = time.perf_counter() - start
    index = manifest[["image_id", "label", "split", "sha256"]].reset_index(drop=True)
    meta = {"featureset": name, "dataset": fs.dataset, "backbone": fs.backbone, "key": key,
            "key_hash": feature_store.key_hash(key), "dim": info.feature_dim, "dtype": "float16",
            "extracted": int(len(index)), "reused": 0, "seconds": round(seconds, 3),
            "images_per_second": round(len(index) / max(seconds, 1e-9), 1)}
    feature_store.write(out_dir, index, writer.close(), meta)
    return FeaturesResult(len(index), info.feature_dim, seconds, meta["key_hash"])


def _main(params: P.Params, name: str) -> str:
    layout, fs = Layout(), params.features[name]
    manifest = pd.read_parquet(layout.manifest(fs.dataset))
    res = run(name, fs, manifest, layout.backbone(fs.backbone), layout.features(name),
              devices.resolve(params.device))
    return f"features@{name}: {res.n} x {res.dim} in {res.seconds:.1f}s"


def main(argv: list[str] | None = None) -> None:
    cli.stage_main(__doc__, _main, argv)


if __name__ == "__main__":
    main()
