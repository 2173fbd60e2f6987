"""model_zoo: feature extraction with a timm ViT-S/16 beside torchvision's ResNet-50, from the same images.

ours: timm's vit_small_patch16_224 (22M parameters, the size of DINOv2 ViT-S/14) through
transferlab.features.build.build with the feature set's defaults (pooled pre-logits features).
baseline: torchvision's resnet50 (25.6M) through the same build, same images, same settings.
Diagnostic: the ViT with the DINOv2 linear-evaluation readout (pooling cls+mean over the last 4 blocks,
timm's forward_intermediates): what the readout costs beside the pooled features.
Both at 224 px, random init (weights do not change speed), a fresh store each, timed whole: loading the
model, decoding, the forward passes, the store's chunks, the feature set. `speedup` is ResNet-50's seconds
over the ViT's; `time_per_image_ratio` the ViT's seconds per image over ResNet-50's.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from benchmarks.common import timed, write_images

TARGET = {"time_per_image_ratio_max": 1.5}  # a ViT-S/16 costs at most 1.5x a ResNet-50 per image here

FULL = {"n": 192, "image_size": 224, "source_px": 224}
QUICK = {"n": 8, "image_size": 32, "source_px": 48}
ROUNDS = 2
VIT, RESNET = "vit_small_patch16_224", "resnet50"
METHODS = ("baseline", "ours", "ours_dinov2_readout")


def _backbones(work: Path, size: int) -> dict[str, Path]:
    from transferlab.config.params import Backbone
    from transferlab.models import backbones

    entries = {"baseline": Backbone(arch=RESNET, image_size=size),
               "ours": Backbone(source="timm", arch=VIT, image_size=size)}
    dirs = {m: work / m for m in entries}
    for m, entry in entries.items():
        backbones.create(m, entry, dirs[m], seed=0)
    return {**dirs, "ours_dinov2_readout": dirs["ours"]}


def run(work: Path, quick: bool = False) -> dict:
    import torch

    from transferlab.config.params import FeatureSet
    from transferlab.features.build import build
    from transferlab.features.key import compute_dtype_name
    from transferlab.models import backbones, devices

    device = devices.resolve(os.environ.get("TRANSFERLAB_BENCH_DEVICE", "cpu"))
    c = QUICK if quick else FULL
    n = c["n"]
    manifest = write_images(work / "images", range(n), c["source_px"], "JPEG")
    dirs = _backbones(work, c["image_size"])
    readouts = {"baseline": ("model", 1), "ours": ("model", 1), "ours_dinov2_readout": ("cls+mean", 4)}
    for m in ("baseline", "ours"):  # warm-up: one-time process initialisation out of every timing
        trunk, _ = backbones.load_trunk(dirs[m])
        with torch.inference_mode():
            trunk.to(device).eval()(torch.zeros(2, 3, c["image_size"], c["image_size"], device=device))
    del trunk
    params = {m: sum(p.numel() for p in backbones.load_classifier(dirs[m])[0].parameters()) for m in dirs}

    # Interleaved: the images split into ROUNDS parts, every model run on each part, the order reversed every
    # other round, so a drift in the (shared) machine's load falls on all alike.
    secs, log, dims = dict.fromkeys(METHODS, 0.0), [], {}
    for r, idx in enumerate(np.array_split(np.arange(n), ROUNDS)):
        part = manifest.iloc[idx].reset_index(drop=True)
        for m in (METHODS if r % 2 == 0 else METHODS[::-1]):
            pooling, blocks = readouts[m]
            fs = FeatureSet(dataset="gen", backbone=m, pooling=pooling, blocks=blocks)
            with timed() as t:
                res = build("gen", fs, part, dirs[m], work / f"{m}-{r}", device, store_dir=work / f"store-{m}-{r}")
            assert res.extracted == len(part), res
            secs[m] += t["seconds"]
            dims[m] = res.dim
            log.append({"round": r, "method": m, "images": len(part), "seconds": round(t["seconds"], 3)})
    ips = {m: n / secs[m] for m in METHODS}
    dtype = compute_dtype_name(device)
    where = f"CUDA ({torch.cuda.get_device_name(0)})" if device.type == "cuda" else "CPU"
    return {
        "baseline": {"seconds": secs["baseline"], "images_per_second": round(ips["baseline"], 3),
                     "description": f"torchvision {RESNET} ({params['baseline'] / 1e6:.1f}M parameters), pooled "
                                    f"{dims['baseline']}-d features, through transferlab.features.build",
                     "parameters": params["baseline"], "dim": dims["baseline"]},
        "ours": {"seconds": secs["ours"], "images_per_second": round(ips["ours"], 3),
                 "description": f"timm {VIT} ({params['ours'] / 1e6:.1f}M parameters), pooled pre-logits "
                                f"{dims['ours']}-d features, through transferlab.features.build",
                 "parameters": params["ours"], "dim": dims["ours"]},
        "ours_dinov2_readout": {"seconds": secs["ours_dinov2_readout"],
                                "images_per_second": round(ips["ours_dinov2_readout"], 3),
                                "description": f"the same ViT, pooling cls+mean over the last 4 blocks "
                                               f"({dims['ours_dinov2_readout']}-d, timm forward_intermediates)",
                                "dim": dims["ours_dinov2_readout"]},
        "speedup": secs["baseline"] / secs["ours"],
        "time_per_image_ratio": secs["ours"] / secs["baseline"],
        "device": str(device), "compute_dtype": dtype,
        "workload": f"{n} generated {c['source_px']} px JPEGs (digit-derived), both models at "
                    f"{c['image_size']} px "
                    f"(random init), {where}, precision auto -> {dtype}, channels_last, batch 64",
        "runs": log,
        "notes": [f"ViT-S/16 {ips['ours']:.1f} images/s, ResNet-50 {ips['baseline']:.1f}: the ViT takes "
                  f"{secs['ours'] / secs['baseline']:.2f}x the time per image",
                  f"the DINOv2 readout (cls+mean, last 4 blocks, timm forward_intermediates) ran "
                  f"{ips['ours_dinov2_readout']:.1f} images/s beside the pooled features' {ips['ours']:.1f}",
                  f"n = {n}, split into {ROUNDS} parts, every model on each part in turn (order reversed every "
                  "other round), side by side in one process; seconds are the sums (runs)"],
    }
