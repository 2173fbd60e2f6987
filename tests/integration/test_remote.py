"""Feature sets shared through a DVC remote (a local directory here; any DVC storage in use), run-cache included.

Machine A extracts and pushes; machine B (a git clone with its own, empty feature store; A's store is gone)
pulls and reproduces new tasks without running the backbone; machine C (a clone without dvc.lock) gets every
stage back from DVC's shared run-cache. This is the README's "Scale out" recipe, run on loopback.
"""
from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import ENV, SMALL_PARAMS, make_project
from transferlab.config.paths import Layout
from transferlab.features import sets
from transferlab.features.store import STORE_ENV

RUNNING = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)
TASKS_LINE = re.compile(r"^tasks@(\S+): (\d+) computed \([\d.]+s\), (\d+) reused from the task cache$",
                        re.MULTILINE)
# A random-init backbone (no pretraining) keeps the graph short: export, prepare, backbone, features, one task.
PARAMS = {**copy.deepcopy(SMALL_PARAMS), "pretrain": {},
          "features": {"digits-random": {"dataset": "digits", "backbone": "random"}},
          "tasks": {"fewshot": {"features": "digits-random", "classes": [5, 6, 7, 8, 9], "shots": 5}}}


def run(*cmd: str, cwd: Path, store: Path) -> str:
    """A command on one 'machine': its checkout and its own feature store."""
    proc = subprocess.run(cmd, cwd=cwd, env={**ENV, STORE_ENV: str(store)}, capture_output=True,
                          text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def chunks(store: Path) -> list[Path]:
    return sorted(store.glob("*/chunk-*.bin"))


def meta(repo: Path, name: str) -> dict:
    """The set's meta.json and its last run's record (<set>.run.json)."""
    set_dir = repo / "data" / "features" / name
    return {**sets.read_meta(set_dir), **sets.read_run(set_dir)}


@pytest.fixture(scope="module")
def pushed(tmp_path_factory) -> tuple[Path, Path]:
    """Machine A: `dvc remote add -d`, `dvc repro`, commit, `dvc push --run-cache`; then A's store is deleted
    (B and C are other machines: they cannot reach it). -> (A's repository, the remote)."""
    base = tmp_path_factory.mktemp("remote")
    a, remote, store_a = make_project(base / "a", PARAMS), base / "remote", base / "store-a"
    run("dvc", "remote", "add", "-d", "shared", str(remote), cwd=a, store=store_a)
    (a / ".gitignore").write_text("/.cache/\n")  # as the project's own: the task cache stays on its machine
    run("git", "add", ".gitignore", cwd=a, store=store_a)
    run("git", "commit", "-qam", "a DVC remote", cwd=a, store=store_a)
    out = run("dvc", "repro", cwd=a, store=store_a)
    assert "features@digits-random" in RUNNING.findall(out)
    assert meta(a, "digits-random")["extracted"] == 1797 and chunks(store_a)
    run("git", "add", "-A", cwd=a, store=store_a)
    run("git", "commit", "-qm", "reproduced", cwd=a, store=store_a)
    run("dvc", "push", "--run-cache", cwd=a, store=store_a)
    shutil.rmtree(store_a)
    return a, remote


def test_pull_then_repro_of_new_tasks_extracts_nothing(pushed, tmp_path):
    a, _ = pushed
    b, store_b = tmp_path / "b", tmp_path / "store-b"
    run("git", "clone", "-q", str(a), str(b), cwd=tmp_path, store=store_b)
    run("dvc", "pull", "--run-cache", cwd=b, store=store_b)
    params = yaml.safe_load((b / "params.yaml").read_text())
    # A new task on the pulled set, and a new set with the same dataset and backbone (another team's name,
    # say) that may take its rows from the pulled set: B's store is empty.
    params["features"]["digits-random-b"] = {"dataset": "digits", "backbone": "random",
                                             "import_from": ["digits-random"]}
    params["tasks"]["parity"] = {"features": "digits-random",
                                 "label_map": {5: "odd", 6: "even", 7: "odd", 8: "even", 9: "odd"}}
    params["tasks"]["fewshot-b"] = {"features": "digits-random-b", "classes": [5, 6, 7, 8, 9], "shots": 5}
    (b / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    out = run("dvc", "repro", cwd=b, store=store_b)
    ran = set(RUNNING.findall(out))

    assert {"tasks@digits-random", "features@digits-random-b", "tasks@digits-random-b"} <= ran
    assert not ran & {"export_digits", "prepare@digits", "backbone@random", "features@digits-random"}
    # tasks@digits-random re-runs for its new task; B's task cache is its own (empty: it is not in git nor in
    # the DVC remote), so fewshot is computed again there too, from the pulled features, to A's numbers
    counts = {fs: (int(c), int(r)) for fs, c, r in TASKS_LINE.findall(out)}
    assert counts == {"digits-random": (2, 0), "digits-random-b": (1, 0)}, out
    fewshot_a, fewshot_b = (json.loads(Layout(x).metrics("fewshot").read_text()) for x in (a, b))
    assert fewshot_b == fewshot_a
    assert meta(b, "digits-random") == meta(a, "digits-random")  # pulled, not re-made
    new = meta(b, "digits-random-b")
    assert (new["extracted"], new["reused"], new["imported"]) == (0, 1797, {"digits-random": 1797})
    assert new["key_hash"] == meta(a, "digits-random")["key_hash"]
    feats_a, _ = sets.read(a / "data" / "features" / "digits-random", verify=True)
    feats_b, _ = sets.read(b / "data" / "features" / "digits-random-b", verify=True)
    assert np.asarray(feats_b).tobytes() == np.asarray(feats_a).tobytes()
    assert Layout(b).metrics("parity").is_file()
    assert Layout(b).metrics("fewshot-b").is_file()


@pytest.fixture(scope="module")
def restored(pushed, tmp_path_factory) -> tuple[Path, Path, str]:
    """Machine C: a clone of the commit before dvc.lock (an uncommitted run elsewhere), `dvc repro --pull`.
    -> (C's repository, C's feature store, the output)."""
    a, _ = pushed
    tmp_path = tmp_path_factory.mktemp("machine-c")
    c, store_c = tmp_path / "c", tmp_path / "store-c"
    run("git", "clone", "-q", str(a), str(c), cwd=tmp_path, store=store_c)
    run("git", "checkout", "-q", "HEAD~1", cwd=c, store=store_c)
    assert not (c / "dvc.lock").exists()

    # --pull: the run-cache, and the outputs of each stage found in it (`dvc pull` alone knows no outputs here)
    return c, store_c, run("dvc", "repro", "--pull", cwd=c, store=store_c)


def test_the_shared_run_cache_restores_stages_without_dvc_lock(pushed, restored):
    """The run-cache alone suffices."""
    a, _ = pushed
    c, store_c, out = restored
    assert "features@digits-random" not in RUNNING.findall(out)
    assert "Stage 'features@digits-random' is cached - skipping run, checking out outputs" in out
    assert not chunks(store_c)  # the backbone never ran here
    assert meta(c, "digits-random") == meta(a, "digits-random")


def test_the_shared_run_cache_restores_the_tasks_stage(pushed, restored):
    """The tasks stage too: its models, metrics, plots and figures, without computing a task."""
    a, _ = pushed
    c, _, out = restored
    assert "Stage 'tasks@digits-random' is cached - skipping run, checking out outputs" in out, out
    assert "tasks@digits-random" not in RUNNING.findall(out) and not (c / ".cache" / "tasks").exists()
    figure = Layout().figure("fewshot", "confusion")
    assert (c / figure).read_bytes() == (a / figure).read_bytes()
