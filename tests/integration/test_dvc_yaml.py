"""dvc.yaml and transferlab.config.paths spell the same layout: stages resolved by DVC itself, compared with
Layout. (That each stage's code deps are exactly what it imports: tests/test_architecture.py.)"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from flows.pools import GPU_KINDS
from tests.conftest import REPO, SMALL_PARAMS, make_project, sh
from transferlab.config.params import parse
from transferlab.config.paths import EMBEDDED_DIGITS_ROOT, FIGURE_KINDS, PLOT_KINDS, Layout
from transferlab.evaluation.publish import RESULT_KINDS

L = Layout()
P = parse(SMALL_PARAMS)


def rel(path: Path) -> str:
    return Path(path).as_posix()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("dvcyaml") / "repo", SMALL_PARAMS)


@pytest.fixture(scope="module")
def stages(repo) -> dict[str, dict]:
    """name -> {outs, metrics, deps, params} as DVC resolves them from dvc.yaml + params.yaml."""
    from dvc.repo import Repo

    resolved = {}
    with Repo(str(repo)) as dvc:
        for stage in dvc.index.stages:
            params = [p for d in stage.deps if type(d).__name__ == "ParamsDependency" for p in d.params]
            resolved[stage.name] = {
                "outs": {o.def_path for o in stage.outs},
                "metrics": {o.def_path for o in stage.outs if o.metric},
                "deps": {d.def_path for d in stage.deps if type(d).__name__ != "ParamsDependency"},
                "params": set(params),
            }
    return resolved


def expected() -> dict[str, dict]:
    """What every stage writes and reads, from the params and Layout alone."""
    models = {**P.backbones, **P.pretrain}
    want = {"validate": {"outs": {rel(L.params_ok), rel(L.task_entries("x").parent)}, "deps": {rel(L.params)},
                         "params": set()},
            "export_digits": {"outs": {EMBEDDED_DIGITS_ROOT}, "deps": set(), "params": set()}}
    for name, ds in P.datasets.items():
        want[f"prepare@{name}"] = {"outs": {rel(L.prepared(name))}, "deps": {ds.root},
                                   "params": {f"datasets.{name}", "seed"}}
    for name in P.backbones:
        want[f"backbone@{name}"] = {"outs": {rel(L.backbone(name))}, "deps": set(),
                                    "params": {f"backbones.{name}", "seed"}}
    for name, pre in P.pretrain.items():
        want[f"pretrain@{name}"] = {"outs": {rel(L.backbone(name)), rel(L.curves("pretrain", name))},
                                    "deps": {rel(L.prepared(pre.dataset))},
                                    "params": {f"pretrain.{name}", "seed"}}
    for name, fs in P.features.items():
        assert fs.backbone in models
        want[f"features@{name}"] = {"outs": {rel(L.features(name)), rel(L.features_run(name))},
                                    "deps": {rel(L.prepared(fs.dataset)), rel(L.backbone(fs.backbone))},
                                    "params": {f"features.{name}"}}
    for name in P.features:  # tasks@<feature set>: every task on the set, one stage
        want[f"tasks@{name}"] = {
            "outs": {rel(L.tasks(name)), rel(L.tasks_run(name)), rel(L.tasks_curves(name))},
            "deps": {rel(L.features(name)), rel(L.task_entries(name))},
            "params": {"head", "finetune", "evaluate", "seed", "device"}}
    results = {kind: rel(L.results(kind)) for kind in RESULT_KINDS}
    want["report"] = {"outs": {rel(L.summary_csv), rel(L.report_md), rel(L.runs_json), rel(L.transfer_json),
                               *results.values()},
                      "metrics": {results["metrics"], rel(L.runs_json), rel(L.transfer_json)},
                      "deps": {rel(L.features("x").parent), rel(L.tasks("x").parent),
                               rel(L.task_entries("x").parent)},
                      "params": {"features"}}  # the tasks through data/tasks: dvc.lock stays one size
    return want


def test_dvc_yaml_has_one_stage_per_params_entry(stages):
    assert set(stages) == set(expected())


@pytest.mark.parametrize("name", sorted(expected()))
def test_stage_paths_agree_with_layout(stages, name):
    want, got = expected()[name], stages[name]
    assert got["outs"] == want["outs"], name
    if "metrics" in want:
        assert got["metrics"] == want["metrics"], name
    else:
        assert not got["metrics"], name
    assert want["deps"] <= got["deps"], (name, got["deps"])
    assert want["params"] <= got["params"], (name, got["params"])
    module = name.split("@")[0]
    assert f"stages/{module}.py" in got["deps"], (name, got["deps"])  # its own code


def test_every_metric_is_in_git(repo):
    """`dvc metrics diff REV` reads a commit's metrics from git; one in DVC's cache fails to load in any clone
    that has not pulled it."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        metrics = {o.def_path: o.use_cache for stage in dvc.index.stages for o in stage.outs if o.metric}
    assert rel(L.runs_json) in metrics and not any(metrics.values()), metrics


