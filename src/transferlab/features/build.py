"""A feature set built from the per-image store: the images the store lacks under the set's key are extracted
(locally or on a Dask cluster), then the set (transferlab.features.sets) is assembled from the store in manifest
order. Incremental and resumable: a killed run resumes where it stopped; a run that reuses every row writes
the same bytes."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from transferlab.config.sections import FeatureSet
from transferlab.features import sets, store
from transferlab.features.extract import CHUNK_ROWS, ExtractJob, LocalExecutor
from transferlab.features.key import feature_key
from transferlab.io.hashing import key_hash
from transferlab.models import devices
from transferlab.models.backbones import read_info, readout

ASSEMBLE_ROWS = 4096  # rows gathered from the store per step while writing the feature set


@dataclass(frozen=True)
class FeaturesResult:
    n: int
    dim: int
    seconds: float
    key_hash: str
    extracted: int = 0
    reused: int = 0


def _to_extract(ids: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Manifest positions of the images the store lacks: one per distinct image, in manifest order."""
    missing = np.flatnonzero(~found)
    _, first = np.unique(ids[missing], return_index=True)
    return missing[np.sort(first)]


def _assemble(out_dir: Path, index: store.StoreIndex, ids: np.ndarray) -> list[dict]:
    """Write the feature set's shards in manifest order, a block at a time, so memory stays bounded."""
    (Path(out_dir) / sets.META).unlink(missing_ok=True)  # the set reads as incomplete until done
    writer = sets.ShardWriter(out_dir)
    for start in range(0, len(ids), ASSEMBLE_ROWS):
        writer.add(index.gather(ids[start:start + ASSEMBLE_ROWS]))
    return writer.close()


def build(name: str, fs: FeatureSet, manifest: pd.DataFrame, backbone_dir: Path, out_dir: Path,
          device: torch.device | str, store_dir: Path | str | None = None,
          chunk_rows: int = CHUNK_ROWS) -> FeaturesResult:
    """Extract the images the per-image store lacks under this key, then assemble out_dir from the store.
    device: a torch.device, or a params spec (auto, cuda, ...) resolved where the work runs (the Dask workers
    for executor dask). store_dir: the store's root folder; default store.store_root(fs.store)."""
    if fs.executor == "dask":
        from transferlab.features import dask_executor  # imports distributed: only runs that shard pay for it

        with dask_executor.connect(fs, name) as client:
            executor = dask_executor.Executor(client, device, fs.precision)
            return _run(name, fs, manifest, backbone_dir, out_dir, executor, store_dir, chunk_rows)
    device = devices.resolve(device)
    return _run(name, fs, manifest, backbone_dir, out_dir, LocalExecutor(device, fs.precision), store_dir,
                chunk_rows)


def _run(name: str, fs: FeatureSet, manifest: pd.DataFrame, backbone_dir: Path, out_dir: Path, executor,
         store_dir: Path | str | None, chunk_rows: int) -> FeaturesResult:
    start = time.perf_counter()
    info = read_info(backbone_dir)
    layer, dim = readout(info, fs.pooling, fs.blocks)
    key = feature_key(info, executor.device, fs.batch_size, executor.compute_dtype, executor.numerics, layer)
    ids = store.image_ids(manifest["sha256"])
    root = Path(store_dir) if store_dir is not None else store.store_root(fs.store)
    with store.ChunkStore(root, key, dim) as cache:
        index = cache.verified_index(ids)
        found = index.locate(ids)[0] >= 0
        imported = {}
        if fs.import_from and not found.all():  # sets pulled from a DVC remote: rows this store lacks
            others = [Path(out_dir).parent / other for other in fs.import_from]
            if imported := cache.import_sets(others, ids[~found]):
                index = cache.verified_index(ids)
                found = index.locate(ids)[0] >= 0
        todo, rate = _to_extract(ids, found), None
        if len(todo):
            tick = time.perf_counter()
            job = ExtractJob(cache, Path(backbone_dir), info, fs, manifest["path"].to_numpy()[todo], ids[todo],
                             chunk_rows, f"features@{name}")
            new = executor.extract(job)
            rate = round(len(todo) / (time.perf_counter() - tick), 1)
            index = store.StoreIndex(index.chunks + new, dim)
        shards = _assemble(out_dir, index, ids)
        meta = {"featureset": name, "dataset": fs.dataset, "backbone": fs.backbone, "key": key,
                "key_hash": key_hash(key), "dim": dim, "dtype": "float16",
                "readout": {"pooling": fs.pooling, "blocks": fs.blocks}}
        sets.write(out_dir, manifest[["image_id", "label", "split", "sha256"]].reset_index(drop=True), shards,
                   meta)
        run = {"store": str(cache.dir), "executor": fs.executor, "scheduler": getattr(executor, "scheduler", None),
               "extracted": int(len(todo)), "reused": int(found.sum()), "imported": imported,
               "seconds": round(time.perf_counter() - start, 3), "images_per_second": rate}
        sets.write_run(out_dir, run)
    return FeaturesResult(len(ids), dim, run["seconds"], meta["key_hash"], run["extracted"],
                          run["reused"])
