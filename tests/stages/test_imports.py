"""Stages that never run a network start without loading one.

Each DVC stage is a fresh process, and importing torch + torchvision costs seconds, scikit-learn more: report,
validate, the finetune / scratch stages of a task with nothing to train and the evaluate stage of a task
without shot seeds or an efficiency curve must not pay for them, and train_head, which reads cached features,
must not load torchvision (the backbones) to do so. Checked in a fresh interpreter on this checkout
(PYTHONPATH: the repo root for stages/, src/ for transferlab; the venv's editable install may point at another
checkout), since this test process has them all loaded already."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ENV, REPO, SMALL_PARAMS
from tests.projects import pixels_features, pixels_project
from transferlab.config import params as P
from transferlab.config.paths import Layout

HEAVY = ("torch", "torchvision", "sklearn")


def loaded_after(code: str, cwd=REPO, watch: tuple[str, ...] = HEAVY) -> tuple[list[str], str]:
    """Run `code` in a fresh interpreter -> (which of `watch` it left loaded, what it printed before that)."""
    probe = f"\nimport sys\nprint(sorted(m for m in {watch!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code + probe], cwd=cwd, capture_output=True, text=True,
                          env={**ENV, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}"})
    assert proc.returncode == 0, proc.stderr
    *printed, last = proc.stdout.splitlines()
    return ast.literal_eval(last), "\n".join(printed)


@pytest.mark.parametrize("module", ["report", "validate"])
def test_stage_without_a_network_imports_none(module):
    assert loaded_after(f"import stages.{module}")[0] == []


def test_validate_runs_without_pandas(tmp_path):
    """validate re-runs on every params.yaml edit: it needs pydantic and yaml, not pandas (0.4 s of import)."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(SMALL_PARAMS, sort_keys=False))
    loaded, printed = loaded_after("from stages import validate\nvalidate.main([])", cwd=tmp_path,
                                   watch=(*HEAVY, "pandas"))
    assert printed == "params.yaml is valid"
    assert (Layout(tmp_path).params_ok).is_file()
    assert loaded == []


def test_train_head_imports_neither_torch_nor_sklearn():
    assert loaded_after("import stages.train_head")[0] == []


def test_evaluate_imports_neither_torch_nor_sklearn():
    assert loaded_after("import stages.evaluate")[0] == []


def test_train_head_of_the_linear_probe_runs_without_torch(tmp_path):
    """params.head's default (optimizer lbfgs) is fitted in numpy and scipy; scikit-learn only for the
    reference row. The head file is a FeatureHead's, as fine-tuning (LP-FT) loads it with torch."""
    from tests.feature_heads import predict
    from transferlab import load_features
    from transferlab.config import paths
    from transferlab.data.tasks import select
    from transferlab.heads import torch_heads

    layout, params = pixels_features(tmp_path, {"optimizer": "lbfgs", "sweep": {"C": [0.001, 0.1, 10.0]}})
    loaded, printed = loaded_after("from stages import train_head\ntrain_head.main(['pixels'])", cwd=tmp_path)
    assert loaded == ["sklearn"]
    assert printed.startswith("train_head@pixels: val accuracy")
    info = json.loads((layout.head("pixels") / paths.HEAD_INFO_FILE).read_text())
    feats, index = load_features("pixels", tmp_path)
    val = select(index, params.tasks["pixels"], 0, "pixels").split("val")
    head = torch_heads.load(layout.head("pixels") / paths.HEAD_FILE)
    acc = (predict(head, feats[val["row"].to_numpy()]).argmax(1) == val["y"].to_numpy()).mean()
    assert info["val_accuracy"] == round(float(acc), 6) > 0.9


def test_evaluate_of_a_task_without_shot_seeds_runs_without_torch_or_sklearn(tmp_path):
    """The common path, run as DVC runs it: a fresh process evaluating a trained head and reference."""
    from tests.feature_heads import predict
    from transferlab import load_features
    from transferlab.config import paths
    from transferlab.data.tasks import select
    from transferlab.evaluation.results import evaluate
    from transferlab.heads import torch_heads

    layout, params = pixels_project(tmp_path)
    task = params.tasks["pixels"]
    loaded, printed = loaded_after("from stages import evaluate\nevaluate.main(['pixels'])", cwd=tmp_path)
    assert loaded == []
    assert printed.startswith("evaluate@pixels: head test accuracy")
    metrics = json.loads((layout.results("pixels") / "metrics.json").read_text())
    assert set(metrics) == {"head", "reference", "prototype"}
    assert all(m["test_accuracy"] > 0.8 for m in metrics.values()), metrics  # real digits, 5 classes
    assert sorted(p.name for p in layout.results("pixels").iterdir()) == [
        "confusion.csv", "confusion.png", "efficiency.csv", "efficiency.png", "metrics.json", "sweep.csv"]
    # the numpy head predicts as the torch head: the same test accuracy
    feats, index = load_features("pixels", tmp_path)
    test = select(index, task, 0, "pixels").split("test")
    head = torch_heads.load(layout.head("pixels") / paths.HEAD_FILE)
    want = (predict(head, feats[test["row"].to_numpy()]).argmax(1) == test["y"].to_numpy()).mean()
    assert metrics["head"]["test_accuracy"] == round(float(want), 6)
    assert evaluate("pixels", task, P.Evaluate(), 0, layout) == metrics  # in this process too


# Today's bytes: the record a skipped stage writes is an output DVC caches and evaluate reads.
NOTHING_TO_DO = {
    "finetune": (b'{\n  "task": "parity",\n  "mode": "none"\n}\n', "finetune@parity: mode none"),
    "scratch": (b'{\n  "task": "parity",\n  "method": "scratch",\n  "ran": false\n}\n',
                "scratch@parity: skipped (set tasks.parity.scratch: true to train the no-transfer baseline)"),
}


@pytest.mark.parametrize("stage", sorted(NOTHING_TO_DO))
def test_stage_with_nothing_to_do_records_it_without_torch_or_pandas(tmp_path, stage):
    # SMALL_PARAMS' task parity neither fine-tunes nor trains from scratch; device cpu as in params
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(SMALL_PARAMS, sort_keys=False))
    loaded, printed = loaded_after(f"from stages import {stage}\n{stage}.main(['parity'])", cwd=tmp_path,
                                   watch=(*HEAVY, "pandas"))
    record, line = NOTHING_TO_DO[stage]
    assert printed == line
    out_dir = getattr(Layout(tmp_path), stage)("parity")
    assert sorted(p.name for p in out_dir.iterdir()) == [f"{stage}.json"]
    assert (out_dir / f"{stage}.json").read_bytes() == record
    assert loaded == []
