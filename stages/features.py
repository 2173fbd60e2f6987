"""Stage features@<set>: run a backbone over a prepared dataset; cache float16 features to disk.

Incremental: only images the per-image store (stages.feature_store) lacks under this feature key are computed,
chunk by chunk, so a killed run resumes where it stopped; the feature set (data/features/<set>/, the DVC
output) is then assembled from the store in manifest order.

Public reader (contract): load_features(name, root=".") -> (N×D array, DataFrame[image_id, label, split]).
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from stages import backbones, cli, devices, feature_store, images
from stages import params as P
from stages.paths import Layout

CHUNK_ROWS = 1024  # rows per store chunk: a killed extraction loses at most this much work...
FLUSH_SECONDS = 60.0  # ...or this much time, on a slow machine or a large model
ASSEMBLE_ROWS = 4096  # rows gathered from the store per step while writing the feature set
MEMORY_FORMAT = "channels_last"  # of the images and the trunk during extraction, on every device


@dataclass(frozen=True)
class FeaturesResult:
    n: int
    dim: int
    seconds: float
    key_hash: str
    extracted: int = 0
    reused: int = 0


def load_features(name: str, root: str | Path = ".") -> tuple[np.ndarray, pd.DataFrame]:
    """A cached feature set: (features N×D float16, DataFrame with image_id, label, split in row order).
    The reader itself is feature_store.load_features, which stages use: it loads no torch."""
    return feature_store.load_features(name, root)


def feature_key(info: backbones.BackboneInfo, device: torch.device, batch_size: int,
                compute_dtype: str = "float32") -> dict:
    """Everything that determines the numbers: same key, same features.

    The forward batch size is part of it. Measured on CPU (resnet18 at 24/32 px, torch 2.14): an image alone
    in a forward pass gives other float16 values (for ~70% of digit images) than in a batch of 2 to 64, and
    within one batch shape neither the other images nor the position matter. So every forward pass is padded
    to exactly batch_size images (_pad), and other batch sizes (other shapes, other GPU kernels) miss. The
    compute dtype and the memory format (channels_last everywhere: other kernels, other numbers) are in it too."""
    return {"backbone_fingerprint": info.fingerprint, "arch": info.arch,
            "layer": f"input of {info.classifier}", "preprocessing": info.preprocessing,
            "decoder": images.DECODER, "device": device.type,
            "compute_dtype": compute_dtype, "memory_format": MEMORY_FORMAT,
            "forward_batch_size": batch_size, "storage_dtype": "float16", **backbones.versions()}


def compute_dtype_name(device: torch.device, precision: str = "auto") -> str:
    """The dtype the backbone computes in on `device` for features.<set>.precision, as the key spells it."""
    return str(devices.inference_dtype(device, precision)).removeprefix("torch.")


def _pad(x: torch.Tensor, size: int) -> torch.Tensor:
    """Fill a short batch with zero images: every forward pass has one shape, so an image's features do not
    depend on how many others share its batch, which differs between a resumed run and a fresh one."""
    if len(x) == size:
        return x
    return torch.cat([x, x.new_zeros((size - len(x), *x.shape[1:]))])


class ChunkWriter:
    """Appends rows to the store as they are computed, one chunk per `chunk_rows` rows or `flush_seconds`
    (whichever comes first), so a killed extraction loses at most one chunk of work. `ids`: the digests of
    the images whose rows will arrive, in order."""

    def __init__(self, store: feature_store.ChunkStore, ids: np.ndarray, chunk_rows: int,
                 flush_seconds: float = FLUSH_SECONDS):
        self.store, self.ids, self.chunk_rows, self.flush_seconds = store, ids, chunk_rows, flush_seconds
        self.buffer, self.pending, self.done, self.written = [], 0, 0, []
        self._since = time.monotonic()

    def add(self, rows: np.ndarray) -> None:
        self.buffer.append(rows.astype(feature_store.ROW_DTYPE))
        self.pending += len(rows)
        if self.pending >= self.chunk_rows or time.monotonic() - self._since >= self.flush_seconds:
            self._flush()

    def close(self) -> list[feature_store.Chunk]:
        if self.pending:
            self._flush()
        if self.done != len(self.ids):
            raise RuntimeError(f"{len(self.ids)} images to extract but {self.done} rows written")
        return self.written

    def _flush(self) -> None:
        rows = np.concatenate(self.buffer)
        self.written.append(self.store.append(self.ids[self.done:self.done + len(rows)], rows))
        self.done += len(rows)
        self.buffer, self.pending, self._since = [], 0, time.monotonic()


@torch.inference_mode()
def _extract(trunk: torch.nn.Module, data: DataLoader, device: torch.device, dtype: str, sink: ChunkWriter,
             desc: str) -> list[feature_store.Chunk]:
    """Run the trunk over `data` computing in `dtype` (autocast unless float32), every row into `sink`; the
    chunks it wrote. channels_last on every device: oneDNN's and cuDNN's fast convolution paths want NHWC
    (measured on CPU, resnet50 at 224 px: fp32 10.0 -> 13.5 images/s, bf16 22.5 -> 26-33)."""
    trunk.to(device, memory_format=torch.channels_last).eval()
    autocast = nullcontext() if dtype == "float32" else torch.autocast(device.type, dtype=getattr(torch, dtype))
    with tqdm(total=len(data.dataset), desc=desc, unit="img", mininterval=1.0) as bar:
        for x, _ in data:
            n = len(x)
            x = _pad(x, data.batch_size).to(device, non_blocking=True, memory_format=torch.channels_last)
            with autocast:
                out = trunk(x)
            sink.add(out[:n].float().flatten(1).cpu().numpy())
            bar.update(n)
    return sink.close()


def _loader(paths: np.ndarray, pre: dict, fs: P.FeatureSet, device: torch.device) -> DataLoader:
    """One pass over the images: the workers (if any) end with it, not whenever the loader is collected."""
    ds = images.ImageFiles(paths, [0] * len(paths), images.transform(pre))
    return DataLoader(ds, batch_size=fs.batch_size, num_workers=fs.num_workers,
                      pin_memory=device.type == "cuda")


def _to_extract(ids: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Manifest positions of the images the store lacks: one per distinct image, in manifest order."""
    missing = np.flatnonzero(~found)
    _, first = np.unique(ids[missing], return_index=True)
    return missing[np.sort(first)]


