"""Evaluating a task (transferlab.evaluation.results.evaluate) on real features: a task without test images, and
inputs not yet built, are named with what to do, and nothing is written."""
from __future__ import annotations

import shutil

import pytest

from tests.projects import out_dir, pixels_project
from transferlab.config import params as P
from transferlab.config.errors import PipelineError
from transferlab.evaluation.results import evaluate


def test_a_task_without_test_images_is_named(tmp_path):
    """scikit-learn's metrics raised on an empty test split; numpy's would give NaN: evaluate says what to do."""
    layout, params = pixels_project(tmp_path, split_p=(0.7, 0.3, 0.0))  # real features, no test split
    with pytest.raises(PipelineError, match=r"tasks\.pixels: no test images .* test_fraction .*'pixels'"):
        evaluate("pixels", params.tasks["pixels"], P.Evaluate(), 0, layout, out_dir(layout, "pixels"))


@pytest.mark.parametrize("missing", ["head", "finetune"])
def test_evaluate_before_its_inputs_says_what_to_train_first(tmp_path, missing):
    layout, params = pixels_project(tmp_path)
    shutil.rmtree(getattr(out_dir(layout, "pixels"), missing))
    with pytest.raises(PipelineError, match=rf"{missing}/\S+ not found; train the task's head and its finetune "
                                            "method first"):
        evaluate("pixels", params.tasks["pixels"], P.Evaluate(), 0, layout, out_dir(layout, "pixels"))
    assert not out_dir(layout, "pixels").results.exists()  # nothing written
