"""A Hugging Face dataset (save_to_disk, one broken image among its rows) through `dvc repro` to the report,
under real DVC in a temporary git repository: a random-init resnet18 at 32 px, one task."""
from __future__ import annotations

import copy
import json

import pandas as pd
import pytest

from tests.conftest import SMALL_PARAMS, make_project, sh
from tests.transferlab.data.hf_digits import NAMES, digits_dict
from transferlab.config.paths import Layout

BROKEN_ROW = 13


@pytest.fixture(scope="module")
def built(tmp_path_factory, digits_root):
    data, files = digits_dict(digits_root, train=6, test=2, broken_at=(BROKEN_ROW,))  # 80 rows
    saved = tmp_path_factory.mktemp("outside") / "hf-digits"
    data.save_to_disk(str(saved))
    params = copy.deepcopy(SMALL_PARAMS)
    params["datasets"] = {"hf": {"source": "huggingface", "root": str(saved)}}
    params["pretrain"] = {}
    params["features"] = {"hf-random": {"dataset": "hf", "backbone": "random"}}
    params["tasks"] = {"hf-all": {"features": "hf-random"}}
    repo = make_project(tmp_path_factory.mktemp("repo") / "repo", params)
    proc = sh("dvc", "repro", cwd=repo)
    return repo, files, proc.stdout + proc.stderr


def test_huggingface_dataset_runs_to_the_report_and_names_its_broken_row(built):
    repo, files, output = built
    assert "Running stage 'prepare@hf'" in output and "Running stage 'report'" in output
    layout = Layout(repo)
    rejected = pd.read_csv(layout.prepared("hf") / "rejected.csv", dtype=str)
    assert len(rejected) == 1
    assert rejected["path"].iloc[0].endswith(f"images/train/{BROKEN_ROW:06d}.png")  # split and row index
    assert rejected["label"].iloc[0] == NAMES[files["train"][BROKEN_ROW][1]]
    assert rejected["reason"].iloc[0].startswith("undecodable")
    manifest = pd.read_parquet(layout.manifest("hf"))
    assert len(manifest) == 79 and set(manifest["label"]) == set(NAMES)  # nothing else lost
    assert (manifest.loc[manifest["image_id"].str.startswith("test/"), "split"] == "test").all()
    m = json.loads(layout.metrics("hf-all").read_text())["head"]
    assert m["n_test"] == 20 and {"test_accuracy", "val_accuracy", "macro_f1"} <= set(m)
    assert "hf-all" in (repo / "reports" / "summary.csv").read_text()
    assert json.loads(sh("dvc", "status", "--json", cwd=repo).stdout) == {}  # reading left the dataset as it was
