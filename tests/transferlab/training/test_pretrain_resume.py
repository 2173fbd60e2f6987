"""pretrain@<name> killed (SIGKILL) after an epoch's checkpoint and re-run ends with the weights of an
uninterrupted run, bit for bit on CPU, with every resumable part of its recipe on (random resized crops,
label smoothing, early stopping's best epoch); its checkpoint is gone once the backbone is saved.

A real subprocess (`python -m stages.pretrain src`) in a tiny project of 40 real digit images; the
uninterrupted run is transferlab.training.pretrain.pretrain called in this process."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.projects import run_stage_until_first_checkpoint, start_stage, subset_imagefolder, tiny_layout
from transferlab.config.params import parse
from transferlab.models.backbones import INFO_FILE, WEIGHTS_FILE
from transferlab.training.pretrain import pretrain

PRETRAIN = {"arch": "resnet18", "dataset": "tiny", "classes": [0, 1, 2, 3], "image_size": 32, "epochs": 4,
            "batch_size": 8, "augment": "crop", "label_smoothing": 0.1, "patience": 3, "seed": 7}


@pytest.fixture(scope="module")
def project(tmp_path_factory, digits_root):
    tmp = tmp_path_factory.mktemp("pretrain-resume")
    images = subset_imagefolder(digits_root, tmp / "raw", [0, 1, 2, 3], 10)
    layout = tiny_layout(tmp / "proj", images)
    params = {"seed": 0, "device": "cpu", "datasets": {"tiny": {"source": "imagefolder", "root": str(images)}},
              "pretrain": {"src": PRETRAIN}, "features": {"f": {"dataset": "tiny", "backbone": "src"}},
              "tasks": {"t": {"features": "f"}}}
    (layout.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return layout, parse(params)


def test_killed_pretraining_resumes_to_the_same_weights(project):
    layout, params = project
    entry, ckpt_root, out = params.pretrain["src"], layout.checkpoints("src", "pretrain"), layout.backbone("src")
    manifest = pd.read_parquet(layout.manifest("tiny"))
    whole = pretrain("src", entry, manifest, out, entry.seed, torch.device("cpu"),
                     layout.curves("pretrain", "src"), ckpt_root)
    assert whole.source["resumed_from_epoch"] is None and not ckpt_root.exists()
    weights = load_file(out / WEIGHTS_FILE)
    shutil.rmtree(out)  # as DVC does before it re-runs a stage

    killed_at = run_stage_until_first_checkpoint(layout.root, "pretrain", "src", ckpt_root)
    assert not (out / WEIGHTS_FILE).exists()
    assert 1 <= killed_at < PRETRAIN["epochs"]

    proc = start_stage(layout.root, "pretrain", "src")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert f"(resumed after epoch {killed_at})" in stdout
    source = json.loads((out / INFO_FILE).read_text())["source"]
    assert source["resumed_from_epoch"] == killed_at
    assert (source["epochs_run"], source["best_epoch"]) == (whole.source["epochs_run"], whole.source["best_epoch"])
    resumed = load_file(out / WEIGHTS_FILE)
    assert resumed.keys() == weights.keys()
    for name, tensor in weights.items():
        assert torch.equal(resumed[name], tensor), name
    assert not ckpt_root.exists()


def test_an_entry_with_its_own_seed_trains_other_weights(project, tmp_path):
    """pretrain.<n>.seed: entries that differ only in seed are separate runs (the spread the report measures)."""
    layout, params = project
    manifest = pd.read_parquet(layout.manifest("tiny"))
    entry = params.pretrain["src"].model_copy(update={"epochs": 1, "patience": None})
    runs = []
    for seed in (1, 2):
        pretrain("s", entry, manifest, tmp_path / str(seed), seed, torch.device("cpu"), tmp_path / f"c{seed}",
                 tmp_path / f"ckpt{seed}")
        runs.append(load_file(tmp_path / str(seed) / WEIGHTS_FILE))
    assert not torch.equal(runs[0]["conv1.weight"], runs[1]["conv1.weight"])
