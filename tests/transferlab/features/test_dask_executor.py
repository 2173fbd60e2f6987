"""Feature extraction sharded over a real Dask cluster (2 worker processes): bit-identical to a local run.

Real random-init resnet18s at 32 px over 40 real digit images; every run gets its own store folder.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tests.projects import tiny_layout
from transferlab.config import params
from transferlab.config.errors import PipelineError
from transferlab.config.params import FeatureSet
from transferlab.features import sets
from transferlab.features.build import build

distributed = pytest.importorskip("distributed")

CPU = torch.device("cpu")
LOCAL = FeatureSet(dataset="tiny", backbone="bb32", batch_size=4)
# 40 images in shards of 7: 6 shards (the last one short) over 2 workers, flushed every 3 rows.
DASK = LOCAL.model_copy(update={"executor": "dask", "shard_images": 7})

pytestmark = pytest.mark.usefixtures("private_store")


@pytest.fixture(scope="module")
def proj(tmp_path_factory, tiny_digits):
    return tiny_layout(tmp_path_factory.mktemp("proj"), tiny_digits)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        yield cluster


def extract(proj, name, fs, store, device=CPU, manifest=None):
    """Extract into <store>/../sets/<name>: no other set with this key beside it to import rows from."""
    manifest = pd.read_parquet(proj.manifest("tiny")) if manifest is None else manifest
    out = store.parent / "sets" / name
    build(name, fs, manifest, proj.backbone("bb32"), out, device, store_dir=store, chunk_rows=3)
    feats, index = sets.read(out, verify=True)
    return np.array(feats), index, {**sets.read_meta(out), **sets.read_run(out)}


@pytest.fixture(scope="module")
def local(proj, tmp_path_factory):
    return extract(proj, "local", LOCAL, tmp_path_factory.mktemp("local") / "store")


def test_dask_shards_are_bit_identical_to_a_local_run(proj, cluster, local, tmp_path):
    fs = DASK.model_copy(update={"scheduler": cluster.scheduler_address})
    feats, index, meta = extract(proj, "sharded", fs, tmp_path / "store")
    local_feats, local_index, local_meta = local

    assert feats.shape == (40, 512) and np.abs(feats).sum() > 0
    assert feats.tobytes() == local_feats.tobytes()
    assert index.equals(local_index)
    assert meta["key_hash"] == local_meta["key_hash"]  # same device and dtype, resolved on the workers
    assert (meta["executor"], meta["extracted"], meta["reused"]) == ("dask", 40, 0)
    chunks = sorted((tmp_path / "store" / meta["key_hash"]).glob("chunk-*.bin"))
    shards = {c.name.split("-")[3] for c in chunks}  # chunk-<number>-<run>-<shard>-<k>.bin
    # a chunk is flushed once 3 rows wait: each shard (7 images, batches of 4) writes 4 + 3, the last 4 + 1
    assert shards == {f"{i:05d}" for i in range(6)} and len(chunks) == 6 * 2
    from transferlab.features import dask_executor  # imports distributed: after the importorskip above

    trunks = cluster_client_run(cluster, dask_executor.loaded_trunks)
    assert sorted(trunks) == [1, 1]  # each worker process loaded the backbone once, for all of its shards

    again = extract(proj, "sharded", fs, tmp_path / "store")[2]
    assert (again["extracted"], again["reused"]) == (0, 40)


def test_dask_fills_in_what_a_local_run_left(proj, cluster, local, tmp_path):
    """An interrupted local run's store is completed by the cluster; the set is still identical."""
    manifest = pd.read_parquet(proj.manifest("tiny"))
    extract(proj, "f", LOCAL, tmp_path / "store", manifest=manifest.iloc[::2])
    fs = DASK.model_copy(update={"scheduler": cluster.scheduler_address})
    feats, _, meta = extract(proj, "f", fs, tmp_path / "store")
    assert (meta["extracted"], meta["reused"]) == (20, 20)
    assert feats.tobytes() == local[0].tobytes()


def test_a_local_cluster_is_started_when_no_scheduler_is_given(proj, local, tmp_path, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    fs = DASK.model_copy(update={"workers": 1, "shard_images": 40})
    feats, _, meta = extract(proj, "own-cluster", fs, tmp_path / "store", device="auto")
    assert meta["extracted"] == 40 and meta["key"]["device"] == "cpu"
    assert feats.tobytes() == local[0].tobytes()


def test_an_unreachable_scheduler_is_one_clear_error(proj, tmp_path):
    fs = DASK.model_copy(update={"scheduler": "tcp://127.0.0.1:9"})
    with pytest.raises(PipelineError, match=r"features.bad.scheduler: cannot reach the Dask scheduler"):
        extract(proj, "bad", fs, tmp_path / "store")


def test_scheduler_without_dask_executor_is_rejected():
    with pytest.raises(PipelineError, match="scheduler is for executor: dask"):
        params.parse({"datasets": {"d": {"source": "imagefolder", "root": "x"}},
                      "backbones": {"b": {"arch": "resnet18"}}, "tasks": {},
                      "features": {"f": {"dataset": "d", "backbone": "b", "scheduler": "tcp://h:8786"}}})


def cluster_client_run(cluster, fn) -> list:
    with distributed.Client(cluster) as client:
        return list(client.run(fn).values())
