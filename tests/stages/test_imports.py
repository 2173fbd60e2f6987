"""Stages that never run a network start without loading one.

Each DVC stage is a fresh process, and importing torch + torchvision costs seconds, scikit-learn more: report
and validate must not pay for them, nor tasks@ for a feature set whose tasks only fit linear probes on the cached
features (scikit-learn for the reference row only). Checked in a fresh interpreter on this checkout
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
from tests.projects import pixels_features
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


def test_tasks_imports_neither_torch_nor_sklearn():
    assert loaded_after("import stages.tasks")[0] == []


# Today's bytes: the records of the methods a task does not ask for, which the evaluation reads.
NOTHING_TO_DO = {
    "finetune": b'{\n  "task": "pixels",\n  "mode": "none"\n}\n',
    "scratch": b'{\n  "task": "pixels",\n  "method": "scratch",\n  "ran": false\n}\n',
}


def test_a_linear_probe_task_runs_without_torch(tmp_path):
    """params.head's default (optimizer lbfgs) is fitted in numpy and scipy; scikit-learn only for the
    reference row; the evaluation of a task without shot seeds in numpy. Run as DVC runs it: a fresh process.
    The head file is a FeatureHead's, as fine-tuning (LP-FT) loads it with torch."""
    from tests.feature_heads import predict
    from transferlab import load_features
    from transferlab.config import paths
    from transferlab.data.tasks import select
    from transferlab.evaluation.results import evaluate
    from transferlab.heads import torch_heads

    layout, params = pixels_features(tmp_path, {"optimizer": "lbfgs", "sweep": {"C": [0.001, 0.1, 10.0]}})
    task = params.tasks["pixels"]
    loaded, printed = loaded_after("from stages import tasks\ntasks.main(['pixels'])", cwd=tmp_path)
    assert loaded == ["sklearn"]
    assert printed.splitlines()[0].startswith("  pixels: head val accuracy")
    assert printed.splitlines()[-1].startswith("tasks@pixels: 1 computed (")
    models = layout.task("pixels", "pixels")
    info = json.loads((models.head / paths.HEAD_INFO_FILE).read_text())
    feats, index = load_features("pixels", tmp_path)
    sel = select(index, task, 0, "pixels")
    head = torch_heads.load(models.head / paths.HEAD_FILE)
    val, test = sel.split("val"), sel.split("test")
    acc = (predict(head, feats[val["row"].to_numpy()]).argmax(1) == val["y"].to_numpy()).mean()
    assert info["val_accuracy"] == round(float(acc), 6) > 0.9
    metrics = json.loads((models.results / paths.METRICS_FILE).read_text())
    assert set(metrics) == {"head", "reference", "prototype"}
    assert all(m["test_accuracy"] > 0.8 for m in metrics.values()), metrics  # real digits, 5 classes
    for kind in paths.PLOT_KINDS:
        assert (models.results / f"{kind}.csv").stat().st_size > 0
    for kind in paths.FIGURE_KINDS:
        assert (models.results / f"{kind}.png").stat().st_size > 0
    # the numpy head predicts as the torch head: the same test accuracy
    want = (predict(head, feats[test["row"].to_numpy()]).argmax(1) == test["y"].to_numpy()).mean()
    assert metrics["head"]["test_accuracy"] == round(float(want), 6)
    assert evaluate("pixels", task, P.Evaluate(), 0, layout, models) == metrics  # in this process too
    # the methods it does not ask for: their records only
    for method, record in NOTHING_TO_DO.items():
        folder = getattr(models, method)
        assert sorted(p.name for p in folder.iterdir()) == [f"{method}.json"]
        assert (folder / f"{method}.json").read_bytes() == record
    assert not layout.task_curves("pixels", "pixels").exists()  # no epoch, no curve
