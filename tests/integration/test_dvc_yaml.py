"""dvc.yaml and transferlab.config.paths spell the same layout: stages resolved by DVC itself, compared with
Layout. (That each stage's code deps are exactly what it imports: tests/test_architecture.py.)"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO, SMALL_PARAMS, make_project, sh
from transferlab.config.params import parse
from transferlab.config.paths import EMBEDDED_DIGITS_ROOT, Layout

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
    want = {"validate": {"outs": {rel(L.params_ok)}, "deps": {rel(L.params)}, "params": set()},
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
    for name, task in P.tasks.items():
        feats = rel(L.features(task.features))
        want[f"train_head@{name}"] = {"outs": {rel(L.head(name)), rel(L.zero_shot(name))}, "deps": {feats},
                                      "params": {f"tasks.{name}", "head", "seed"}}
        want[f"finetune@{name}"] = {"outs": {rel(L.finetune(name)), rel(L.curves("finetune", name)),
                                             rel(L.run_record(name, "finetune"))},
                                    "deps": {feats, rel(L.head(name))},
                                    "params": {f"tasks.{name}", "finetune", "seed"}}
        want[f"scratch@{name}"] = {"outs": {rel(L.scratch(name)), rel(L.curves("scratch", name)),
                                            rel(L.run_record(name, "scratch"))},
                                   "deps": {feats},
                                   "params": {f"tasks.{name}", "finetune", "seed"}}
        results = L.results(name)
        want[f"evaluate@{name}"] = {
            "outs": {rel(results / f) for f in ("metrics.json", "confusion.csv", "confusion.png",
                                                "efficiency.csv", "efficiency.png", "sweep.csv")},
            "metrics": {rel(results / "metrics.json")},
            "deps": {feats, rel(L.head(name)), rel(L.finetune(name)), rel(L.scratch(name)),
                     rel(L.zero_shot(name))},
            "params": {f"tasks.{name}", "evaluate", "head"}}
    want["report"] = {"outs": {rel(L.summary_csv), rel(L.report_md), rel(L.runs_json), rel(L.transfer_json)},
                      "metrics": {rel(L.runs_json), rel(L.transfer_json)},
                      "deps": {rel(L.results("x").parent), rel(L.features("x").parent), rel(L.task("x").parent)},
                      "params": {"tasks", "features"}}
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
            assert any(dep == out or out.startswith(dep + "/") for out in produced), (name, dep)


def test_dag_has_one_featureset_stage_feeding_many_heads(repo):
    dot = sh("dvc", "dag", "--dot", cwd=repo).stdout
    edges = set(re.findall(r'"([^"]+)"\s*->\s*"([^"]+)"', dot))
    nodes = set(re.findall(r'^"([^"]+)";$', dot, re.MULTILINE))
    assert sorted(n for n in nodes if n.startswith("features@")) == sorted(f"features@{f}" for f in P.features)
    heads_of_src = {b for a, b in edges if a == "features@digits-src" and b.startswith("train_head@")}
    want = {f"train_head@{t}" for t, task in P.tasks.items() if task.features == "digits-src"}
    assert len(want) >= 2
    assert heads_of_src == want
    for task_name, task in P.tasks.items():  # and each head reads exactly its own feature set
        feeders = {a for a, b in edges if b == f"train_head@{task_name}" and a.startswith("features@")}
        assert feeders == {f"features@{task.features}"}, (task_name, feeders)
        # nothing upstream of the feature set is a direct input of a head: the backbone never runs again
        assert not {a for a, b in edges if b == f"train_head@{task_name}"
                    and a.startswith(("prepare@", "pretrain@", "backbone@"))}