def _assemble(out_dir: Path, index: feature_store.StoreIndex, ids: np.ndarray) -> list[dict]:
    """Write the feature set's shards in manifest order, a block at a time, so memory stays bounded."""
    (Path(out_dir) / feature_store.META).unlink(missing_ok=True)  # the set reads as incomplete until done
    writer = feature_store.ShardWriter(out_dir)
    for start in range(0, len(ids), ASSEMBLE_ROWS):
        writer.add(index.gather(ids[start:start + ASSEMBLE_ROWS]))
    return writer.close()


def run(name: str, fs: P.FeatureSet, manifest: pd.DataFrame, backbone_dir: Path, out_dir: Path,
        device: torch.device | str, store: Path | str | None = None,
        chunk_rows: int = CHUNK_ROWS) -> FeaturesResult:
    """Extract the images the per-image store lacks under this key, then assemble out_dir from the store.
    device: a torch.device, or a params spec (auto, cuda, ...) resolved where the work runs (the Dask workers
    for executor dask). store: the store's root folder; default feature_store.store_root(fs.store)."""
    if fs.executor == "dask":
        from stages import feature_shards  # imports distributed: only runs that shard pay for it

        with feature_shards.connect(fs, name) as client:
            return _run(name, fs, manifest, backbone_dir, out_dir,
                        feature_shards.Executor(client, device, fs.precision),
                        store, chunk_rows)
    device = devices.resolve(device)
    return _run(name, fs, manifest, backbone_dir, out_dir, LocalExecutor(device, fs.precision), store,
                chunk_rows)


