"""Work pools on a real Prefect server (loopback): stages that run the backbone go to pool gpu, the rest to pool
cpu. Two process workers, each in a checkout of its own, exchange results only through a DVC remote and its
run-cache (`python -m flows.pipeline --pools --sync`), as two machines would.
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect.client.orchestration import SyncPrefectClient

from flows.pools import pool_of, rounds
from tests.conftest import REPO, SMALL_PARAMS, make_project, sh
from tests.flows.conftest import flow_runs
from tests.flows.test_deploy import server, start, stop  # noqa: F401  (server: the `prefect server start` fixture)
from transferlab.config import params as P
from transferlab.config.paths import Layout

BIN = Path(sys.executable).parent
PARAMS = {**copy.deepcopy(SMALL_PARAMS), "pretrain": {},
          "features": {"digits-random": {"dataset": "digits", "backbone": "random"}},
          "tasks": {"fewshot": {"features": "digits-random", "classes": [5, 6, 7, 8, 9], "shots": 5,
                                "finetune": "full"},
                    "parity": {"features": "digits-random",
                               "label_map": {5: "odd", 6: "even", 7: "odd", 8: "even", 9: "odd"}}}}


def prefect(*args: str, env: dict) -> str:
    proc = subprocess.run([str(BIN / "prefect"), "--no-prompt", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    return output


def test_rounds_keep_graph_order_and_batch_each_pool():
    upstream = {"prepare": set(), "features": {"prepare"}, "head": {"features"}, "finetune": {"head"},
                "evaluate": {"finetune", "head"}, "report": {"evaluate"}, "other": {"prepare"}}
    gpu = {"features", "finetune"}
    plan = rounds(list(upstream), upstream, lambda s: "gpu" if s in gpu else "cpu")
    assert plan == [{"cpu": ["prepare", "other"]}, {"gpu": ["features"]}, {"cpu": ["head"]},
                    {"gpu": ["finetune"]}, {"cpu": ["evaluate", "report"]}]


def test_gpu_stages_are_those_that_run_the_backbone():
    def gpu(params: dict) -> list[str]:
        stages = ["prepare@digits", "backbone@random", *(f"{kind}@{fs}" for fs in params["features"]
                                                         for kind in ("features", "tasks")), "report"]
        return [s for s in stages if pool_of(s, P.parse(params)) == "gpu"]

    # fewshot fine-tunes: its feature set's tasks stage runs the backbone
    assert gpu(PARAMS) == ["features@digits-random", "tasks@digits-random"]
    heads_only = copy.deepcopy(PARAMS)
    heads_only["tasks"]["fewshot"]["finetune"] = "none"  # every task a head on the cached features
    assert gpu(heads_only) == ["features@digits-random"]
    with_scratch = copy.deepcopy(heads_only)
    with_scratch["tasks"]["fewshot"]["scratch"] = True  # scratch trains a whole network on the images
    assert gpu(with_scratch) == ["features@digits-random", "tasks@digits-random"]
    # per feature set: one whose tasks fine-tune nothing stays on cpu beside one whose task fine-tunes
    two_sets = copy.deepcopy(PARAMS)
    two_sets["features"]["digits-random-2"] = {"dataset": "digits", "backbone": "random"}
    two_sets["tasks"]["parity"]["features"] = "digits-random-2"
    assert gpu(two_sets) == ["features@digits-random", "tasks@digits-random", "features@digits-random-2"]


@dataclass(frozen=True)
class Pooled:
    """One run of `python -m flows.pipeline --pools --sync` on two 'machines'."""

    tmp: Path
    cpu_repo: Path
    sent: dict[str, list[str]]  # pool -> the stages the driver sent to it, in order
    ran: dict[str, set[str]]  # pool -> the stages its worker's checkout ran (not found up to date or cached)
    logs: str


@pytest.fixture(scope="module")
def pooled(server, tmp_path_factory) -> Pooled:  # noqa: F811
    tmp_path = tmp_path_factory.mktemp("pools")
    prefect("work-pool", "create", "gpu", "--type", "process", env=server)
    prefect("work-pool", "set-concurrency-limit", "gpu", "1", env=server)
    prefect("work-pool", "create", "cpu", "--type", "process", env=server)
    prefect("deploy", "--name", "gpu", "--name", "cpu", env=server)  # both in one call
    with SyncPrefectClient(server["PREFECT_API_URL"]) as client:
        gpu, cpu = (client.read_deployment_by_name(f"transferlab-stages/{p}") for p in ("gpu", "cpu"))
        assert client.read_work_pool("gpu").concurrency_limit == 1
    assert (gpu.work_pool_name, cpu.work_pool_name) == ("gpu", "cpu")
    assert gpu.entrypoint == cpu.entrypoint == "flows/pools.py:run_stages"

    # Two 'machines': a checkout each, a feature store each, one DVC remote between them.
    gpu_repo = make_project(tmp_path / "gpu-machine", PARAMS)
    sh("dvc", "remote", "add", "-d", "shared", str(tmp_path / "remote"), cwd=gpu_repo)
    sh("git", "commit", "-qam", "a DVC remote", cwd=gpu_repo)
    cpu_repo = tmp_path / "cpu-machine"
    sh("git", "clone", "-q", str(gpu_repo), str(cpu_repo), cwd=tmp_path)
    machine = {pool: {**server, "TRANSFERLAB_REPO": str(repo), "TRANSFERLAB_FEATURE_STORE": str(tmp_path / pool)}
               for pool, repo in (("gpu", gpu_repo), ("cpu", cpu_repo))}
    workers = {pool: start([str(BIN / "prefect"), "worker", "start", "--pool", pool], env,
                           tmp_path / f"worker-{pool}.log") for pool, env in machine.items()}
    try:
        cmd = [sys.executable, "-m", "flows.pipeline", "--pools", "--sync", "--repo", str(cpu_repo)]
        driver = subprocess.run(cmd, cwd=REPO, env=server, capture_output=True, text=True, timeout=1200)
    finally:
        for proc in workers.values():
            stop(proc)
    logs = "\n".join((tmp_path / f"worker-{p}.log").read_text()[-4000:] for p in workers)
    assert driver.returncode == 0, driver.stdout[-4000:] + driver.stderr[-4000:] + logs

    sent = {"gpu": [], "cpu": []}
    for run in sorted(flow_runs(server["PREFECT_API_URL"]), key=lambda run: run.created):
        if run.deployment_id in (gpu.id, cpu.id):
            assert run.state.is_completed(), run.state
            sent["gpu" if run.deployment_id == gpu.id else "cpu"] += run.parameters["stages"]
    ran = {pool: set() for pool in workers}  # each run_stages flow logs "ran in <checkout>: <stages>"
    for pool in workers:
        for line in (tmp_path / f"worker-{pool}.log").read_text().splitlines():
            if " - ran in " in line:
                ran[pool] |= set(line.rpartition(": ")[2].split(", "))
    return Pooled(tmp_path, cpu_repo, sent, ran, logs)


def test_stages_run_on_gpu_and_cpu_pools_through_a_dvc_remote(pooled):
    tmp_path, cpu_repo, sent, ran, logs = (pooled.tmp, pooled.cpu_repo, pooled.sent, pooled.ran, pooled.logs)
    # the one tasks stage fine-tunes fewshot, so it is sent to gpu with every other task of its feature set
    assert sent["gpu"] == ["features@digits-random", "tasks@digits-random"]
    assert {"validate", "prepare@digits", "backbone@random", "report"} <= set(sent["cpu"])
    assert not {s for s in sent["cpu"] if s.startswith(("features@", "tasks@"))}, sent

    # validate's output is not cached (no run-cache entry): it runs wherever a stage below it is reproduced.
    assert ran["gpu"] == {"validate", "features@digits-random", "tasks@digits-random"}, logs
    assert "features@digits-random" not in ran["cpu"]
    assert {"prepare@digits", "report"} <= ran["cpu"], logs

    # The backbone ran on the gpu machine only; the cpu machine got the feature set from the remote's run-cache.
    assert list((tmp_path / "gpu").glob("*/chunk-*.bin")) and not list((tmp_path / "cpu").glob("*/chunk-*.bin"))
    run = json.loads((cpu_repo / "data" / "features" / "digits-random.run.json").read_text())
    assert run["extracted"] == 1797 and str(tmp_path / "gpu") in run["store"]
    for task in ("fewshot", "parity"):
        metrics = json.loads(Layout(cpu_repo).metrics(task).read_text())
        assert 0 <= metrics["head"]["test_accuracy"] <= 1
    assert "finetune" in json.loads(Layout(cpu_repo).metrics("fewshot").read_text())
    assert (cpu_repo / "reports" / "summary.csv").is_file()


def test_the_cpu_machine_gets_the_tasks_stage_from_the_remote_run_cache(pooled):
    """The fine-tune ran on the gpu machine only: the cpu machine checks out the tasks stage's outputs."""
    assert "tasks@digits-random" not in pooled.ran["cpu"], pooled.logs
    assert not (pooled.cpu_repo / ".cache" / "tasks").exists()  # no task computed on the cpu machine
