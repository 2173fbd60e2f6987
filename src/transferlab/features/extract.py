"""Forward passes of a frozen backbone over image files, rows appended to the per-image store as they come.

Every pass has one shape (`pad`), computes in the feature set's dtype and channels_last, and hands its rows to a
ChunkWriter, so a killed extraction loses at most one chunk of work. LocalExecutor runs it in this process;
transferlab.features.dask_executor runs the same passes in shards on a Dask cluster."""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from transferlab.config.sections import FeatureSet
from transferlab.data.transforms import ImageFiles, transform
from transferlab.features import store
from transferlab.features.key import compute_dtype_name
from transferlab.models import devices
from transferlab.models.backbones import BackboneInfo, load_trunk

CHUNK_ROWS = 1024  # rows per store chunk: a killed extraction loses at most this much work...
FLUSH_SECONDS = 60.0  # ...or this much time, on a slow machine or a large model


def pad(x: torch.Tensor, size: int) -> torch.Tensor:
    """Fill a short batch with zero images: every forward pass has one shape, so an image's features do not
    depend on how many others share its batch, which differs between a resumed run and a fresh one."""
    if len(x) == size:
        return x
    return torch.cat([x, x.new_zeros((size - len(x), *x.shape[1:]))])


class ChunkWriter:
    """Appends rows to the store as they are computed, one chunk per `chunk_rows` rows or `flush_seconds`
    (whichever comes first), so a killed extraction loses at most one chunk of work. `ids`: the digests of
    the images whose rows will arrive, in order."""

    def __init__(self, chunks: store.ChunkStore | store.ShardChunks, ids: np.ndarray, chunk_rows: int,
                 flush_seconds: float = FLUSH_SECONDS):
        self.chunks, self.ids, self.chunk_rows, self.flush_seconds = chunks, ids, chunk_rows, flush_seconds
        self.buffer, self.pending, self.done, self.written = [], 0, 0, []
        self._since = time.monotonic()

    def add(self, rows: np.ndarray) -> None:
        self.buffer.append(rows.astype(store.ROW_DTYPE))
        self.pending += len(rows)
        if self.pending >= self.chunk_rows or time.monotonic() - self._since >= self.flush_seconds:
            self._flush()

    def close(self) -> list[store.Chunk]:
        if self.pending:
            self._flush()
        if self.done != len(self.ids):
            raise RuntimeError(f"{len(self.ids)} images to extract but {self.done} rows written")
        return self.written

    def _flush(self) -> None:
        rows = np.concatenate(self.buffer)
        self.written.append(self.chunks.append(self.ids[self.done:self.done + len(rows)], rows))
        self.done += len(rows)
        self.buffer, self.pending, self._since = [], 0, time.monotonic()


@torch.inference_mode()
def forward_all(trunk: torch.nn.Module, data: DataLoader, device: torch.device, dtype: str, sink: ChunkWriter,
             desc: str) -> list[store.Chunk]:
    """Run the trunk over `data` computing in `dtype` (autocast unless float32), every row into `sink`; the
    chunks it wrote. channels_last on every device: oneDNN's and cuDNN's fast convolution paths want NHWC
    (measured on CPU, resnet50 at 224 px: fp32 10.0 -> 13.5 images/s, bf16 22.5 -> 26-33)."""
    trunk.to(device, memory_format=torch.channels_last).eval()
    autocast = nullcontext() if dtype == "float32" else torch.autocast(device.type, dtype=getattr(torch, dtype))
    with tqdm(total=len(data.dataset), desc=desc, unit="img", mininterval=1.0) as bar:
        for x, _ in data:
            n = len(x)
            x = pad(x, data.batch_size).to(device, non_blocking=True, memory_format=torch.channels_last)
            with autocast:
                out = trunk(x)
            sink.add(out[:n].float().flatten(1).cpu().numpy())
            bar.update(n)
    return sink.close()


def image_loader(paths: np.ndarray, pre: dict, fs: FeatureSet, device: torch.device) -> DataLoader:
    """One pass over the images: the workers (if any) end with it, not whenever the loader is collected."""
    ds = ImageFiles(paths, [0] * len(paths), transform(pre))
    return DataLoader(ds, batch_size=fs.batch_size, num_workers=fs.num_workers,
                      pin_memory=device.type == "cuda")


@dataclass(frozen=True)
class ExtractJob:
    """What an executor extracts: the images `ids` (files `paths`) into `cache`, whose lock the caller holds."""

    cache: store.ChunkStore
    backbone_dir: Path
    info: BackboneInfo
    fs: FeatureSet
    paths: np.ndarray
    ids: np.ndarray
    chunk_rows: int
    desc: str



class LocalExecutor:
    """Extraction in this process: the backbone loaded here, rows appended to the store as they come."""

    def __init__(self, device: torch.device, precision: str = "auto"):
        self.device, self.compute_dtype = device, compute_dtype_name(device, precision)
        self.numerics = devices.numerics(device, self.compute_dtype)

    def extract(self, job: ExtractJob) -> list[store.Chunk]:
        trunk, _ = load_trunk(job.backbone_dir, job.fs.pooling, job.fs.blocks)
        loader = image_loader(job.paths, job.info.preprocessing, job.fs, self.device)
        sink = ChunkWriter(job.cache, job.ids, job.chunk_rows)
        return forward_all(trunk, loader, self.device, self.compute_dtype, sink, job.desc)
