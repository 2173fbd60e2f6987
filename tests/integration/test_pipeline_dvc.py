"""The whole pipeline under real DVC in a temporary git repository, checked the way a user sees it.

One module-scoped `dvc repro` of SMALL_PARAMS (about a minute on a free machine); every test that changes
the repository works in its own copy of it, so the tests do not depend on their order.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import SMALL_PARAMS, make_project, sh
from transferlab.config.errors import PipelineError
from transferlab.config.params import Head, parse
from transferlab.config.paths import Layout

METRIC_KEYS = {"test_accuracy", "val_accuracy", "macro_f1", "n_train", "n_test"}
RUNNING = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)
# the last line of tasks@<feature set>: how many of its tasks it computed, how many it copied from the task cache
TASKS_LINE = re.compile(r"^tasks@(\S+): (\d+) computed \([\d.]+s\), (\d+) reused from the task cache$",
                        re.MULTILINE)
UPSTREAM = ("export_digits", "prepare@", "backbone@", "pretrain@", "features@")


def pipeline_params() -> dict:
    """SMALL_PARAMS with the `head` section spelled out in full (values = the schema defaults, epochs from
    SMALL_PARAMS), as the project's params.yaml does: `dvc exp run -S head.lr=...` can only override a key
    that params.yaml already holds (Hydra: "Key 'lr' is not in struct")."""
    params = copy.deepcopy(SMALL_PARAMS)
    params["head"] = {**Head().model_dump(), **params["head"]}
    return params


PARAMS = pipeline_params()


def ran(output: str) -> set[str]:
    """The stages a dvc repro / exp run output says it ran."""
    return set(RUNNING.findall(output))


def expected_stages(params: dict) -> set[str]:
    stages = {"validate", "export_digits", "report"}
    stages |= {f"prepare@{d}" for d in params["datasets"]}
    stages |= {f"backbone@{b}" for b in params["backbones"]}
    stages |= {f"pretrain@{p}" for p in params["pretrain"]}
    stages |= {f"features@{f}" for f in params["features"]}
    stages |= {f"tasks@{f}" for f in params["features"]}  # one stage per feature set runs all its tasks
    return stages


def tasks_on(params: dict, featureset: str) -> list[str]:
    return [t for t, spec in params["tasks"].items() if spec["features"] == featureset]


def computed_reused(output: str) -> dict[str, tuple[int, int]]:
    """Per tasks@<feature set> that ran: (tasks computed, tasks reused from the task cache), as it printed."""
    return {fs: (int(c), int(r)) for fs, c, r in TASKS_LINE.findall(output)}


def metrics(repo: Path, task: str, params: dict = PARAMS) -> dict:
    return json.loads(Layout(repo).metrics(task).read_text())


def metrics_key(task: str, params: dict = PARAMS) -> str:
    """The task's metrics file as DVC names it (relative to the repository)."""
    return Layout().metrics(task).as_posix()


def write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def workspace(src: Path, dest: Path, commit: bool = True) -> Path:
    """A private copy of a built repository; the (immutable, content-addressed) DVC cache is hard-linked, and so
    is the task cache (.cache/tasks: its entries are only ever added, never changed)."""
    def ignore(folder: str, names: list[str]) -> set[str]:
        if Path(folder) == src / ".dvc":
            return {"cache", "tmp"} & set(names)
        return {".cache"} & set(names) if Path(folder) == src else set()

    shutil.copytree(src, dest, symlinks=True, ignore=ignore)
    shutil.copytree(src / ".dvc" / "cache", dest / ".dvc" / "cache", copy_function=os.link)
    if (src / ".cache").is_dir():
        shutil.copytree(src / ".cache", dest / ".cache", copy_function=os.link)
    if commit:
        with (dest / ".gitignore").open("a") as f:  # as in the project's own .gitignore: no cache in git
            f.write("/.cache/\n")
        sh("git", "add", "-A", cwd=dest)
        sh("git", "commit", "-qm", "baseline", cwd=dest)
    return dest


@dataclass(frozen=True)
class Built:
    repo: Path
    output: str  # stdout + stderr of the first `dvc repro`


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    repo = make_project(tmp_path_factory.mktemp("pipeline") / "repo", PARAMS)
    proc = sh("dvc", "repro", cwd=repo)
    return Built(repo, proc.stdout + proc.stderr)


# --- the first dvc repro --------------------------------------------------------------------------------


