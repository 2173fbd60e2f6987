"""Did transfer help? (transferlab.evaluation.transfer): which tasks pair up, the paired gaps over shot draws and
pretraining seeds, and the verdict line. The metrics files are written here in evaluate@'s format
(results/<task>/metrics.json); what writes them is tested in test_results.py."""
from __future__ import annotations

import json

import pytest

from transferlab.config.params import parse
from transferlab.config.paths import Layout
from transferlab.evaluation import transfer

SEEDS = [0, 1, 2, 3]


def _params(n_pretrain: int = 3) -> dict:
    few = {"classes": [5, 6, 7, 8, 9], "shots": 10, "shot_seeds": SEEDS}
    return {
        "datasets": {"digits": {"source": "sklearn_digits", "root": "data/raw/digits"}},
        "backbones": {"random": {"arch": "resnet18", "weights": "none"}},
        "pretrain": {f"src{i}": {"arch": "resnet18", "dataset": "digits", "classes": [0, 1, 2, 3, 4], "seed": i}
                     for i in range(n_pretrain)},
        "features": {**{f"f{i}": {"dataset": "digits", "backbone": f"src{i}"} for i in range(n_pretrain)},
                     "f-random": {"dataset": "digits", "backbone": "random"},
                     "f-l3": {"dataset": "digits", "backbone": "src0", "pooling": "mean", "blocks": [-2]}},
        "tasks": {**{f"few{i}": {"features": f"f{i}", **few} for i in range(n_pretrain)},
                  "few-random": {"features": "f-random", **few},
                  "few-l3": {"features": "f-l3", **few},  # no random-init task reads layer3: no comparison
                  "five-shots": {"features": "f0", **few, "shots": 5},  # other shots: no comparison
                  "all": {"features": "f0", "classes": [5, 6, 7, 8, 9]}},
    }


def _write(layout: Layout, task: str, accs: list[float] | float) -> None:
    head = ({"test_accuracy": accs} if isinstance(accs, float)
            else {"test_accuracy": accs[0], "test_accuracy_seeds": {str(s): a for s, a in zip(SEEDS, accs,
                                                                                                 strict=True)}})
    path = layout.metrics(task)  # the task's results, where the report publishes them
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"head": head}))


@pytest.fixture
def layout(tmp_path):
    layout = Layout(tmp_path)
    _write(layout, "few-random", [0.90, 0.92, 0.94, 0.96])
    for task in ("few-l3", "five-shots"):
        _write(layout, task, [0.5] * 4)
    _write(layout, "all", 0.97)
    return layout


def test_tasks_pair_up_by_images_and_pretraining_seeds_group(layout):
    params = parse(_params())
    for i, shift in enumerate((-0.10, -0.12, -0.08)):
        _write(layout, f"few{i}", [a + shift for a in (0.90, 0.92, 0.94, 0.96)])
    (c,) = transfer.comparisons(params, layout)  # few-l3, five-shots and all have no random-init partner
    assert (c.tasks, c.baseline) == (["few0", "few1", "few2"], "few-random")
    s = transfer.summary(params, c)
    assert s["gap"] == pytest.approx(-0.10) and s["n_pretrain_seeds"] == 3 and s["n_shot_seeds"] == 4
    assert s["gap_std_over_shot_seeds"] == pytest.approx(0.0, abs=1e-9)  # the same shift on every draw
    assert s["gap_std_over_pretrain_seeds"] == pytest.approx(0.02)
    assert s["verdict"] == "hurt"
    text = transfer.line(params, s)
    assert "**few0, few1, few2**: transfer from `src0` hurt: -10.0 points at 10 shots" in text
    assert "3 pretraining seeds (std 2.0)" in text and "blocks: [-2]" in text


@pytest.mark.parametrize("shifts, verdict", [
    ([0.03, 0.05, 0.04, 0.04], "helped"),
    ([0.05, -0.04, 0.02, -0.03], "no clear difference"),  # mean +0.0, std 0.04 over the draws
])
def test_the_verdict_weighs_the_gap_against_its_spread(layout, shifts, verdict):
    params = parse(_params(n_pretrain=1))
    _write(layout, "few0", [a + d for a, d in zip((0.90, 0.92, 0.94, 0.96), shifts, strict=True)])
    s = transfer.summary(params, transfer.comparisons(params, layout)[0])
    assert s["verdict"] == verdict and s["gap_std_over_pretrain_seeds"] is None
    assert "One pretraining run" in transfer.line(params, s)  # one seed: the line says so


def test_the_report_section_and_its_metric(layout):
    params = parse(_params(n_pretrain=1))
    _write(layout, "few0", [0.95, 0.96, 0.97, 0.98])
    text, numbers = transfer.section(params, layout)
    assert text.startswith("\n## Did transfer help?") and "helped: +3.5 points" in text  # gaps 5, 4, 3, 2
    assert numbers == {"few0": {"shots": 10, "accuracy": 0.965, "baseline_accuracy": 0.93, "gap": 0.035,
                                "gap_std_over_shot_seeds": pytest.approx(0.012910, abs=1e-6), "n_shot_seeds": 4,
                                "n_pretrain_seeds": 1}}
    assert transfer.section(parse({**_params(1), "tasks": {"all": {"features": "f0"}}}), layout) == ("", {})
