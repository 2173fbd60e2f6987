"""task_reuse: `dvc repro` of a new task on an existing feature set vs the first task's run with its extraction.

A real git + DVC repository of this project (tests.conftest.make_project) over an imagefolder dataset of
generated 224 px JPEGs and a ResNet-50 backbone at 224 px.
baseline: the first `dvc repro` (one task): every stage, including prepare, backbone and features (extraction).
ours: params.yaml gains a new task on the same feature set, then `dvc repro`: only validate, the new task's
train_head / finetune / scratch / evaluate and report run; the backbone never does. Three 5-class tasks are
added one after another ('upper': digits 5-9, 'lower': 0-4, 'middle': 2-6) and ours is the median run: one
run of ~10 s moves by a few tenths with the machine, and the target sits close to it.
ours_binary_task: the same for a two-class task ('parity', even/odd over all digits), added first. The task
matters: train_head also fits the scikit-learn reference (transferlab.heads.reference: one L-BFGS logistic
regression per C in a 7-value grid), which costs far more for several classes than for two.
Both timed as the wall clock of the `dvc repro` process (every stage is its own Python process).
"""
from __future__ import annotations

import copy
import json
import re
import subprocess
import time
from pathlib import Path

import yaml

from benchmarks.common import CPU_NOTE, write_images

TARGET = {"speedup_min": 10}

FULL = {"n": 2000, "arch": "resnet50", "image_size": 224, "source_px": 224}
QUICK = {"n": 40, "arch": "resnet18", "image_size": 32, "source_px": 64}
RUNNING = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)
UPSTREAM = ("export_digits", "prepare@", "backbone@", "pretrain@", "features@")
PARITY = {str(d): ("even" if d % 2 == 0 else "odd") for d in range(10)}
NEW_TASKS = {"upper": [5, 6, 7, 8, 9], "lower": [0, 1, 2, 3, 4], "middle": [2, 3, 4, 5, 6]}


def project_params(c: dict) -> dict:
    """This project's params.yaml (its head, finetune and evaluate sections as shipped) with one imagefolder
    dataset, one backbone, one feature set and one task."""
    from tests.conftest import REPO

    shipped = yaml.safe_load((REPO / "params.yaml").read_text())
    return {"seed": 0, "device": "cpu",
            "datasets": {"gen": {"source": "imagefolder", "root": "data/raw/gen"}},
            "backbones": {"bb": {"arch": c["arch"], "weights": "none", "image_size": c["image_size"]}},
            "pretrain": {},
            "features": {"gen-bb": {"dataset": "gen", "backbone": "bb"}},
            "tasks": {"digits": {"features": "gen-bb"}},
            "head": shipped["head"], "finetune": shipped["finetune"], "evaluate": shipped["evaluate"]}