def test_repro_runs_every_stage_and_writes_metrics_for_every_task(built):
    assert ran(built.output) == expected_stages(PARAMS)
    # a fresh repository: every task computed, none found in the task cache, as printed and in the run records
    assert computed_reused(built.output) == {fs: (len(tasks_on(PARAMS, fs)), 0) for fs in PARAMS["features"]}
    runs = json.loads(Layout(built.repo).runs_json.read_text())["tasks"]
    for fs in PARAMS["features"]:
        record = json.loads(Layout(built.repo).tasks_run(fs).read_text())
        assert (record["computed"], record["reused"]) == (len(tasks_on(PARAMS, fs)), 0), record
        assert set(record["tasks"]) == set(tasks_on(PARAMS, fs))
        assert all(t["computed"] and t["seconds"] > 0 for t in record["tasks"].values()), record
        assert (runs[fs]["computed"], runs[fs]["reused"]) == (record["computed"], 0), runs
    for task, spec in PARAMS["tasks"].items():
        m = metrics(built.repo, task)
        assert METRIC_KEYS <= set(m["head"]), (task, m)
        for key in ("test_accuracy", "val_accuracy", "macro_f1"):
            assert 0.0 <= m["head"][key] <= 1.0, (task, key, m)
        assert m["head"]["n_test"] > 50, m  # digits 5-9 have ~900 images; 15% are test
        if spec.get("shots"):
            assert m["head"]["n_train"] == spec["shots"] * len(spec["classes"]), (task, m)
        else:
            assert m["head"]["n_train"] > 300, (task, m)
        if spec.get("finetune", "none") == "none":
            assert "finetune" not in m, (task, m)
        else:
            assert METRIC_KEYS <= set(m["finetune"]), (task, m)
            assert m["finetune"]["mode"] == spec["finetune"]
            assert m["finetune"]["n_test"] == m["head"]["n_test"]
            assert m["finetune"]["test_accuracy"] > 0.4, m  # 5 classes: chance is 0.2


def test_accuracies_are_plausible(built):
    # Digits are easy: even a random-init ResNet's features separate them well above chance (0.2 for 5
    # classes; 0.6 for always answering "odd" in the parity task), and one epoch of source pretraining more.
    parity = metrics(built.repo, "parity")["head"]
    assert parity["test_accuracy"] > 0.85, parity
    assert parity["macro_f1"] > 0.8, parity
    fewshot = metrics(built.repo, "fewshot")["head"]
    assert fewshot["test_accuracy"] > 0.5, fewshot
    random = metrics(built.repo, "fewshot-random")["head"]
    assert random["test_accuracy"] > 0.35, random


def test_report_lists_every_task_and_method(built):
    layout = Layout(built.repo)
    table = pd.read_csv(layout.summary_csv)
    assert set(table["task"]) == set(PARAMS["tasks"])
    assert set(table.loc[table["task"] == "fewshot", "method"]) == {"head", "reference", "prototype", "lpft"}
    assert set(table.loc[table["task"] == "parity", "method"]) == {"head", "reference", "prototype"}
    for task in PARAMS["tasks"]:
        for kind in ("head", "reference"):
            row = table[(table["task"] == task) & (table["method"] == kind)].iloc[0]
            assert row["test_accuracy"] == pytest.approx(metrics(built.repo, task)[kind]["test_accuracy"])
            assert row["features"] == PARAMS["tasks"][task]["features"]
            assert row["seconds"] >= 0
    report = layout.report_md.read_text()
    for task in PARAMS["tasks"]:
        assert f"| {task} " in report, task
    assert "lpft" in report


def test_fewshot_seeds_and_the_efficiency_plot(built):
    spec = PARAMS["tasks"]["fewshot"]
    m = metrics(built.repo, "fewshot")
    for kind in ("head", "reference", "prototype"):
        assert m[kind]["n_seeds"] == len(spec["shot_seeds"]) and m[kind]["test_accuracy_std"] >= 0, m
    shown = json.loads(sh("dvc", "plots", "show", "--json", cwd=built.repo).stdout)["data"]
    layout = Layout()
    for task in PARAMS["tasks"]:  # every task's curve is a DVC plot, by the multi-series template
        content = shown[layout.plot(task, "efficiency").as_posix()][0]["content"]
        assert content["encoding"]["color"]["field"] == "method", task
    values = shown[layout.plot("fewshot", "efficiency").as_posix()][0]["content"]["data"]["values"]
    assert sorted({int(v["shots"]) for v in values}) == spec["efficiency_shots"]
    assert {v["method"] for v in values} == {"head", "reference", "prototype"}


