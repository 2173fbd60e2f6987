"""extraction: our extractor vs a naive loop, with model-only throughput as the ceiling.

ours: transferlab.features.build.build with the feature set's defaults (precision auto: bf16 where the hardware
has it; channels_last; batch 64; num_workers 0 on CPU, where two cores have none to spare for loader workers;
more on CUDA), a fresh store, timed whole: loading the trunk, decoding, the forward passes, writing the store's
chunks and assembling the feature set.
baseline: the naive loop: load the same trunk, PIL-decode and transform each image in the main process,
batches of 32, fp32, NCHW, torch.no_grad, torch's default threads; features kept in memory, saved with np.save.
model_only: the trunk on random tensors as ours runs it (batch 64, channels_last, ours' compute dtype,
inference_mode): no decoding, no I/O; the ceiling for ours. model_only_naive: the same as the naive loop runs
the trunk (fp32, NCHW, batch 32): the naive loop's own ceiling.
Diagnostics (not in the ratio): ours_float32 (precision float32), ours_batch_32, ours_num_workers_2.
Agreement: the cosine similarity of ours' (bf16-computed, float16-stored) features to the naive fp32 ones.

The device is cpu unless $TRANSFERLAB_BENCH_DEVICE says otherwise (`python -m benchmarks extraction --device
cuda --results benchmarks/results/<gpu>`): the GPU run uses more images and more loader workers.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from benchmarks.common import make_backbone, timed, write_images

TARGET = {"speedup_min": 1.5}

FULL = {"n": 256, "arch": "resnet50", "image_size": 224, "source_px": 224, "workers": 0}
FULL_CUDA = {"n": 4096, "arch": "resnet50", "image_size": 224, "source_px": 224,
             "workers": min(12, max(2, (os.cpu_count() or 2) - 2))}
QUICK = {"n": 24, "arch": "resnet18", "image_size": 32, "source_px": 64, "workers": 0}
ROUNDS = 2
METHODS = ("model_only", "model_only_naive", "baseline", "ours", "ours_float32", "ours_batch_32",
           "ours_num_workers_2")
DIAGNOSTICS = {
    "model_only_naive": "the trunk as the naive loop runs it: fp32, NCHW, batch 32, random tensors",
    "ours_float32": "ours with precision float32 (channels_last, batch 64)",
    "ours_batch_32": "ours with batch_size 32 (the naive loop's)",
    "ours_num_workers_2": "ours with two DataLoader workers decoding beside the forward passes",
}


def naive(paths: list[str], backbone_dir: Path, out: Path, device, batch_size: int = 32) -> None:
    import torch
    from PIL import Image

    from transferlab.data.transforms import transform
    from transferlab.models import backbones

    trunk, info = backbones.load_trunk(backbone_dir)
    trunk.to(device).eval()
    tf = transform(info.preprocessing)
    feats = []
    for start in range(0, len(paths), batch_size):
        batch = []
        for p in paths[start:start + batch_size]:
            with Image.open(p) as img:
                batch.append(tf(img.convert("RGB")))
        with torch.no_grad():
            feats.append(trunk(torch.stack(batch).to(device)).flatten(1).cpu().numpy())
    np.save(out, np.concatenate(feats))


def model_only(backbone_dir: Path, n: int, device, batch_size: int = 64, dtype: str = "float32",
               channels_last: bool = True) -> int:
    """Forward passes over random tensors covering n images; returns the images run."""
    from contextlib import nullcontext

    import torch

    from transferlab.models import backbones

    trunk, info = backbones.load_trunk(backbone_dir)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    trunk.to(device, memory_format=fmt).eval()
    size = info.preprocessing["crop_size"]
    x = torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))
    x = x.to(device, memory_format=fmt)
    autocast = nullcontext() if dtype == "float32" else torch.autocast(device.type, dtype=getattr(torch, dtype))
    batches = -(-n // batch_size)
    with torch.inference_mode(), autocast:
        for _ in range(batches):
            trunk(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batches * batch_size


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def run(work: Path, quick: bool = False) -> dict:
    import torch

    from transferlab.config.params import FeatureSet
    from transferlab.features import sets
    from transferlab.features.build import build
    from transferlab.features.key import MEMORY_FORMAT, compute_dtype_name
    from transferlab.models import backbones, devices

    device = devices.resolve(os.environ.get("TRANSFERLAB_BENCH_DEVICE", "cpu"))
    c = QUICK if quick else (FULL_CUDA if device.type == "cuda" else FULL)
    n = c["n"]
    manifest = write_images(work / "images", range(n), c["source_px"], "JPEG")
    bb = work / "backbone"
    make_backbone(bb, c["arch"], c["image_size"])
    dtype = compute_dtype_name(device)

    trunk, _ = backbones.load_trunk(bb)  # warm-up: one-time process initialisation out of every timing
    with torch.inference_mode():
        trunk.to(device).eval()(torch.zeros(2, 3, c["image_size"], c["image_size"], device=device))
    del trunk

    # Interleaved: the images split into ROUNDS parts, every method run on each part, the order reversed
    # every other round, so a drift in the (shared) machine's load falls on all methods alike.
    secs, ran, log, cos = dict.fromkeys(METHODS, 0.0), dict.fromkeys(METHODS, 0), [], []
    for r, idx in enumerate(np.array_split(np.arange(n), ROUNDS)):
        part = manifest.iloc[idx].reset_index(drop=True)
        for m in (METHODS if r % 2 == 0 else METHODS[::-1]):
            with timed() as t:
                if m == "model_only":
                    ran[m] += model_only(bb, len(part), device, dtype=dtype)
                elif m == "model_only_naive":
                    ran[m] += model_only(bb, len(part), device, batch_size=32, channels_last=False)
                elif m == "baseline":
                    naive(part["path"].tolist(), bb, work / f"naive-{r}.npy", device)
                else:
                    fs = FeatureSet(dataset="gen", backbone=c["arch"],
                                    batch_size=32 if m == "ours_batch_32" else 64,
                                    num_workers=2 if m == "ours_num_workers_2" else c["workers"],
                                    precision="float32" if m == "ours_float32" else "auto")
                    res = build("gen", fs, part, bb, work / f"{m}-{r}", device,
                                store_dir=work / f"store-{m}-{r}")
                    assert res.extracted == len(part), res
            secs[m] += t["seconds"]
            log.append({"round": r, "method": m, "images": len(part), "seconds": round(t["seconds"], 3)})
        ours_rows, _ = sets.read(work / f"ours-{r}")
        cos.append(_cosines(ours_rows, np.load(work / f"naive-{r}.npy")))
    cos = np.concatenate(cos)
    done = {m: ran[m] or n for m in METHODS}  # images run: model-only passes round up to whole batches
    ips = {m: done[m] / secs[m] for m in METHODS}
    naive_overhead = max(0.0, 1 / ips["baseline"] - 1 / ips["model_only_naive"])
    diagnostics = {m: {"seconds": secs[m], "images_per_second": round(ips[m], 3), "description": d}
                   for m, d in DIAGNOSTICS.items()}
    where = f"CUDA ({torch.cuda.get_device_name(0)})" if device.type == "cuda" else "CPU"
    workload = (f"{n} generated {c['source_px']} px JPEGs (digit-derived), {c['arch']} at {c['image_size']} px "
                f"(random init: weights do not change speed), {where}")
    return {
        "baseline": {"seconds": secs["baseline"], "images_per_second": round(ips["baseline"], 3),
                     "description": "naive loop: PIL decode + transform in the main process, no workers, "
                                    "batch 32, fp32, NCHW, torch.no_grad, torch default threads; np.save at the "
                                    "end"},
        "ours": {"seconds": secs["ours"], "images_per_second": round(ips["ours"], 3),
                 "description": f"transferlab.features.build.build with the defaults (precision auto -> {dtype}, "
                                f"channels_last, batch 64), num_workers={c['workers']}, fresh store (trunk load, "
                                "extraction, store chunks, feature-set assembly all timed)",
                 "compute_dtype": dtype, "memory_format": MEMORY_FORMAT, "num_workers": c["workers"]},
        "model_only": {"seconds": secs["model_only"], "images": done["model_only"],
                       "images_per_second": round(ips["model_only"], 3),
                       "description": f"the trunk on random tensors as ours runs it: batch 64, channels_last, "
                                      f"{dtype}, inference_mode: no data loading"},
        **diagnostics,
        "speedup": secs["baseline"] / secs["ours"],
        "fraction_of_model_only": ips["ours"] / ips["model_only"],
        "baseline_fraction_of_model_only": ips["baseline"] / ips["model_only_naive"],
        "agreement": {"cosine_min": round(float(cos.min()), 6), "cosine_mean": round(float(cos.mean()), 6),
                      "what": "per-image cosine similarity of ours' features to the naive loop's fp32 features"},
        "device": str(device),
        "workload": workload,
        "runs": log,
        "notes": [f"n = {n}: {c['arch']} at {c['image_size']} px; the images are split into {ROUNDS} parts and "
                  "every method runs on each part in turn (order reversed every other round), side by side in "
                  "one process; seconds are the sums (runs)",
                  f"model only: {ips['model_only']:.1f} images/s as ours runs the trunk ({dtype}, channels_last, "
                  f"batch 64) vs {ips['model_only_naive']:.1f} as the naive loop does (fp32, NCHW, batch 32): "
                  "the compute dtype and memory format move the ceiling "
                  f"{ips['model_only'] / ips['model_only_naive']:.1f}x; "
                  f"ours in float32 ran {ips['ours_float32']:.1f} images/s",
                  f"the naive loop spends about {naive_overhead * 1000:.0f} ms/image "
                  f"({naive_overhead * ips['baseline']:.0%} of its time) outside the model: decoding, transforms, "
                  "batching: what DataLoader workers could overlap with the forward passes (ours with two "
                  f"workers: {ips['ours_num_workers_2']:.1f} images/s, without: {ips['ours']:.1f})",
                  f"ours' features agree with the naive fp32 loop's to cosine similarity {cos.min():.4f} at worst "
                  f"(mean {cos.mean():.5f}): {dtype} compute, float16 storage"],
    }