class LocalExecutor:
    """Extraction in this process: the backbone loaded here, rows appended to the store as they come."""

    def __init__(self, device: torch.device, precision: str = "auto"):
        self.device, self.compute_dtype = device, compute_dtype_name(device, precision)

    def extract(self, job: ExtractJob) -> list[feature_store.Chunk]:
        trunk, _ = backbones.load_trunk(job.backbone_dir)
        loader = _loader(job.paths, job.info.preprocessing, job.fs, self.device)
        sink = ChunkWriter(job.cache, job.ids, job.chunk_rows)
        return _extract(trunk, loader, self.device, self.compute_dtype, sink, job.desc)


@dataclass(frozen=True)
class ExtractJob:
    """What an executor extracts: the images `ids` (files `paths`) into `cache`, whose lock the caller holds."""

    cache: feature_store.ChunkStore
    backbone_dir: Path
    info: backbones.BackboneInfo
    fs: P.FeatureSet
    paths: np.ndarray
    ids: np.ndarray
    chunk_rows: int
    desc: str


def _run(name: str, fs: P.FeatureSet, manifest: pd.DataFrame, backbone_dir: Path, out_dir: Path, executor,
         store: Path | str | None, chunk_rows: int) -> FeaturesResult:
    start = time.perf_counter()
    info = backbones.read_info(backbone_dir)
    key = feature_key(info, executor.device, fs.batch_size, executor.compute_dtype)
    ids = feature_store.image_ids(manifest["sha256"])
    root = Path(store) if store is not None else feature_store.store_root(fs.store)
    with feature_store.ChunkStore(root, key, info.feature_dim) as cache:
        index = cache.index(ids)
        found = index.locate(ids)[0] >= 0
        imported = {}
        if fs.import_from and not found.all():  # sets pulled from a DVC remote: rows this store lacks
            others = [Path(out_dir).parent / other for other in fs.import_from]
            if imported := cache.import_sets(others, ids[~found]):
                index = cache.index(ids)
                found = index.locate(ids)[0] >= 0
        todo, rate = _to_extract(ids, found), None
        if len(todo):
            tick = time.perf_counter()
            job = ExtractJob(cache, Path(backbone_dir), info, fs, manifest["path"].to_numpy()[todo], ids[todo],
                             chunk_rows, f"features@{name}")
            new = executor.extract(job)
            rate = round(len(todo) / (time.perf_counter() - tick), 1)
            index = feature_store.StoreIndex(index.chunks + new, info.feature_dim)
        shards = _assemble(out_dir, index, ids)
        meta = {"featureset": name, "dataset": fs.dataset, "backbone": fs.backbone, "key": key,
                "key_hash": feature_store.key_hash(key), "dim": info.feature_dim, "dtype": "float16"}
        feature_store.write(out_dir, manifest[["image_id", "label", "split", "sha256"]].reset_index(drop=True),
                            shards, meta)
        run = {"store": str(cache.dir), "executor": fs.executor, "scheduler": getattr(executor, "scheduler", None),
               "extracted": int(len(todo)), "reused": int(found.sum()), "imported": imported,
               "seconds": round(time.perf_counter() - start, 3), "images_per_second": rate}
        feature_store.write_run(out_dir, run)
    return FeaturesResult(len(ids), info.feature_dim, run["seconds"], meta["key_hash"], run["extracted"],
                          run["reused"])


def _main(params: P.Params, name: str) -> str:
    layout, fs = Layout(), params.features[name]
    manifest = pd.read_parquet(layout.manifest(fs.dataset))
    res = run(name, fs, manifest, layout.backbone(fs.backbone), layout.features(name), params.device)
    return (f"features@{name}: {res.n} x {res.dim} in {res.seconds:.1f}s "
            f"({res.extracted} extracted, {res.reused} reused)")


def main(argv: list[str] | None = None) -> None:
    cli.stage_main(__doc__, _main, argv)


if __name__ == "__main__":
    main()