def test_training_curves_are_dvc_plots(built):
    """pretrain@ and a task's fine-tune (in tasks@) record per-epoch curves (DVCLive) that `dvc plots show`
    draws; a skipped fine-tune writes none (the tasks stage's curves folder holds only the methods that ran)."""
    layout = Layout(built.repo)
    shown = json.loads(sh("dvc", "plots", "show", "--json", cwd=built.repo).stdout)["data"]
    finetune = layout.task_curves("digits-src", "fewshot") / "finetune"
    for curves, epochs in ((finetune, PARAMS["finetune"]["epochs"]),
                           (layout.curves("pretrain", "src"), PARAMS["pretrain"]["src"]["epochs"])):
        for name in ("train_loss", "val_accuracy", "lr"):
            path = (curves / "plots" / "metrics" / f"{name}.tsv").relative_to(built.repo).as_posix()
            content = shown[path][0]["content"]
            assert [int(v["step"]) for v in content["data"]["values"]] == list(range(epochs)), path
            assert content["encoding"]["x"]["field"] == "step", path
    assert layout.tasks_curves("digits-src").is_dir()
    assert not layout.task_curves("digits-src", "parity").exists()  # no finetune, no scratch: no curve
    assert not (layout.task_curves("digits-src", "fewshot") / "scratch").exists()  # scratch not asked for
    assert not [p for p in shown if p.startswith(layout.tasks_curves("digits-src").relative_to(built.repo)
                                                 .joinpath("parity").as_posix() + "/")]


def test_forced_fine_tune_reruns_write_the_same_bytes(built, tmp_path):
    """The fine-tune recomputed (the task cache emptied first) writes the same bytes; so does a forced re-run
    that copies every task from the task cache."""
    repo = workspace(built.repo, tmp_path / "repo")
    layout = Layout(repo)

    def outputs() -> dict[str, bytes]:
        return {p.relative_to(repo).as_posix(): p.read_bytes()
                for folder in (layout.task("digits-src", "fewshot").finetune,
                               layout.task_curves("digits-src", "fewshot") / "finetune")
                for p in sorted(folder.rglob("*")) if p.is_file()}

    before = outputs()
    n = len(tasks_on(PARAMS, "digits-src"))
    for emptied, want in ((True, (n, 0)), (False, (0, n))):
        if emptied:
            shutil.rmtree(layout.task_cache())
        proc = sh("dvc", "repro", "--force", "--single-item", "tasks@digits-src", cwd=repo)
        assert computed_reused(proc.stdout) == {"digits-src": want}, proc.stdout
        assert outputs() == before
    assert any(k.endswith("train_loss.tsv") for k in before)
    assert any(k.endswith("finetuned.safetensors") for k in before)


def test_second_repro_runs_no_stage(built):
    proc = sh("dvc", "repro", cwd=built.repo)
    out = proc.stdout + proc.stderr
    assert "Running stage" not in out, out
    assert not ran(out)
    status = sh("dvc", "status", cwd=built.repo)
    assert "up to date" in status.stdout, status.stdout
    assert json.loads(sh("dvc", "status", "--json", cwd=built.repo).stdout) == {}


# --- the feature store ----------------------------------------------------------------------------------


