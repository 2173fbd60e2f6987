"""transferlab.training.checkpoints on disk: a fine-tune killed (SIGKILL) mid-epoch and re-run ends exactly
where an uninterrupted run ends, and its checkpoint is gone once it finished.

A real subprocess (`python -m stages.tasks <feature set>`, killed at the task's first finetune checkpoint) in a
tiny project: 30 real digit images, a resnet18 at 32 px, 3 epochs with every resumable part switched on
(freeze-then-unfreeze, augmentation, early-stopping state, class weights). The uninterrupted run is the same
task computed in this process (transferlab.tasks.run.run_task) into a folder of its own."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.projects import run_stage_until_first_checkpoint, start_stage, subset_imagefolder, tiny_layout
from transferlab.config import paths
from transferlab.config.params import FeatureSet, parse
from transferlab.features.build import build
from transferlab.tasks.run import run_task

TASK, FEATURES = "t", "f"
FT = {"epochs": 3, "batch_size": 8, "lr": 0.001, "backbone_lr_mult": 0.1, "weight_decay": 0.0001,
      "label_smoothing": 0.1, "freeze_norm": True, "freeze_epochs": 1, "augment": "light", "patience": 2,
      "class_weight": "balanced"}


@pytest.fixture(scope="module")
def project(tmp_path_factory, digits_root, private_store):
    tmp = tmp_path_factory.mktemp("resume")
    images = subset_imagefolder(digits_root, tmp / "raw", [0, 1, 2], 10)
    layout = tiny_layout(tmp / "proj", images)
    params = {"seed": 0, "device": "cpu",
              "datasets": {"tiny": {"source": "imagefolder", "root": str(images)}},
              "backbones": {"bb32": {"arch": "resnet18", "weights": "none", "image_size": 32}},
              "features": {FEATURES: {"dataset": "tiny", "backbone": "bb32"}},
              "tasks": {TASK: {"features": FEATURES, "finetune": "lpft"}}, "finetune": FT,
              "head": {"optimizer": "adamw", "epochs": 20, "batch_size": 8, "reference": "never"}}
    (layout.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    p = parse(params)
    assert p.finetune.model_dump() == FT
    build(FEATURES, FeatureSet(dataset="tiny", backbone="bb32"), pd.read_parquet(layout.manifest("tiny")),
          layout.backbone("bb32"), layout.features(FEATURES), torch.device("cpu"))
    return layout, p


def _outputs(out_dir: Path, stdout: str = "") -> dict:
    return {"stdout": stdout, "info": json.loads((out_dir / paths.FINETUNE_INFO_FILE).read_text()),
            "preds": pd.read_parquet(out_dir / paths.PREDICTIONS_FILE),
            "weights": load_file(out_dir / paths.FINETUNE_WEIGHTS_FILE)}


def _run(task_dir: paths.TaskDir) -> dict:
    """The fine-tune's run record (seconds, resumed_from_epoch), beside its folder."""
    return json.loads(task_dir.run_record("finetune").read_text())


def _accuracy(preds: pd.DataFrame, split: str) -> float:
    part = preds[preds["split"] == split]
    return float((part["pred"] == part["y"]).mean())


def test_killed_finetune_resumes_to_the_same_result(project, tmp_path):
    project, params = project
    root = project.root
    ckpt_root = project.checkpoints(TASK, "finetune")
    uninterrupted = paths.TaskDir(tmp_path / "uninterrupted")
    run_task(TASK, params.tasks[TASK], params, project, uninterrupted)
    whole = _outputs(uninterrupted.finetune)
    assert _run(uninterrupted)["resumed_from_epoch"] is None and whole["info"]["epochs_run"] == FT["epochs"]
    assert not ckpt_root.exists()  # removed after a successful finish
    published = project.task(FEATURES, TASK)

    killed_at = run_stage_until_first_checkpoint(root, "tasks", FEATURES, ckpt_root)
    assert not (published.finetune / paths.PREDICTIONS_FILE).exists()
    entries = [p.name for p in project.task_cache().iterdir() if not p.name.endswith(".partial")]
    assert entries == []  # a killed task leaves no cache entry, only its staging folder
    assert 1 <= killed_at < FT["epochs"]

    proc = start_stage(root, "tasks", FEATURES)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    resumed = _outputs(published.finetune, out)
    info = resumed["info"]
    assert _run(published)["resumed_from_epoch"] == killed_at, resumed["stdout"]
    assert f"resumed after epoch {killed_at}" in resumed["stdout"]
    assert f"tasks@{FEATURES}: 1 computed" in resumed["stdout"], resumed["stdout"]
    assert json.loads(project.tasks_run(FEATURES).read_text())["tasks"][TASK]["computed"] is True
    assert info["epochs_run"] == whole["info"]["epochs_run"] and info["best_epoch"] == whole["info"]["best_epoch"]
    assert info["train_loss"] == whole["info"]["train_loss"]  # the epochs before the kill came from the checkpoint
    for split in ("val", "test"):  # the bar: the same metrics within 0.2 points...
        assert abs(_accuracy(resumed["preds"], split) - _accuracy(whole["preds"], split)) <= 0.002
    pd.testing.assert_frame_equal(resumed["preds"], whole["preds"])
    for name, tensor in whole["weights"].items():  # ...and here, on CPU, bit-identical weights
        assert torch.equal(resumed["weights"][name], tensor), name
    assert not ckpt_root.exists()


def test_an_unloadable_checkpoint_is_named_on_one_line_then_discarded(tmp_path, capsys):
    from transferlab.training.checkpoints import Checkpoint

    ckpt = Checkpoint(tmp_path / "ck", "run1")
    ckpt.path.parent.mkdir(parents=True)
    ckpt.path.write_bytes(b"not a torch file")
    assert ckpt.load() is None
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: checkpoint {ckpt.path} cannot be loaded ("), err
    assert err[0].endswith("deleted, training starts afresh")
    assert not ckpt.path.exists()
