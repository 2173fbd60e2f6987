"""A timm backbone and an OpenCLIP backbone (the smallest real models, random init, offline) through `dvc repro`
to the report, under real DVC in a temporary git repository: the timm task fine-tuned with LP-FT and trained
from scratch, the OpenCLIP task with its zero-shot head; then a new label set on the CLIP feature set runs no
image tower."""
from __future__ import annotations

import copy
import json
import re

import pandas as pd
import pytest

from tests.conftest import SMALL_PARAMS, make_project, sh
from tests.projects import tiny_clip_config
from transferlab.config.paths import Layout

RUNNING = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)
TASKS_LINE = re.compile(r"^tasks@(\S+): (\d+) computed \([\d.]+s\), (\d+) reused from the task cache$",
                        re.MULTILINE)
PARAMS = {**copy.deepcopy(SMALL_PARAMS), "pretrain": {},
          "backbones": {"vit": {"source": "timm", "arch": "test_vit.r160_in1k", "image_size": 32},
                        "clip": {"source": "open_clip", "arch": "configs/tiny-clip.json"}},
          "features": {"digits-vit": {"dataset": "digits", "backbone": "vit", "pooling": "cls+mean", "blocks": 2},
                       "digits-clip": {"dataset": "digits", "backbone": "clip"}},
          "tasks": {"vit-fewshot": {"features": "digits-vit", "classes": [5, 6, 7, 8, 9], "shots": 5,
                                    "finetune": "lpft", "scratch": True},
                    "clip-fewshot": {"features": "digits-clip", "classes": [5, 6, 7, 8, 9], "shots": 5,
                                     "efficiency_shots": [1, 5]}}}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    repo = tmp_path_factory.mktemp("zoo") / "repo"
    repo.mkdir()
    tiny_clip_config(repo / "configs")
    repo = make_project(repo, PARAMS)
    proc = sh("dvc", "repro", cwd=repo)
    return repo, proc.stdout + proc.stderr


def test_timm_and_open_clip_backbones_run_to_the_report(built):
    repo, out = built
    ran = set(RUNNING.findall(out))
    assert {"backbone@vit", "backbone@clip", "features@digits-vit", "features@digits-clip", "tasks@digits-vit",
            "tasks@digits-clip", "report"} <= ran
    layout = Layout(repo)
    vit = json.loads(layout.metrics("vit-fewshot").read_text())
    assert vit["finetune"]["mode"] == "lpft" and "zero_shot" not in vit  # fine-tuned: timm trunk + the probe
    assert vit["scratch"]["n_train"] == 25  # the timm architecture trained from random init
    clip = json.loads(layout.metrics("clip-fewshot").read_text())
    zero = clip["zero_shot"]
    assert zero["n_train"] == 0 and {"test_accuracy", "macro_f1"} <= set(zero)
    curve = pd.read_csv(layout.plot("clip-fewshot", "efficiency"))
    assert curve["shots"].iloc[0] == 0 and curve["method"].iloc[0] == "zero_shot"
    summary = pd.read_csv(layout.summary_csv)
    row = summary[(summary["task"] == "clip-fewshot") & (summary["method"] == "zero_shot")]
    assert len(row) == 1 and row["backbone_run"].iloc[0] == "no" and row["n_train"].iloc[0] == 0
    meta = json.loads((layout.features("digits-vit") / "meta.json").read_text())
    assert meta["dim"] == 3 * 64 and meta["key"]["layer"] == "cls+mean of the last 2 blocks"


def test_a_new_label_set_on_the_clip_set_runs_no_image_tower(built):
    repo, _ = built
    params = copy.deepcopy(PARAMS)
    params["tasks"]["clip-parity"] = {"features": "digits-clip",
                                      "label_map": {5: "odd", 6: "even", 7: "odd", 8: "even", 9: "odd"},
                                      "class_text": {"odd": "odd number", "even": "even number"}}
    import yaml

    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = sh("dvc", "repro", cwd=repo)
    ran = set(RUNNING.findall(proc.stdout))
    assert "tasks@digits-clip" in ran, proc.stdout
    # the image tower runs in features@ (and in a task's finetune / scratch, which this task skips) only: no
    # feature set is extracted again, the fine-tuned vit task's stage does not run, and of the clip set's tasks
    # only the new one is computed (clip-fewshot is copied from the task cache)
    assert not {s for s in ran if s.startswith(("features@", "backbone@", "tasks@digits-vit"))}, ran
    counts = {fs: (int(c), int(r)) for fs, c, r in TASKS_LINE.findall(proc.stdout)}
    assert counts == {"digits-clip": (1, 1)}, proc.stdout
    layout = Layout(repo)
    record = json.loads((layout.task("digits-clip", "clip-parity").zero_shot / "zero_shot.json").read_text())
    assert record["classes"] == ["even", "odd"] and record["prompts"] == [["a photo of a even number."],
                                                                          ["a photo of a odd number."]]
    assert "zero_shot" in json.loads(layout.metrics("clip-parity").read_text())