def test_load_features_matches_the_manifest_row_for_row(built):
    import torch

    from transferlab import load_features
    from transferlab.data import images, transforms
    from transferlab.models import backbones

    layout = Layout(built.repo)
    feats, index = load_features("digits-src", root=built.repo)
    manifest = pd.read_parquet(layout.manifest("digits"))
    n = len(manifest)
    assert n == 1797  # scikit-learn's digits
    assert feats.shape == (n, 512)
    assert feats.dtype == np.float16
    assert list(index.columns) == ["image_id", "label", "split"]
    assert len(index) == n
    assert index["image_id"].tolist() == manifest["image_id"].tolist()
    assert index["label"].astype(str).tolist() == manifest["label"].astype(str).tolist()
    assert set(index["split"]) == {"train", "val", "test"}
    assert np.isfinite(feats.astype(np.float32)).all()

    # Row i of the array is the backbone's output for row i of the frame: recompute a few rows.
    trunk, info = backbones.load_trunk(layout.backbone("src"))
    trunk.eval()
    tf = transforms.transform(info.preprocessing)
    paths = dict(zip(manifest["image_id"], manifest["path"], strict=True))
    rows = [0, n // 2, n - 1]
    with torch.inference_mode():
        x = torch.stack([tf(images.decode(built.repo / paths[index["image_id"][i]])) for i in rows])
        fresh = trunk(x).flatten(1).numpy()
    # The set computes in the feature set's precision (bf16 on a CPU that has it), these rows in fp32: close,
    # and each fresh row is nearest to its own stored row among all of them.
    stored = feats[rows].astype(np.float32)
    assert (np.linalg.norm(stored - fresh, axis=1) <= 0.05 * np.linalg.norm(fresh, axis=1)).all()
    dist = ((feats.astype(np.float32)[None] - fresh[:, None]) ** 2).sum(-1)
    assert dist.argmin(1).tolist() == rows


# --- changing things ------------------------------------------------------------------------------------


def test_new_task_on_existing_features_computes_only_itself(built, tmp_path):
    repo = workspace(built.repo, tmp_path / "repo")
    params = copy.deepcopy(PARAMS)
    params["tasks"]["all"] = {"features": "digits-src", "classes": [5, 6, 7, 8, 9]}
    write_params(repo, params)
    proc = sh("dvc", "repro", cwd=repo)
    stages = ran(proc.stdout)
    assert not [s for s in stages if s.startswith(UPSTREAM)], stages
    # validate re-checks the edited params.yaml; its marker is unchanged, so nothing upstream re-runs, and only
    # the new task's feature set's entries changed (data/tasks/digits-src.json), so only its tasks stage runs:
    # it computes the new task and copies every other one from the task cache
    assert stages == {"validate", "report", "tasks@digits-src"}, stages
    assert computed_reused(proc.stdout) == {"digits-src": (1, len(tasks_on(PARAMS, "digits-src")))}, proc.stdout
    record = json.loads(Layout(repo).tasks_run("digits-src").read_text())
    assert {t: r["computed"] for t, r in record["tasks"].items()} == {
        **{t: False for t in tasks_on(PARAMS, "digits-src")}, "all": True}, record
    assert metrics(repo, "all", params)["head"]["test_accuracy"] > 0.5
    assert "all" in set(pd.read_csv(Layout(repo).summary_csv)["task"])
    for task, spec in PARAMS["tasks"].items():  # the others were not re-evaluated: the same files
        assert metrics(repo, task) == metrics(built.repo, task)
        fs, layout = spec["features"], Layout(repo)
        for kind in ("confusion", "efficiency", "sweep"):
            assert layout.plot(task, kind).read_bytes() == Layout(built.repo).plot(task, kind).read_bytes()
        for part in ("head", "finetune"):
            new, old = ({p.name: p.read_bytes() for p in getattr(Layout(r).task(fs, task), part).iterdir()}
                        for r in (repo, built.repo))
            assert new == old, (task, part)


def test_features_rerun_that_finds_every_row_re_runs_nothing_downstream(built, tmp_path):
    """A params edit that does not change the numbers (here: loader workers) re-runs features@ in DVC's eyes;
    it reuses every row and writes the same set, so no stage reading the set runs again."""
    repo = workspace(built.repo, tmp_path / "repo")
    params = copy.deepcopy(PARAMS)
    params["features"]["digits-random"]["num_workers"] = 1
    write_params(repo, params)
    proc = sh("dvc", "repro", cwd=repo)
    assert ran(proc.stdout) == {"validate", "features@digits-random", "report"}, proc.stdout
    run = json.loads(Layout(repo).features_run("digits-random").read_text())
    assert (run["extracted"], run["reused"]) == (0, 1797)


def test_exp_run_set_param_shows_in_exp_show(built, tmp_path):
    repo = workspace(built.repo, tmp_path / "repo")
    proc = sh("dvc", "exp", "run", "-S", "head.lr=0.05", cwd=repo)
    stages = ran(proc.stdout)
    assert {f"tasks@{fs}" for fs in PARAMS["features"]} <= stages, stages
    assert not [s for s in stages if s.startswith(UPSTREAM)], stages
    # the head's settings are in every task's fingerprint: every head is trained again
    assert computed_reused(proc.stdout) == {fs: (len(tasks_on(PARAMS, fs)), 0) for fs in PARAMS["features"]}

    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=repo).stdout)
    baseline = next(r for r in shown if r["rev"] != "workspace")
    assert baseline["data"]["params"]["params.yaml"]["data"]["head"]["lr"] == PARAMS["head"]["lr"]
    exps = [rev for exp in baseline.get("experiments") or [] for rev in exp["revs"]]
    assert len(exps) == 1, exps
    exp = exps[0]["data"]
    assert exp["params"]["params.yaml"]["data"]["head"]["lr"] == 0.05
    for task in PARAMS["tasks"]:
        head = exp["metrics"][metrics_key(task)]["data"]["head"]
        assert METRIC_KEYS <= set(head), (task, head)
        assert 0.0 <= head["test_accuracy"] <= 1.0


