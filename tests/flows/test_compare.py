"""The compare flow: `dvc params diff` and `dvc metrics diff` between two commits, as table artifacts."""
from __future__ import annotations

import shutil

import yaml

from flows.compare import compare
from tests.conftest import sh
from tests.flows.conftest import artifacts
from transferlab.config.paths import Layout

FEWSHOT_METRICS = Layout().metrics("fewshot").as_posix()


def test_compare_publishes_the_changed_param_and_metrics(reproduced, prefect_api, tmp_path):
    repo = shutil.copytree(reproduced[0], tmp_path / "repo", symlinks=True)
    init = sh("git", "rev-parse", "HEAD", cwd=repo).stdout.strip()  # make_project's commit: params, no metrics
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "reproduced", cwd=repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["head"]["epochs"] = 5
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "commit", "-qam", "fewer head epochs", cwd=repo)

    state = compare(init, "HEAD", repo=str(repo), return_state=True)
    assert state.is_completed(), state.message
    published = artifacts(prefect_api, state.state_details.flow_run_id)

    assert published["transferlab-params-diff"] == [
        {"file": "params.yaml", "key": "head.epochs", "old": 20, "new": 5, "diff": -15}]
    metrics = {(row["file"], row["key"]): row for row in published["transferlab-metrics-diff"]}
    accuracy = metrics[FEWSHOT_METRICS, "head.test_accuracy"]
    assert accuracy["old"] is None and 0 < accuracy["new"] <= 1  # the first commit had no metrics yet
    assert state.result() == {"params": published["transferlab-params-diff"],
                              "metrics": published["transferlab-metrics-diff"]}


def test_compare_prints_its_tables_and_says_where_the_artifacts_went(reproduced, prefect_api, tmp_path, capsys):
    import pytest

    from flows.compare import main

    repo = shutil.copytree(reproduced[0], tmp_path / "repo", symlinks=True)
    init = sh("git", "rev-parse", "HEAD", cwd=repo).stdout.strip()
    with pytest.raises(SystemExit) as done:
        main([init, "--repo", str(repo)])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert f"## dvc metrics diff {init} (workspace)" in out and f"| {FEWSHOT_METRICS}" in out, out
    assert out.rstrip().splitlines()[-1] == f"artifacts: on the Prefect server at {prefect_api} " \
                                            f"(UI: {prefect_api.removesuffix('/api')}/artifacts)"


def test_without_a_server_the_flows_say_their_artifacts_are_temporary():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.artifacts import where

    with temporary_settings(updates={PREFECT_API_URL: None}):
        line = where()
    assert line.startswith("artifacts: on a temporary Prefect server, gone when this command exits") and \
        "PREFECT_API_URL" in line
