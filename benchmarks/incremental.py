"""incremental: extracting after appending 1% new images (the store reuses the rest) vs re-extracting all.

baseline: N + 1% images through transferlab.features.build.build with a fresh store (everything extracted).
setup (not in the ratio): the store as it stood before the append, holding the N old images' features. To fit
the budget it is written from the baseline's own rows rather than by a second extraction of N images: the
baseline's store (transferlab.features.store.ChunkStore under transferlab.features.key.feature_key, the key
build used: checked against the set's key_hash) gives the N old rows (ChunkStore.verified_index), which go into
a second store with ChunkStore.append, in chunks of transferlab.features.extract.CHUNK_ROWS rows as build writes
them. Same key, same digests, same bytes, so build cannot tell the difference.
ours: the same N + 1% images through build with that store: only the new images are extracted, the rest is
read from the store, and the whole feature set is assembled.
Both outputs are compared: the store's promise is bit-identical features.
"""
from __future__ import annotations

from pathlib import Path

from benchmarks.common import CPU_NOTE, make_backbone, timed, write_images

TARGET = {"speedup_min": 20}

FULL = {"n": 6400, "arch": "resnet18", "image_size": 64, "source_px": 64, "batch_size": 64}
QUICK = {"n": 200, "arch": "resnet18", "image_size": 32, "source_px": 32, "batch_size": 64}


def run(work: Path, quick: bool = False) -> dict:
    import torch

    from transferlab.config.params import FeatureSet
    from transferlab.features import sets
    from transferlab.features.build import build
    from transferlab.features.extract import CHUNK_ROWS
    from transferlab.features.key import compute_dtype_name, feature_key
    from transferlab.features.store import ChunkStore, image_ids
    from transferlab.io.hashing import key_hash
    from transferlab.models import backbones

    c = QUICK if quick else FULL
    n, new = c["n"], max(1, c["n"] // 100)
    manifest = write_images(work / "images", range(n + new), c["source_px"], "JPEG")
    bb = work / "backbone"
    make_backbone(bb, c["arch"], c["image_size"])
    cpu = torch.device("cpu")
    fs = FeatureSet(dataset="gen", backbone=c["arch"], batch_size=c["batch_size"])

    with timed() as base:
        full = build("gen", fs, manifest, bb, work / "set-full", cpu, store_dir=work / "fresh-store")
    info = backbones.read_info(bb)
    key = feature_key(info, cpu, fs.batch_size, compute_dtype_name(cpu, fs.precision))
    if key_hash(key) != full.key_hash:
        raise RuntimeError(f"feature_key gives {key_hash(key)}, build keyed the set {full.key_hash}")
    ids = image_ids(manifest["sha256"])[:n]
    with timed() as setup:
        with ChunkStore(work / "fresh-store", key, info.feature_dim) as src, \
                ChunkStore(work / "store", key, info.feature_dim) as dst:
            rows = src.verified_index(ids)
            for start in range(0, n, CHUNK_ROWS):
                dst.append(ids[start:start + CHUNK_ROWS], rows.gather(ids[start:start + CHUNK_ROWS]))
    with timed() as ours:
        inc = build("gen", fs, manifest, bb, work / "set-incremental", cpu, store_dir=work / "store")
    assert (inc.extracted, inc.reused, full.extracted) == (new, n, n + new), (inc, full)
    a, _ = sets.read(work / "set-incremental", verify=True)
    b, _ = sets.read(work / "set-full", verify=True)
    identical = a.shape == b.shape and a.tobytes() == b.tobytes()

    padded = -(-new // c["batch_size"]) * c["batch_size"]
    return {
        "baseline": {"seconds": base["seconds"], "images_extracted": full.extracted,
                     "description": f"transferlab.features.build.build over all {n + new} images with a fresh "
                                    "store (re-extract everything)"},
        "ours": {"seconds": ours["seconds"], "images_extracted": inc.extracted, "images_reused": inc.reused,
                 "description": f"build over the same {n + new} images after {n} were extracted "
                                f"into the store: {new} new images extracted, {n} reused, the set re-assembled"},
        "speedup": base["seconds"] / ours["seconds"],
        "setup_seconds": setup["seconds"],
        "appended_fraction": new / n,
        "bit_identical": identical,
        "workload": f"{n} + {new} generated {c['source_px']} px JPEGs (digit-derived), {c['arch']} at "
                    f"{c['image_size']} px (random init), batch {c['batch_size']}, num_workers 0, CPU",
        "notes": [f"{c['arch']} at {c['image_size']} px so that N = {n} fits the budget; the ratio depends on N "
                  "and the batch size more than on the model",
                  "the pre-append store is written from the baseline's rows (ChunkStore.append), not by a second "
                  "extraction: see setup_seconds and the module docstring",
                  "every forward pass is padded to the batch size (transferlab.features.extract.pad), so "
                  f"{new} new images cost {padded} images of compute: an append smaller than one batch costs a "
                  "full batch",
                  CPU_NOTE],
    }
