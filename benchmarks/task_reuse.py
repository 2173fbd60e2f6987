"""task_reuse: `dvc repro` of a new task on an existing feature set vs the first task's run with its extraction.

A real git + DVC repository of this project (tests.conftest.make_project) over an imagefolder dataset of
generated 224 px JPEGs and a ResNet-50 backbone at 224 px.
baseline: the first `dvc repro` (one task): every stage, including prepare, backbone and features (extraction).
ours: params.yaml gains a new task on the same feature set, then `dvc repro`: only validate, tasks@<feature set>
(one process for every task of the set: the new one computed, the others copied from the task cache,
transferlab.tasks.cache) and report run; the backbone never does. Three 5-class tasks are added one after
another ('upper': digits 5-9, 'lower': 0-4, 'middle': 2-6) and ours is the median run: one run moves by
seconds with the machine's load.
ours_binary_task: the same for a two-class task ('parity', even/odd over all digits), added first. The task
matters: the head's fit also fits the scikit-learn reference (transferlab.heads.reference: one L-BFGS logistic
regression per C in its grid, head.reference auto), which costs far more for several classes than for two.
Both timed as the wall clock of the `dvc repro` process (every stage is its own Python process).
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from benchmarks.common import write_images

TARGET = {"speedup_min": 20}  # #17 (10x before tasks@<feature set>)

FULL = {"n": 2000, "arch": "resnet50", "image_size": 224, "source_px": 224}
QUICK = {"n": 40, "arch": "resnet18", "image_size": 32, "source_px": 64}
RUNNING = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)
UPSTREAM = ("export_digits", "prepare@", "backbone@", "pretrain@", "features@")
PARITY = {str(d): ("even" if d % 2 == 0 else "odd") for d in range(10)}
NEW_TASKS = {"upper": [5, 6, 7, 8, 9], "lower": [0, 1, 2, 3, 4], "middle": [2, 3, 4, 5, 6]}
FEATURESET = "gen-bb"
TASKS_STAGE = f"tasks@{FEATURESET}"


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


def make_repo(dest: Path, params: dict) -> Path:
    """A real git + DVC repository of this project (tests.conftest.make_project) with its .gitignore, as a
    checkout has it: DVC skips git-ignored folders (.cache/: the task cache, the checkpoints) when it collects
    the repository's dvc.yaml files."""
    from tests.conftest import REPO, make_project

    repo = make_project(dest, params)
    shutil.copy(REPO / ".gitignore", repo / ".gitignore")
    return repo


def bench_env(work: Path, repo: Path) -> dict:
    """The stages' environment: the venv first on PATH, no analytics, a feature store of the run's own, and the
    repository's own copy of the library first on PYTHONPATH: the code its dvc.yaml tracks, not the editable
    install's checkout, which may change while the benchmark runs (and with it the task cache's fingerprints)."""
    from tests.conftest import ENV

    return {**ENV, "TRANSFERLAB_FEATURE_STORE": str(work / "store"), "TQDM_DISABLE": "1",
            "PYTHONPATH": os.pathsep.join([str(repo / "src"), *filter(None, [ENV.get("PYTHONPATH")])])}


def code_state() -> dict:
    """The checkout the repository was copied from: its commit and the copied paths with uncommitted changes."""
    from tests.conftest import REPO

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return proc.stdout if proc.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "src", "stages", "dvc.yaml", "params.yaml", ".gitignore")
    return {"commit": git("rev-parse", "HEAD").strip(), "uncommitted": [ln[3:] for ln in changed.splitlines()]}


def write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


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


def tasks_run(repo: Path, featureset: str = FEATURESET) -> dict:
    """What the last tasks@<featureset> did (Layout.tasks_run): computed / reused counts, seconds per task."""
    from transferlab.config.paths import Layout

    return json.loads(Layout(repo).tasks_run(featureset).read_text())


def head_internals(repo: Path, task: str, featureset: str = FEATURESET) -> dict:
    """The task's head fits' own seconds (head.json): our linear probe's, the scikit-learn reference's."""
    from transferlab.config.paths import HEAD_INFO_FILE, Layout

    info = json.loads((Layout(repo).task(featureset, task).head / HEAD_INFO_FILE).read_text())
    return {"heads_train_seconds": info["seconds"], "reference_fit_seconds": info["reference"].get("seconds", 0.0)}