@pytest.mark.parametrize("name", sorted(n for n in expected() if n.split("@")[0] in GPU_KINDS))
def test_every_stage_that_runs_the_backbone_is_kept_in_the_run_cache(repo, name):
    """A stage that runs the backbone must be restored from DVC's run-cache rather than re-run, also on another
    machine (flows/pools.py --sync, `dvc repro --pull`): DVC saves no run-cache entry for a stage with an out of
    cache: false (metrics and plots aside), and `dvc push --run-cache` pushes no file of such an out, metrics
    and plots included. So every out of such a stage is cached."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        [stage] = [s for s in dvc.index.stages if s.name == name]
        uncached = [o.def_path for o in stage.outs if not o.use_cache]
    assert not uncached, (name, uncached)


@pytest.mark.parametrize("name", sorted(set(expected()) - {"validate"}))
def test_every_stage_waits_for_params_validation(stages, name):
    # validate must come first in graph order, so bad params fail as one line naming the key
    assert rel(L.params_ok) in stages[name]["deps"], (name, stages[name]["deps"])


def test_every_dependency_is_produced_by_a_stage_or_is_code(stages):
    produced = {out for s in stages.values() for out in s["outs"]}
    for name, s in stages.items():
        for dep in s["deps"]:
            if dep == rel(L.params):
                continue
            if dep.startswith("stages/"):
                assert (REPO / dep).is_file(), (name, dep)  # its own script
                continue
            if dep.startswith("src/transferlab/"):
                assert (REPO / dep / "__init__.py").is_file(), (name, dep)  # a library sub-package
                continue
            # the output itself, a folder of outputs, or a file inside an output folder
            assert any(dep == out or out.startswith(dep + "/") or dep.startswith(out + "/") for out in produced), (
                name, dep)


@pytest.mark.parametrize("featureset", sorted(P.features))
def test_a_tasks_stage_reads_its_own_tasks_only(stages, featureset):
    """Not the whole tasks section (DVC compares a params section as one value): its own tasks' entries, as
    validate writes them, so that adding or editing a task re-runs the stage of that task's feature set only."""
    got = stages[f"tasks@{featureset}"]
    assert not {p for p in got["params"] if p == "tasks" or p.startswith("tasks.")}, got["params"]
    assert rel(L.task_entries(featureset)) in got["deps"], got["deps"]


def test_layout_places_every_task_output_inside_its_stage_outputs():
    """Each path Layout gives one task lies inside an output of its feature set's tasks@ stage (so DVC versions
    it), and its published metrics and plots are files of the report's metrics and plots folders."""
    report = expected()["report"]["outs"]
    for fs in P.features:
        outs = expected()[f"tasks@{fs}"]["outs"]
        for task in [t for t, spec in P.tasks.items() if spec.features == fs]:
            models = L.task(fs, task)
            paths = [models.head, models.zero_shot, models.finetune, models.scratch, models.results,
                     models.run_record("finetune"), models.run_record("scratch"), L.task_curves(fs, task)]
            for path in paths:
                assert any(rel(path).startswith(out + "/") for out in outs), (fs, task, rel(path))
            published = [L.metrics(task), *(L.plot(task, k) for k in PLOT_KINDS),
                         *(L.figure(task, k) for k in FIGURE_KINDS)]
            for path in published:
                assert any(rel(path).startswith(out + "/") for out in report), (task, rel(path))
    assert rel(L.metrics("t")).startswith(rel(L.results("metrics")) + "/")


def test_dag_has_one_featureset_stage_feeding_one_tasks_stage_of_many_tasks(repo):
    dot = sh("dvc", "dag", "--dot", cwd=repo).stdout
    edges = set(re.findall(r'"([^"]+)"\s*->\s*"([^"]+)"', dot))
    nodes = set(re.findall(r'^"([^"]+)";$', dot, re.MULTILINE))
    assert sorted(n for n in nodes if n.startswith("features@")) == sorted(f"features@{f}" for f in P.features)
    assert sorted(n for n in nodes if n.startswith("tasks@")) == sorted(f"tasks@{f}" for f in P.features)
    assert not {n for n in nodes if n.startswith(("train_head@", "finetune@", "scratch@", "evaluate@"))}
    # one stage for the several tasks of digits-src
    assert len([t for t, task in P.tasks.items() if task.features == "digits-src"]) >= 2
    assert {b for a, b in edges if a == "features@digits-src" and b.startswith("tasks@")} == {"tasks@digits-src"}
    for fs in P.features:  # and each tasks stage reads exactly its own feature set
        feeders = {a for a, b in edges if b == f"tasks@{fs}" and a.startswith("features@")}
        assert feeders == {f"features@{fs}"}, (fs, feeders)
        # nothing upstream of the feature set is a direct input of a head: the backbone never runs again
        assert not {a for a, b in edges if b == f"tasks@{fs}"
                    and a.startswith(("prepare@", "pretrain@", "backbone@"))}
    assert {a for a, b in edges if b == "report" and a.startswith("tasks@")} == {f"tasks@{f}" for f in P.features}


def test_dvc_reads_params_and_the_lock_with_the_c_yaml_loader():
    """DVC parses params.yaml and dvc.lock with ruamel.yaml's safe loader (dvc.utils.serialize.parse_yaml), about
    24 times in a `dvc repro` of one task: ruamel.yaml.clib (a dependency of ours, not of ruamel.yaml 0.19) makes
    that the C parser, four times faster on a 100-task params.yaml (benchmarks/many_tasks.py)."""
    from dvc.utils.serialize import _yaml
    from ruamel.yaml import YAML

    assert YAML(typ="safe").Parser.__name__ == "CParser"
    text = (REPO / "params.yaml").read_text()
    assert _yaml.parse_yaml(text, "params.yaml") == YAML(typ="safe", pure=True).load(text)
