"""The pipeline flow on prefect-dask's DaskTaskRunner: the stage tasks run on a Dask cluster, and a feature set
with executor: dask shards its extraction onto that same cluster (its address reaches the stage through DVC)."""
from __future__ import annotations

import copy
import json

import distributed

from flows.pipeline import dask_runner, pipeline
from tests.conftest import SMALL_PARAMS, make_project


def test_flow_on_a_dask_cluster_shards_extraction_onto_it(prefect_api, tmp_path):
    store = tmp_path / "store"
    params = {**copy.deepcopy(SMALL_PARAMS), "pretrain": {},
              "features": {"digits-random": {"dataset": "digits", "backbone": "random", "executor": "dask",
                                             "shard_images": 700, "store": str(store)}},
              "tasks": {"fewshot": {"features": "digits-random", "classes": [5, 6, 7, 8, 9], "shots": 5}}}
    repo = make_project(tmp_path / "repo", params)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        on_dask = pipeline.with_options(task_runner=dask_runner(cluster.scheduler_address))
        state = on_dask(targets=["features@digits-random"], repo=str(repo), return_state=True)
        address = cluster.scheduler_address
    assert state.is_completed(), state.message

    run = json.loads((repo / "data" / "features" / "digits-random.run.json").read_text())
    assert (run["executor"], run["scheduler"], run["extracted"]) == ("dask", address, 1797)
    shards = {p.name.split("-")[3] for p in store.glob("*/chunk-*.bin")}
    assert shards == {"00000", "00001", "00002"}  # 1797 images in shards of 700