def repro(repo: Path, env: dict, target: str | None = None) -> tuple[float, dict[str, float], str]:
    """Wall seconds of one `dvc repro`, and each stage's seconds in run order: from its "Running stage" line
    to the next one's (or the end), so a stage's share includes DVC hashing its outputs and writing the lock."""
    start = time.perf_counter()
    proc = subprocess.Popen(["dvc", "repro", *([target] if target else [])], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, marks = [], []
    for line in proc.stdout:
        lines.append(line)
        if m := RUNNING.match(line):
            marks.append((m.group(1), time.perf_counter()))
    proc.wait()
    seconds = time.perf_counter() - start
    out = "".join(lines)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc repro failed ({proc.returncode}):\n{out}")
    ends = [t for _, t in marks[1:]] + [start + seconds]
    return seconds, {name: round(end - t, 2) for (name, t), end in zip(marks, ends, strict=True)}, out


def run(work: Path, quick: bool = False) -> dict:
    from tests.conftest import ENV, make_project

    c = QUICK if quick else FULL
    params = project_params(c)
    repo = make_project(work / "repo", params)
    write_images(repo / "data" / "raw" / "gen", range(c["n"]), c["source_px"], "JPEG")
    env = {**ENV, "TRANSFERLAB_FEATURE_STORE": str(work / "store"), "TQDM_DISABLE": "1"}

    # --quick (a smoke run) stops at train_head: 5 + 2 stage processes instead of 10 + 6 + 6
    base_s, base_stages, _ = repro(repo, env, "train_head@digits" if quick else None)
    meta = json.loads((repo / "data" / "features" / "gen-bb" / "meta.json").read_text())
    run = json.loads((repo / "data" / "features" / "gen-bb.run.json").read_text())
    assert run["extracted"] == c["n"], run

    params2 = copy.deepcopy(params)
    bin_s, bin_stages = None, {}
    if not quick:  # the smoke run skips the two-class task: one `dvc repro` fewer
        params2["tasks"]["parity"] = {"features": "gen-bb", "label_map": PARITY}
        (repo / "params.yaml").write_text(yaml.safe_dump(params2, sort_keys=False))
        bin_s, bin_stages, _ = repro(repo, env)
    params3, runs = copy.deepcopy(params2), []
    for task, classes in list(NEW_TASKS.items())[:1 if quick else None]:
        params3["tasks"][task] = {"features": "gen-bb", "classes": classes}
        (repo / "params.yaml").write_text(yaml.safe_dump(params3, sort_keys=False))
        seconds, stages, _ = repro(repo, env, f"train_head@{task}" if quick else None)
        upstream = [s for s in [*stages, *bin_stages] if s.startswith(UPSTREAM)]
        if upstream:
            raise RuntimeError(f"a new task re-ran upstream stages {upstream}")
        runs.append((seconds, task, stages))
    ours_s, new_task, ours_stages = sorted(runs)[len(runs) // 2]  # the median run
    if quick:
        metrics = {t: json.loads((repo / "models" / "tasks" / t / "head" / "head.json").read_text())[
            "val_accuracy"] for t in params3["tasks"]}
    else:
        metrics = {t: json.loads((repo / "results" / t / "metrics.json").read_text())["head"]["test_accuracy"]
                   for t in params3["tasks"]}

    def internals(task: str) -> dict:
        info = json.loads((repo / "models" / "tasks" / task / "head" / "head.json").read_text())
        return {"heads_train_seconds": info["seconds"], "reference_fit_seconds": info["reference"]["seconds"]}

    new = internals(new_task)
    fits = new["heads_train_seconds"] + new["reference_fit_seconds"]
    notes = [f"the first `dvc repro` runs {', '.join(base_stages)}"
             + (" (export_digits too: the project's dvc.yaml always has it)" if "export_digits" in base_stages
                else "") + "; every stage is a separate Python process",
             f"of the new task's {ours_s:.1f} s ('{new_task}', the median of {len(runs)}), train_head's fits took "
             f"{fits:.1f} s: {new['heads_train_seconds']:.1f} s for our linear probe's 7 L-BFGS fits (one per C), "
             f"{new['reference_fit_seconds']:.1f} s for the scikit-learn reference's 7, on the same "
             f"{meta['dim']}-d features; the rest is DVC and {len(ours_stages)} stage processes starting up "
             "(stage_seconds: each stage from its start to the next one's)",
             CPU_NOTE]
    out = {
        "baseline": {"seconds": base_s, "stages_run": list(base_stages), "stage_seconds": base_stages,
                     "description": f"first `dvc repro` of a fresh repo with one task ('digits', all 10 classes): "
                                    f"every stage, including extracting {c['n']} images",
                     "features_stage_seconds": float(run["seconds"]), "images_extracted": run["extracted"],
                     "features_compute_dtype": meta["key"]["compute_dtype"],
                     "train_head_internals": internals("digits")},
        "ours": {"seconds": ours_s, "task": new_task, "stages_run": list(ours_stages),
                 "stage_seconds": ours_stages,
                 "description": "`dvc repro` after adding a new 5-class task on the same feature set (the median "
                                "of the runs below, each adding one more task): no upstream stage runs",
                 "runs": [{"task": t, "seconds": round(sec, 3)} for sec, t, _ in runs],
                 "train_head_internals": new},
        "speedup": base_s / ours_s,
        "speedup_slowest_new_task": base_s / max(sec for sec, _, _ in runs),
        "images": c["n"],
        ("val_accuracy" if quick else "test_accuracy"): metrics,
        "dvc_repro_target": "train_head@<task> (quick smoke run)" if quick else "all stages",
        "workload": f"imagefolder of {c['n']} generated {c['source_px']} px JPEGs (digit-derived, 10 classes), "
                    f"{c['arch']} at {c['image_size']} px (random init: weights do not change speed), "
                    "params.yaml's shipped head/finetune sections, device cpu, features batch 64, num_workers 0",
    }
    if bin_s is not None:
        out["ours_binary_task"] = {"seconds": bin_s, "stages_run": list(bin_stages), "stage_seconds": bin_stages,
                                   "speedup": base_s / bin_s,
                                   "description": "`dvc repro` after adding a two-class task ('parity': even/odd "
                                                  "over all digits), before 'upper'",
                                   "train_head_internals": internals("parity")}
    out["notes"] = notes
    return out
