"""transferlab.training.task_run: a task that asks for no fine-tuning (finetune: none) or no scratch baseline
gets a record of the skipped method, which evaluate reads as "head only". Over the raw-pixel digits project
(tests.projects): nothing here trains a network. That a skipped stage loads no torch, and the records' exact
bytes, are checked in tests/stages/test_imports.py."""
from __future__ import annotations

import json

import pytest
import torch

from tests.projects import out_dir, pixels_features
from transferlab.config import paths
from transferlab.config.params import Evaluate, Finetune, Task
from transferlab.evaluation import results
from transferlab.heads.task_heads import train_task_head
from transferlab.training.task_run import skip_record, train_on_images

CPU = torch.device("cpu")
FT = Finetune(epochs=1, batch_size=8, lr=1e-3)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Task `pixels` (no fine-tuning, no scratch baseline) through its task head."""
    root = tmp_path_factory.mktemp("pixels")
    layout, params = pixels_features(root)
    task = params.tasks["pixels"]
    assert task.finetune == "none" and not task.scratch
    train_task_head("pixels", task, params.head, params.seed, root, out_dir(layout, "pixels").head)
    return layout, task


def test_skip_record_only_for_a_method_the_task_does_not_ask_for():
    plain = Task(features="f")
    assert skip_record("finetune", "t", plain) == {"task": "t", "mode": "none"}
    assert skip_record("scratch", "t", plain) == {"task": "t", "method": "scratch", "ran": False}
    for mode in ("full", "lpft"):
        assert skip_record("finetune", "t", plain.model_copy(update={"finetune": mode})) is None
    assert skip_record("scratch", "t", plain.model_copy(update={"scratch": True})) is None


def test_finetune_none_is_recorded_and_evaluated_as_head_only(project):
    layout, task = project
    info = train_on_images("finetune", "pixels", task, FT, 0, layout, out_dir(layout, "pixels"), CPU)
    assert info == {"task": "pixels", "mode": "none"}
    out = out_dir(layout, "pixels").finetune
    assert json.loads((out / paths.FINETUNE_INFO_FILE).read_text()) == info
    assert not (out / paths.FINETUNE_WEIGHTS_FILE).exists()
    metrics = results.evaluate("pixels", task, Evaluate(normalize_confusion=True), 0, layout,
                               out_dir(layout, "pixels"))
    assert set(metrics) == {"head", "reference", "prototype"}


def test_scratch_skipped_is_recorded_and_left_out_of_evaluate(project):
    layout, task = project
    # evaluate reads the finetune record
    train_on_images("finetune", "pixels", task, FT, 0, layout, out_dir(layout, "pixels"), CPU)
    # device: a spec resolved only when there is something to train (a skip runs without the GPU it names)
    skipped = train_on_images("scratch", "pixels", task, FT, 0, layout, out_dir(layout, "pixels"), "cuda")
    assert skipped == {"task": "pixels", "method": "scratch", "ran": False}
    out = out_dir(layout, "pixels").scratch
    assert json.loads((out / paths.SCRATCH_INFO_FILE).read_text()) == skipped
    assert not (out / paths.SCRATCH_WEIGHTS_FILE).exists()
    assert "scratch" not in results.evaluate("pixels", task, Evaluate(), 0, layout, out_dir(layout, "pixels"))