def test_params_diff_and_metrics_diff_after_changing_head_epochs(built, tmp_path):
    repo = workspace(built.repo, tmp_path / "repo")  # committed: HEAD is the baseline
    params = copy.deepcopy(PARAMS)
    params["head"]["epochs"] = 3
    write_params(repo, params)
    proc = sh("dvc", "repro", cwd=repo)
    assert {f"tasks@{fs}" for fs in PARAMS["features"]} <= ran(proc.stdout)
    assert not [s for s in ran(proc.stdout) if s.startswith(UPSTREAM)]
    assert computed_reused(proc.stdout) == {fs: (len(tasks_on(PARAMS, fs)), 0) for fs in PARAMS["features"]}

    pdiff = json.loads(sh("dvc", "params", "diff", "--json", cwd=repo).stdout)
    assert list(pdiff) == ["params.yaml"] and list(pdiff["params.yaml"]) == ["head.epochs"], pdiff
    change = pdiff["params.yaml"]["head.epochs"]
    assert (change["old"], change["new"]) == (PARAMS["head"]["epochs"], 3), pdiff

    mdiff = json.loads(sh("dvc", "metrics", "diff", "--json", cwd=repo).stdout)
    changed = {(path, key) for path, entries in mdiff.items() for key, d in entries.items()
               if key.startswith("head.") and key.split(".", 1)[1] in ("test_accuracy", "val_accuracy",
                                                                       "macro_f1")
               and d["old"] != d["new"]}
    assert changed, mdiff

    # committed, then read in a fresh clone (no DVC cache: nothing pulled): every metric of both commits is in
    # git, the run records' numbers included (reports/runs.json), so nothing fails to load
    sh("git", "commit", "-qam", "head.epochs: 3", cwd=repo)
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    fresh = sh("dvc", "metrics", "diff", "HEAD~1", "--all", cwd=clone)
    assert "failed to load" not in fresh.stderr + fresh.stdout, fresh.stderr
    assert metrics_key("parity") in fresh.stdout and "head.test_accuracy" in fresh.stdout, fresh.stdout
    assert "reports/runs.json" in fresh.stdout and "features.digits-random.extracted" in fresh.stdout, fresh.stdout
    assert "tasks.digits-src.computed" in fresh.stdout, fresh.stdout


# --- bad params -----------------------------------------------------------------------------------------


def _bad(kind: str) -> tuple[dict, str]:
    params = copy.deepcopy(PARAMS)
    if kind == "unknown-key":
        params["head"]["epoch"] = 5
        return params, "head.epoch"
    if kind == "wrong-type":
        params["head"]["epochs"] = "many"
        return params, "head.epochs"
    params["tasks"]["parity"]["features"] = "no-such-set"
    return params, "tasks.parity.features"


BAD = ["unknown-key", "wrong-type", "missing-featureset"]


@pytest.mark.parametrize("kind", BAD)
def test_parse_rejects_bad_params_naming_the_key(kind):
    params, key = _bad(kind)
    with pytest.raises(PipelineError) as err:
        parse(params)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"{key}:" in msg, msg
    if kind == "missing-featureset":
        assert "no-such-set" in msg and "digits-src" in msg, msg  # says what is wrong and what exists


@pytest.mark.parametrize("kind", BAD)
def test_stage_cli_fails_with_one_error_line(kind, tmp_path):
    params, key = _bad(kind)
    write_params(tmp_path, params)
    proc = sh("python", "-m", "stages.tasks", "digits-src", cwd=tmp_path, check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert f"{key}:" in errors[0], errors
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("kind", BAD)
def test_dvc_repro_with_bad_params_fails_naming_the_key(built, tmp_path, kind):
    repo = workspace(built.repo, tmp_path / "repo", commit=False)
    params, key = _bad(kind)
    write_params(repo, params)
    proc = sh("dvc", "repro", cwd=repo, check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert f"{key}:" in errors[0], errors
    assert "Traceback" not in proc.stderr, proc.stderr
