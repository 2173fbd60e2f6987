"""tasks@<feature set> in-process (transferlab.tasks.featureset): every task of the set published from the task
cache, a task computed only when its fingerprint is new, nothing lost when one fails."""
from __future__ import annotations

import json
import shutil

import pytest
import yaml

from tests.projects import pixels_features
from transferlab.config import params as P
from transferlab.config.errors import PipelineError
from transferlab.tasks import publish
from transferlab.tasks.cache import TaskCache, task_fingerprint
from transferlab.tasks.featureset import run_featureset

TASKS = {"low": {"features": "pixels", "classes": ["0", "1", "2"]},
         "high": {"features": "pixels", "classes": ["3", "4"]},
         "parity": {"features": "pixels", "label_map": {"0": "even", "1": "odd", "2": "even", "3": "odd"}}}


def _with(root, **sections) -> P.Params:
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw.update(sections)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return P.load(root / "params.yaml")


def _outputs(layout) -> dict[str, bytes]:
    """Every published file of the feature set but the run record (its seconds differ between runs)."""
    return {str(p.relative_to(layout.root)): p.read_bytes() for p in sorted(layout.tasks("pixels").rglob("*"))
            if p.is_file()}


@pytest.fixture
def project(tmp_path):
    layout, _ = pixels_features(tmp_path, {"optimizer": "lbfgs", "sweep": {"C": [0.01, 1.0]}})
    return layout, _with(tmp_path, tasks=TASKS)


def test_a_second_run_reuses_every_task_and_publishes_the_same_bytes(project):
    layout, params = project
    first = run_featureset("pixels", params, layout, log=lambda _: None)
    assert sorted(first.computed) == sorted(TASKS) and first.reused == []
    published = _outputs(layout)
    assert {f"models/tasks/pixels/{t}/results/metrics.json" for t in TASKS} <= set(published)
    metrics = json.loads((layout.task("pixels", "low").results / "metrics.json").read_text())
    assert metrics["head"]["n_test"] > 0 and metrics["head"]["test_accuracy"] > 0.8
    second = run_featureset("pixels", params, layout, log=lambda _: None)
    assert second.computed == {} and sorted(second.reused) == sorted(TASKS)
    assert _outputs(layout) == published
    record = json.loads(layout.tasks_run("pixels").read_text())
    assert (record["computed"], record["reused"]) == (0, 3) and record["tasks"]["low"] == {"computed": False}


def test_outputs_are_read_only_links_to_the_task_cache_entry(project):
    layout, params = project
    run_featureset("pixels", params, layout, log=lambda _: None)
    key = task_fingerprint("low", params.tasks["low"], params, layout)
    entry = TaskCache(layout.task_cache()).entry(key)
    published = layout.task("pixels", "low").results / "metrics.json"
    cached = entry.results / "metrics.json"
    assert published.stat().st_ino == cached.stat().st_ino  # one file: DVC's state knows it from the last run
    before = cached.read_bytes()
    # read-only, as DVC's linked outputs are: editing one in place would change the entry (root may all the same)
    assert not any(p.stat().st_mode & 0o222 for p in entry.path.rglob("*") if p.is_file())
    run_featureset("pixels", params, layout, log=lambda _: None)  # republished over the links, unharmed
    assert cached.read_bytes() == before and published.stat().st_ino == cached.stat().st_ino
    publish.publish(entry, layout, "pixels", "low")  # over its own outputs (no clear first): replaced, not written
    assert cached.read_bytes() == before and published.stat().st_ino == cached.stat().st_ino
    shutil.rmtree(layout.task_cache())  # read-only entries are still removable, as the docs say
    assert not layout.task_cache().exists()


def test_a_changed_task_computes_only_itself_and_a_removed_one_is_unpublished(project):
    layout, params = project
    run_featureset("pixels", params, layout, log=lambda _: None)
    before = _outputs(layout)
    changed = _with(layout.root, tasks={"low": {**TASKS["low"], "shots": 5}, "high": TASKS["high"]})
    lines = []
    rec = run_featureset("pixels", changed, layout, log=lines.append)
    assert list(rec.computed) == ["low"] and rec.reused == ["high"]
    assert len(lines) == 1 and lines[0].startswith("  low: head val accuracy")
    after = _outputs(layout)
    low = json.loads(after["models/tasks/pixels/low/results/metrics.json"])
    assert low["head"]["n_train"] == 15  # 5 shots x 3
    assert {k: v for k, v in after.items() if "high" in k} == {k: v for k, v in before.items() if "high" in k}
    assert not any("parity" in k for k in after)  # gone from params.yaml, gone from the outputs


def test_the_fingerprint_follows_what_the_numbers_depend_on(project):
    layout, params = project
    fps = {t: task_fingerprint(t, params.tasks[t], params, layout) for t in TASKS}
    assert len(set(fps.values())) == 3
    assert task_fingerprint("low", params.tasks["low"], params, layout) == fps["low"]  # stable
    other_head = params.model_copy(update={"head": params.head.model_copy(update={"standardize": False})})
    assert task_fingerprint("low", params.tasks["low"], other_head, layout) != fps["low"]
    # params.finetune only matters to a task that trains on its images
    other_ft = params.model_copy(update={"finetune": params.finetune.model_copy(update={"lr": 0.123})})
    assert task_fingerprint("low", params.tasks["low"], other_ft, layout) == fps["low"]
    lpft = params.tasks["low"].model_copy(update={"finetune": "lpft"})
    assert task_fingerprint("low", lpft, other_ft, layout) != task_fingerprint("low", lpft, params, layout)
    # the feature set's rows: another index is another task
    index = layout.features("pixels") / "index.parquet"
    index.write_bytes(index.read_bytes() + b"\0")
    assert task_fingerprint("low", params.tasks["low"], params, layout) != fps["low"]


def test_a_failing_task_loses_nothing_already_computed(project):
    layout, params = project
    bad = {**TASKS, "empty": {"features": "pixels", "classes": ["0", "1"], "shots": 10_000}}
    broken = _with(layout.root, tasks=bad)
    with pytest.raises(PipelineError, match="tasks.empty"):
        run_featureset("pixels", broken, layout, log=lambda _: None)
    entries = [p.name for p in layout.task_cache().iterdir()]
    assert len([e for e in entries if not e.endswith(".partial")]) == 3  # the tasks before it, kept
    fixed = _with(layout.root, tasks=TASKS)
    assert run_featureset("pixels", fixed, layout, log=lambda _: None).computed == {}


def test_a_feature_set_not_yet_extracted_is_one_error_naming_its_stage(project):
    layout, params = project
    shutil.rmtree(layout.features("pixels"))
    with pytest.raises(PipelineError, match=r"feature set 'pixels' not found .*run `dvc repro features@pixels`"):
        run_featureset("pixels", params, layout, log=lambda _: None)


def test_an_unfinished_entry_is_not_an_entry(tmp_path):
    cache = TaskCache(tmp_path)
    staged = cache.staging("abc")
    (staged.head).mkdir()
    assert cache.entry("abc") is None  # a killed run's folder is never read
    assert cache.staging("abc").path.exists() and not (cache.staging("abc").head).exists()  # emptied
    final = cache.commit("abc", cache.staging("abc"))
    assert cache.entry("abc") == final
