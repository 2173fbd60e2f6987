"""extraction: our extractor vs a naive loop, with model-only throughput as the ceiling.

ours: stages.features.run (num_workers=2, batch 64, a fresh store), timed whole: loading the trunk, decoding in
two DataLoader workers, the forward passes, writing the store's chunks and assembling the feature set.
baseline: the naive loop: load the same trunk, PIL-decode and transform each image in the main process,
batches of 32, fp32, torch.no_grad, torch's default threads; features kept in memory and saved with np.save.
model_only: the trunk on random tensors (batch 64, inference_mode): no decoding, no I/O; the ceiling.
Diagnostics (not in the ratio): model_only_batch_32, ours_batch_32, ours_num_workers_0: on a CPU the batch size
moves the forward pass's speed as much as data loading does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.common import CPU_NOTE, make_backbone, timed, write_images

TARGET = {"speedup_min": 1.5}

FULL = {"n": 128, "arch": "resnet50", "image_size": 224, "source_px": 224}
QUICK = {"n": 24, "arch": "resnet18", "image_size": 32, "source_px": 64}
ROUNDS = 2
METHODS = ("model_only", "model_only_batch_32", "baseline", "ours", "ours_batch_32", "ours_num_workers_0")
DIAGNOSTICS = {
    "model_only_batch_32": "model_only at the naive loop's batch size, 32",
    "ours_batch_32": "ours with batch_size 32 (the naive loop's), num_workers=2",
    "ours_num_workers_0": "ours without workers: decoding in the main process, between forward passes",
}


def naive(paths: list[str], backbone_dir: Path, out: Path, batch_size: int = 32) -> None:
    import torch
    from PIL import Image

    from stages import backbones, images

    trunk, info = backbones.load_trunk(backbone_dir)
    trunk.eval()
    tf = images.transform(info.preprocessing)
    feats = []
    for start in range(0, len(paths), batch_size):
        batch = []
        for p in paths[start:start + batch_size]:
            with Image.open(p) as img:
                batch.append(tf(img.convert("RGB")))
        with torch.no_grad():
            feats.append(trunk(torch.stack(batch)).flatten(1).numpy())
    np.save(out, np.concatenate(feats))


def model_only(backbone_dir: Path, n: int, batch_size: int = 64) -> int:
    """Forward passes over random tensors covering n images; returns the images run."""
    import torch

    from stages import backbones

    trunk, info = backbones.load_trunk(backbone_dir)
    trunk.eval()
    size = info.preprocessing["crop_size"]
    x = torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))
    batches = -(-n // batch_size)
    with torch.inference_mode():
        for _ in range(batches):
            trunk(x)
    return batches * batch_size


def run(work: Path, quick: bool = False) -> dict:
    import torch

    from stages import backbones, features
    from stages.params import FeatureSet

    c = QUICK if quick else FULL
    n = c["n"]
    manifest = write_images(work / "images", range(n), c["source_px"], "JPEG")
    bb = work / "backbone"
    make_backbone(bb, c["arch"], c["image_size"])
    cpu = torch.device("cpu")

    trunk, _ = backbones.load_trunk(bb)  # warm-up: one-time process initialisation out of every timing
    with torch.inference_mode():
        trunk.eval()(torch.zeros(2, 3, c["image_size"], c["image_size"]))
    del trunk

    # Interleaved: the images split into ROUNDS parts, every method run on each part, the order reversed
    # every other round, so a drift in the (shared) machine's load falls on all methods alike.
    secs, ran, ran32, log = dict.fromkeys(METHODS, 0.0), 0, 0, []
    for r, idx in enumerate(np.array_split(np.arange(n), ROUNDS)):
        part = manifest.iloc[idx].reset_index(drop=True)
        for m in (METHODS if r % 2 == 0 else METHODS[::-1]):
            with timed() as t:
                if m == "model_only":
                    ran += model_only(bb, len(part))
                elif m == "model_only_batch_32":
                    ran32 += model_only(bb, len(part), batch_size=32)
                elif m == "baseline":
                    naive(part["path"].tolist(), bb, work / f"naive-{r}.npy")
                else:
                    batch, workers = (32 if m == "ours_batch_32" else 64), (0 if m == "ours_num_workers_0" else 2)
                    fs = FeatureSet(dataset="gen", backbone=c["arch"], batch_size=batch, num_workers=workers)
                    res = features.run("gen", fs, part, bb, work / f"{m}-{r}", cpu, store=work / f"store-{m}-{r}")
                    assert res.extracted == len(part), res
            secs[m] += t["seconds"]
            log.append({"round": r, "method": m, "images": len(part), "seconds": round(t["seconds"], 3)})
    mo, base, ours = ({"seconds": secs[m]} for m in ("model_only", "baseline", "ours"))

    ips = {"model_only": ran / mo["seconds"], "baseline": n / base["seconds"], "ours": n / ours["seconds"]}
    per_image = base["seconds"] / n
    overhead = max(0.0, per_image - secs["model_only_batch_32"] / ran32)
    diagnostics = {m: {"seconds": secs[m], "images_per_second": round((ran32 if m == "model_only_batch_32" else n)
                                                                      / secs[m], 3), "description": d}
                   for m, d in DIAGNOSTICS.items()}
    workload = (f"{n} generated {c['source_px']} px JPEGs (digit-derived), {c['arch']} at {c['image_size']} px "
                "(random init: weights do not change speed), CPU")
    return {
        "baseline": {"seconds": base["seconds"], "images_per_second": round(ips["baseline"], 3),
                     "description": "naive loop: PIL decode + transform in the main process, no workers, "
                                    "batch 32, fp32, torch.no_grad, torch default threads; np.save at the end"},
        "ours": {"seconds": ours["seconds"], "images_per_second": round(ips["ours"], 3),
                 "description": "stages.features.run, num_workers=2, batch 64, fresh store (trunk load, "
                                "extraction, store chunks, feature-set assembly all timed)",
                 "compute_dtype": "float32 (CPU: no autocast)"},
        "model_only": {"seconds": mo["seconds"], "images": ran, "images_per_second": round(ips["model_only"], 3),
                       "description": "the trunk on random tensors, batch 64, inference_mode: no data loading"},
        **diagnostics,
        "speedup": base["seconds"] / ours["seconds"],
        "fraction_of_model_only": ips["ours"] / ips["model_only"],
        "baseline_fraction_of_model_only": ips["baseline"] / ips["model_only"],
        "workload": workload,
        "runs": log,
        "notes": [f"n = {n}: {c['arch']} at {c['image_size']} px runs at {ips['model_only']:.1f} images/s "
                  f"(model only) on this machine; the images are split into {ROUNDS} parts and every method runs "
                  "on each part in turn (order reversed every other round), side by side in one process; seconds "
                  "are the sums (runs)", CPU_NOTE,
                  f"the naive loop spends about {overhead * 1000:.0f} ms/image ({overhead / per_image:.0%} of its "
                  "time) outside the model (its seconds minus model_only_batch_32's: decoding, transforms, "
                  "batching): roughly what overlapping data loading with workers could save; on 2 cores the two "
                  "workers also compete with torch's two threads",
                  f"forward passes at batch 64 ran at {ips['model_only']:.2f} images/s and at batch 32 at "
                  f"{diagnostics['model_only_batch_32']['images_per_second']:.2f}: the batch size alone moves "
                  "the ceiling; ours uses the feature set's batch_size (default 64)"],
    }
