"""Feature extraction in shards on a Dask cluster (features.<set>.executor: dask).

The driver (the features stage) holds the store's lock for the whole run, as a local run does: it finds the
images the store lacks, cuts them into contiguous shards and maps them over the cluster. Each shard is one Dask
task: a worker process loads the backbone once (kept for its later shards), extracts the shard with the same
padded forward passes as a local run (so the rows are bit-identical) and writes chunks atomically under names
unique to the run and the shard, so workers never collide and never take the lock the driver holds. The driver
then indexes the chunks the workers report and assembles the feature set exactly as a local run does.

Workers must see the driver's paths (images, backbone folder, store): one machine, or a shared filesystem, with
this project importable (`pip install -e .` in a checkout).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import dask
import numpy as np
import torch
from distributed import Client, LocalCluster

from transferlab.config.errors import PipelineError
from transferlab.config.sections import FeatureSet
from transferlab.features import extract, store
from transferlab.features.key import compute_dtype_name
from transferlab.models import backbones, devices

_TRUNKS: dict[tuple, torch.nn.Module] = {}  # per worker process: (backbone folder, fingerprint, readout) -> trunk
WORKER_WAIT_SECONDS = 120


@contextmanager
def connect(fs: FeatureSet, name: str) -> Iterator[Client]:
    """A client of fs.scheduler, else of $DASK_SCHEDULER_ADDRESS (Dask's own setting), else of a local cluster
    of fs.workers single-threaded worker processes started for this run."""
    address = fs.scheduler or dask.config.get("scheduler-address", None)
    if not address:
        with LocalCluster(n_workers=fs.workers, threads_per_worker=1, processes=True, dashboard_address=None) \
                as cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(address, timeout=30)
    except OSError as err:
        raise PipelineError(f"features.{name}.scheduler: cannot reach the Dask scheduler at {address} ({err}); "
                            "start one (`dask scheduler`) or leave scheduler and $DASK_SCHEDULER_ADDRESS unset "
                            "for a local cluster") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
        except TimeoutError:
            raise PipelineError(f"the Dask scheduler at {address} has no workers after {WORKER_WAIT_SECONDS} s; "
                                f"start some (`dask worker {address}`) in a checkout of this project") from None
        yield client


def _worker_device(spec: str | None, precision: str) -> tuple[str, str, str]:
    """Runs on each worker: its device, compute dtype and numerics (as JSON), which the feature key records."""
    device = devices.resolve(spec or "auto")
    dtype = compute_dtype_name(device, precision)
    return str(device), dtype, json.dumps(devices.numerics(device, dtype), sort_keys=True)


class Executor:
    """Extraction sharded over the cluster behind `client`; the device is resolved on the workers, which must
    agree (their device and compute dtype are part of the feature key)."""

    def __init__(self, client: Client, device: torch.device | str, precision: str = "auto"):
        found = client.run(_worker_device, str(device), precision)
        kinds = set(found.values())
        if len(kinds) != 1:
            raise PipelineError(f"the Dask workers disagree on the device for {device!r}: {found}; set `device` "
                                "in params.yaml to one they all have, or give every worker the same hardware")
        (device_name, self.compute_dtype, numerics), = kinds
        self.numerics = json.loads(numerics)
        self.client, self.device = client, torch.device(device_name)
        self.scheduler = client.scheduler.address

    def extract(self, job: extract.ExtractJob) -> list[store.Chunk]:
        run = f"{job.cache.next_number():08d}-{uuid.uuid4().hex[:8]}"
        step = job.fs.shard_images
        shards = [Shard(str(job.backbone_dir.resolve()), job.info.fingerprint, str(job.cache.dir.resolve()),
                        f"{run}-{i:05d}", [os.path.abspath(p) for p in job.paths[s:s + step]],
                        job.ids[s:s + step], job.fs, str(self.device), self.compute_dtype, job.chunk_rows,
                        f"{job.desc} shard {i}")
                  for i, s in enumerate(range(0, len(job.ids), step))]
        futures = self.client.map(extract_shard, shards, pure=False)
        try:
            written = self.client.gather(futures)  # in shard order, so chunk order follows the manifest
        finally:
            self.client.cancel(futures)  # after a failure, stop the other shards (their chunks stay reusable)
        dim = backbones.readout(job.info, job.fs.pooling, job.fs.blocks)[1]
        return [_visible(chunk, dim) for chunks in written for chunk in chunks]


@dataclass(frozen=True)
class Shard:
    """One Dask task: these images (absolute paths, digests) into chunk files named chunk-<prefix>-<k>.bin."""

    backbone_dir: str
    fingerprint: str
    store_dir: str
    prefix: str
    paths: list[str]
    ids: np.ndarray
    fs: FeatureSet
    device: str
    compute_dtype: str
    chunk_rows: int
    desc: str


def extract_shard(shard: Shard) -> list[store.Chunk]:
    """Runs on a worker: extract one shard into the store; the chunks written."""
    device = torch.device(shard.device)
    info = backbones.read_info(shard.backbone_dir)
    if info.fingerprint != shard.fingerprint:
        raise PipelineError(f"{shard.backbone_dir} on this Dask worker holds other weights than the driver's; "
                            "workers must see the driver's files (one machine or a shared filesystem)")
    key = (shard.backbone_dir, shard.fingerprint, shard.fs.pooling, shard.fs.blocks)
    if key not in _TRUNKS:
        _TRUNKS[key] = backbones.load_trunk(shard.backbone_dir, shard.fs.pooling, shard.fs.blocks)[0]
    fs = shard.fs
    if multiprocessing.current_process().daemon:  # a daemonic worker process cannot start DataLoader workers
        fs = fs.model_copy(update={"num_workers": 0})
    loader = extract.image_loader(np.asarray(shard.paths), info.preprocessing, fs, device)
    sink = extract.ChunkWriter(store.ShardChunks(shard.store_dir, shard.prefix), shard.ids,
                                shard.chunk_rows)
    return extract.forward_all(_TRUNKS[key], loader, device, shard.compute_dtype, sink, shard.desc)


def loaded_trunks() -> int:
    """How many backbones this worker process has loaded (a test asks each worker through Client.run)."""
    return len(_TRUNKS)


def _visible(chunk: store.Chunk, dim: int) -> store.Chunk:
    """The chunk as this machine sees it: a worker on another machine may have written to a folder that only
    shares the name."""
    if not chunk.path.is_file():
        raise PipelineError(f"a Dask worker wrote {chunk.path} but it is not here: the feature store must be on "
                            "a filesystem the driver and every worker share (features.<set>.store)")
    seen = store.open_chunk(chunk.path, dim)
    if not isinstance(seen, store.Chunk) or seen.checksum != chunk.checksum:
        raise PipelineError(f"{chunk.path}: differs from what the Dask worker wrote; is the store shared?")
    return seen
