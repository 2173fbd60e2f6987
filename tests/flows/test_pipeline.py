"""The pipeline flow on a real git + DVC repository: a task per stage, DVC's verdict kept, results published."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import yaml

from flows import dvc_cli
from flows.pipeline import pipeline
from tests.conftest import ENV, REPO, SMALL_PARAMS, sh
from tests.flows.conftest import artifacts, flow_runs, task_runs
from transferlab.config.paths import Layout


def summary(repo) -> list[dict]:
    with (repo / "reports" / "summary.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def stages_run(api: str, flow_run_id) -> set[str]:
    """The stages whose command one flow run ran (not those DVC found up to date: state "Up to date")."""
    return {name for name, state in task_runs(api, flow_run_id).items()
            if state == "Completed" and not name.startswith("publish")}


def test_flow_reproduces_every_stage_and_publishes_the_metrics(reproduced, prefect_api):
    repo, state = reproduced
    assert state.is_completed(), state.message
    assert json.loads(sh("dvc", "status", "--json", cwd=repo).stdout) == {}
    rows = summary(repo)
    assert {row["task"] for row in rows} == set(SMALL_PARAMS["tasks"])
    assert state.result() == rows

    flow_run_id = state.state_details.flow_run_id
    assert stages_run(prefect_api, flow_run_id) == set(dvc_cli.graph(repo))  # a fresh repo: every stage ran
    published = artifacts(prefect_api, flow_run_id)
    assert published["transferlab-metrics"] == rows
    assert published["transferlab-report"] == (repo / "reports" / "report.md").read_text()


def models(repo) -> dict[str, dict[str, bytes]]:
    """The weights of every trained head, reference and fine-tuned model (models/tasks/*/<task>/*/*.safetensors),
    tensor by tensor (not the files' bytes: their metadata, and the .json beside them, hold seconds)."""
    from safetensors.numpy import load_file

    return {p.relative_to(repo).as_posix(): {k: v.tobytes() for k, v in load_file(p).items()}
            for p in sorted((repo / "models" / "tasks").glob("*/*/*/*.safetensors"))}


def test_two_runs_at_once_on_one_workspace(reproduced, prefect_api, tmp_path):
    repo = shutil.copytree(reproduced[0], tmp_path / "repo", symlinks=True)
    before = models(repo)
    confusion = {t: Layout(repo).figure(t, "confusion").read_bytes() for t in SMALL_PARAMS["tasks"]}
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["evaluate"] = {"normalize_confusion": True}  # tasks@* and report must run again, nothing upstream
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    env = {**ENV, "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    cmd = [sys.executable, "-m", "flows.pipeline", "--repo", str(repo)]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output

    assert json.loads(sh("dvc", "status", "--json", cwd=repo).stdout) == {}
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert all(lock[f"tasks@{fs}"]["params"]["params.yaml"]["evaluate"] == {"normalize_confusion": True}
               for fs in SMALL_PARAMS["features"])
    assert {row["task"] for row in summary(repo)} == set(SMALL_PARAMS["tasks"])

    runs = [run for run in flow_runs(prefect_api) if run.parameters.get("repo") == str(repo)]
    assert len(runs) == 2 and all(run.state.is_completed() for run in runs)
    first, second = (stages_run(prefect_api, run.id) for run in runs)
    assert not first & second  # a stage one run reproduced, the other found up to date
    ran = first | second
    assert {f"tasks@{fs}" for fs in SMALL_PARAMS["features"]} | {"report"} <= ran
    upstream = {"export_digits", "prepare@digits", "backbone@random", "pretrain@src", "features@digits-src",
                "features@digits-random"}
    assert not ran & upstream  # the features are reused, not computed again
    # every task evaluated again (its confusion figure now normalised), its heads and fine-tuned models the same
    for t in SMALL_PARAMS["tasks"]:
        assert Layout(repo).figure(t, "confusion").read_bytes() != confusion[t], t
    assert models(repo) == before
    assert {"head.safetensors", "finetuned.safetensors"} <= {k.rpartition("/")[2] for k in before}


FAILING_STAGES = """
stages:
  flaky:  # fails on its first attempt only
    cmd: test -e tried || { touch tried; exit 1; }; echo ok > flaky.txt
    outs: [flaky.txt]
  broken:
    cmd: echo attempt >> attempts; exit 3
    outs: [broken.txt]
  after_broken:
    cmd: cp broken.txt after.txt
    deps: [broken.txt]
    outs: [after.txt]
"""


def test_a_failing_stage_is_retried_then_fails_the_flow(prefect_api, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "dvc.yaml").write_text(FAILING_STAGES)
    for cmd in (("git", "init", "-q"), ("dvc", "init", "-q"), ("git", "add", "-A"),
                ("git", "commit", "-qm", "init")):
        sh(*cmd, cwd=repo)

    state = pipeline(repo=str(repo), return_state=True)

    assert state.is_failed() and "broken" in state.message
    assert (repo / "flaky.txt").read_text() == "ok\n"  # its retry succeeded
    assert (repo / "attempts").read_text().count("attempt") == 3  # the first attempt and two retries
    states = task_runs(prefect_api, state.state_details.flow_run_id)
    assert (states["flaky"], states["broken"], states["after_broken"]) == ("Completed", "Failed", "NotReady")
    assert not (repo / "after.txt").exists()