def run(work: Path, quick: bool = False) -> dict:
    from transferlab.config.paths import METRICS_FILE, Layout

    c = QUICK if quick else FULL
    params = project_params(c)
    repo = make_repo(work / "repo", params)
    write_images(repo / "data" / "raw" / "gen", range(c["n"]), c["source_px"], "JPEG")
    code, env = code_state(), bench_env(work, repo)  # what was copied

    # --quick (a smoke run) stops at tasks@gen-bb: no report stage, and one new task instead of 1 + 3
    base_s, base_stages, _ = repro(repo, env, TASKS_STAGE if quick else None)
    meta = json.loads((repo / "data" / "features" / FEATURESET / "meta.json").read_text())
    run = json.loads((repo / "data" / "features" / f"{FEATURESET}.run.json").read_text())
    assert run["extracted"] == c["n"], run
    base_tasks = tasks_run(repo)

    params2 = copy.deepcopy(params)
    bin_s, bin_stages, bin_tasks = None, {}, {}
    if not quick:  # the smoke run skips the two-class task: one `dvc repro` fewer
        params2["tasks"]["parity"] = {"features": FEATURESET, "label_map": PARITY}
        write_params(repo, params2)
        bin_s, bin_stages, _ = repro(repo, env)
        bin_tasks = tasks_run(repo)
    params3, runs = copy.deepcopy(params2), []
    for task, classes in list(NEW_TASKS.items())[:1 if quick else None]:
        params3["tasks"][task] = {"features": FEATURESET, "classes": classes}
        write_params(repo, params3)
        seconds, stages, _ = repro(repo, env, TASKS_STAGE if quick else None)
        upstream = [s for s in [*stages, *bin_stages] if s.startswith(UPSTREAM)]
        if upstream:
            raise RuntimeError(f"a new task re-ran upstream stages {upstream}")
        record = tasks_run(repo)
        if (record["computed"], record["reused"]) != (1, len(params3["tasks"]) - 1):
            raise RuntimeError(f"adding {task!r} should compute it alone and reuse the others: {record}")
        runs.append((seconds, task, stages, record))
    ours_s, new_task, ours_stages, ours_tasks = sorted(runs, key=lambda r: r[0])[len(runs) // 2]  # the median
    layout = Layout(repo)
    # where tasks@ writes them (the report, which --quick leaves out, copies them into results/)
    metrics = {t: json.loads((layout.task(FEATURESET, t).results / METRICS_FILE).read_text())["head"]
               ["test_accuracy"] for t in params3["tasks"]}

    new = head_internals(repo, new_task)
    fits = new["heads_train_seconds"] + new["reference_fit_seconds"]
    computed_s = ours_tasks["tasks"][new_task]["seconds"]
    tasks_stage_s = ours_stages.get(TASKS_STAGE, float("nan"))
    notes = [f"the first `dvc repro` runs {', '.join(base_stages)}"
             + (" (export_digits too: the project's dvc.yaml always has it)" if "export_digits" in base_stages
                else "") + "; every stage is a separate Python process",
             f"of the new task's {ours_s:.1f} s ('{new_task}', the median of {len(runs)}), {TASKS_STAGE} took "
             f"{tasks_stage_s:.1f} s from its start to the next stage's, of which computing the task (its heads, "
             f"the reference, the evaluation and its figures) took {computed_s:.1f} s and the head fits "
             f"{fits:.1f} s: {new['heads_train_seconds']:.1f} s for our linear probe, "
             f"{new['reference_fit_seconds']:.1f} s for the scikit-learn reference, on the same {meta['dim']}-d "
             f"features; the other {ours_tasks['reused']} tasks were copied from the task cache. The rest is "
             f"DVC and {len(ours_stages)} stage processes starting up (stage_seconds: each stage from its start "
             "to the next one's)",
             f"CPU run: the features stage computed in {meta['key']['compute_dtype']} (precision auto: bf16 only "
             "on a CPU with AVX512-BF16 or AMX, else fp32), channels_last; bf16 runs the extraction about twice "
             "as fast (the extraction benchmark), so the baseline, and the ratio, depend on the CPU's ISA"]
    out = {
        "baseline": {"seconds": base_s, "stages_run": list(base_stages), "stage_seconds": base_stages,
                     "description": f"first `dvc repro` of a fresh repo with one task ('digits', all 10 classes): "
                                    f"every stage, including extracting {c['n']} images",
                     "features_stage_seconds": float(run["seconds"]), "images_extracted": run["extracted"],
                     "features_compute_dtype": meta["key"]["compute_dtype"], "tasks_run": base_tasks,
                     "train_head_internals": head_internals(repo, "digits")},
        "ours": {"seconds": ours_s, "task": new_task, "stages_run": list(ours_stages),
                 "stage_seconds": ours_stages, "tasks_run": ours_tasks, "task_compute_seconds": computed_s,
                 "description": f"`dvc repro` after adding a new 5-class task on the same feature set (the median "
                                f"of the runs below, each adding one more task): only {TASKS_STAGE} among the "
                                "task stages, computing the new task and reusing the others; no upstream stage",
                 "runs": [{"task": t, "seconds": round(sec, 3), "task_compute_seconds": rec["tasks"][t]["seconds"]}
                          for sec, t, _, rec in runs],
                 "train_head_internals": new},
        "speedup": base_s / ours_s,
        "speedup_slowest_new_task": base_s / max(sec for sec, *_ in runs),
        "images": c["n"],
        "test_accuracy": metrics,
        "dvc_repro_target": f"{TASKS_STAGE} (quick smoke run)" if quick else "all stages",
        "code": code,
        "workload": f"imagefolder of {c['n']} generated {c['source_px']} px JPEGs (digit-derived, 10 classes), "
                    f"{c['arch']} at {c['image_size']} px (random init: weights do not change speed), "
                    "params.yaml's shipped head/finetune sections, device cpu, features batch 64, num_workers 0",
    }
    if bin_s is not None:
        out["ours_binary_task"] = {"seconds": bin_s, "stages_run": list(bin_stages), "stage_seconds": bin_stages,
                                   "speedup": base_s / bin_s, "tasks_run": bin_tasks,
                                   "task_compute_seconds": bin_tasks["tasks"]["parity"]["seconds"],
                                   "description": "`dvc repro` after adding a two-class task ('parity': even/odd "
                                                  "over all digits), before 'upper'",
                                   "train_head_internals": head_internals(repo, "parity")}
    out["notes"] = notes
    return out
