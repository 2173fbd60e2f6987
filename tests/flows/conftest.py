"""Flow fixtures: one Prefect test server for the session, one SMALL_PARAMS repository reproduced by the flow."""
from __future__ import annotations

import json

import pytest

import flows  # noqa: F401  (sets DO_NOT_TRACK and the analytics switches before prefect is imported)

# isort: split
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort, TaskRunSort
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness

from tests.conftest import SMALL_PARAMS, make_project


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """A temporary Prefect server (SQLite) for every flow of the session; its API URL for subprocesses."""
    with prefect_test_harness(server_startup_timeout=180):  # 2 busy cores: the default 30 s is too short
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def reproduced(prefect_api, tmp_path_factory):
    """A SMALL_PARAMS repository after one run of the pipeline flow over every stage: (repo, final state)."""
    from flows.pipeline import pipeline

    repo = make_project(tmp_path_factory.mktemp("pipeline") / "repo", SMALL_PARAMS)
    return repo, pipeline(repo=str(repo), return_state=True)


def flow_runs(api: str) -> list[FlowRun]:
    """Every flow run on the server at api, newest first."""
    with SyncPrefectClient(api) as client:
        return client.read_flow_runs(sort=FlowRunSort.ID_DESC)


def task_runs(api: str, flow_run_id) -> dict[str, str]:
    """The task runs of one flow run: name -> the name of its final state."""
    with SyncPrefectClient(api) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                                     sort=TaskRunSort.ID_DESC)
    return {run.name: run.state.name for run in runs}


def artifacts(api: str, flow_run_id) -> dict[str, object]:
    """The artifacts a flow run published: key -> data (tables parsed)."""
    with SyncPrefectClient(api) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: json.loads(a.data) if a.type == "table" else a.data for a in found}
