"""Deployments on a real Prefect server (`prefect server start`): the schedule fires and the run completes."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.version import Version
from prefect.client.orchestration import SyncPrefectClient

from tests.conftest import ENV, REPO, SMALL_PARAMS, make_project
from tests.flows.conftest import flow_runs

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A subprocess in its own process group (its children end with it), output to log."""
    with log.open("w") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass


def wait_until(condition, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(2)
    pytest.fail(f"no {what} within {timeout:.0f} s; log:\n{log.read_text()[-5000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`prefect server start` on 127.0.0.1 with its own PREFECT_HOME (SQLite): the environment that reaches it."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**ENV, "PREFECT_HOME": str(home), "PREFECT_API_URL": api, "PREFECT_SERVER_UI_ENABLED": "false",
           "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    log = home / "server.log"
    proc = start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port),
                  "--analytics-off"], env, log)
    try:
        wait_until(lambda: proc.poll() is not None or healthy(api), 120, "healthy server", log)
        assert proc.poll() is None, log.read_text()
        yield env
    finally:
        stop(proc)


def healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def test_the_server_runs_the_stack_pip_resolves_for_prefect_3_9():
    """The 3.8-era pins (fastapi<0.155, sqlalchemy<2.1) are gone: the schedule below fires under SQLAlchemy 2.1."""
    assert Version(version("prefect")) >= Version("3.9")
    assert Version(version("sqlalchemy")) >= Version("2.1")


def test_served_interval_schedule_runs_the_flow(server, tmp_path):
    repo = make_project(tmp_path / "repo", SMALL_PARAMS)
    log = tmp_path / "deploy.log"
    proc = start([sys.executable, "-m", "flows.deploy", "--interval", "5", "--targets", "export_digits",
                  "--repo", str(repo), "--name", "every-5s"], server, log)

    def completed_scheduled_run():
        assert proc.poll() is None, log.read_text()
        runs = flow_runs(server["PREFECT_API_URL"])
        assert not [run for run in runs if run.state.is_failed()], log.read_text()
        return [run for run in runs if run.auto_scheduled and run.deployment_id and run.state.is_completed()]

    try:
        runs = wait_until(completed_scheduled_run, 240, "completed scheduled flow run", log)
    finally:
        stop(proc)
    assert runs[0].parameters == {"targets": ["export_digits"], "repo": str(repo)}
    assert (repo / "data" / "raw" / "digits").is_dir() and (repo / "dvc.lock").is_file()


def test_prefect_yaml_deploys_onto_a_process_pool(server):
    prefect = str(BIN / "prefect")
    for name in ("transferlab", "gpu", "cpu"):  # every pool prefect.yaml names: --all refuses a missing one
        pool = subprocess.run([prefect, "work-pool", "create", name, "--type", "process"], cwd=REPO,
                              env=server, capture_output=True, text=True, timeout=300)
        assert pool.returncode == 0, pool.stdout + pool.stderr
    deploy = subprocess.run([prefect, "--no-prompt", "deploy", "--all"], cwd=REPO, env=server,
                            capture_output=True, text=True, timeout=300)
    output = deploy.stdout + deploy.stderr
    assert deploy.returncode == 0, output  # --all: every deployment of prefect.yaml, exit 0
    assert "422" not in output and "Traceback" not in output, output

    with SyncPrefectClient(server["PREFECT_API_URL"]) as client:
        deployment = client.read_deployment_by_name("transferlab-pipeline/nightly")
        names = {d.name for d in client.read_deployments()}
    assert {"nightly", "gpu", "cpu"} <= names, names  # every deployment of prefect.yaml
    assert deployment.entrypoint == "flows/pipeline.py:pipeline"
    assert deployment.work_pool_name == "transferlab"
    assert [s.schedule.cron for s in deployment.schedules] == ["0 2 * * *"]
    assert deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO.resolve())}}]
