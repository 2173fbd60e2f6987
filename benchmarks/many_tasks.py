"""many_tasks: tasks@<feature set> with tens, hundreds and a thousand tasks on one feature set (#17).

A real git + DVC repository of this project (task_reuse.make_repo) with the embedded digits default cut to one
feature set: dataset digits (scikit-learn's 1,797 real digits, exported by export_digits), backbone random
(resnet18, 32 px), feature set digits-random (layer2 + layer3, 384-d) and its default task fewshot-5to9-random;
params.yaml's shipped head (lbfgs linear probe, head.reference auto), finetune and evaluate sections; device cpu.
The first `dvc repro` (setup, not timed against anything) extracts the features. Then, all on that feature set,
each `dvc repro` timed as the wall clock of its process:
  ten_tasks: 10 tasks added (11 in all): seconds per added task.
  hundred_tasks: tasks added up to 100 in all, with the task cache (.cache/tasks) emptied first, so that the
    repro computes all 100: the seconds of a feature set's 100 tasks (target ≤ 300 s). Also the baseline.
  ours: one task added to the 100, three times one after another (101, 102, 103 tasks), the median: the cost of
    adding one task (target ≤ 3 s); the others are copied from the task cache.
  status: `dvc status` with params.yaml holding 1,000 tasks (target ≤ 10 s), after a `dvc repro` of them where
    the 100 tasks' compute time says it fits the budget (FULL's repro_budget). Where it does not (said in the
    JSON: status.repro_1000), `dvc status` first against the lock of the 103 (lock_of_fewer), then the new
    tasks' task cache entries are seeded with copies of one computed entry (no compute: the file counts and
    sizes of real outputs, not their numbers), `dvc repro` publishes all 1,000 from the cache and writes their
    lock (repro_1000.seeded), and `dvc status` runs against it. Also `dvc status` of the clean repository at 11
    and 103 tasks. yaml_loader: that 1,000-task `dvc status` with ruamel.yaml's C loader (ruamel.yaml.clib, a
    dependency of the project) and with it hidden (pure Python, what DVC used before), alternated.
  time_split: where the seconds of adding one task go, from the stage commands run by hand after the DVC runs
    (the same commands, outside DVC): Python start-up and imports, fingerprinting and publishing every task, the
    new task's compute (the stage's run record), the validate and report stages, and DVC's own remainder.
speedup = hundred_tasks seconds / ours seconds: the stage computing all its tasks (no task cache) vs adding one.

The tasks (varied_tasks, deterministic): label subsets of 2 to 10 digits, label maps (parity, high/low, mod 3,
primes, loops, curves) over all digits or a subset, all training images or 1 to 20 shots per class, some with
shot seeds (mean +- std over draws), a few with an efficiency curve; linear probes only, no finetune or scratch.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks.task_reuse import bench_env, code_state, make_repo, repro, tasks_run, write_params

TARGET = {"one_task_seconds_max": 3, "hundred_tasks_seconds_max": 300, "status_1000_seconds_max": 10}

FEATURESET = "digits-random"
FIRST_TASK = "fewshot-5to9-random"  # the default's task on digits-random
TASKS_STAGE = f"tasks@{FEATURESET}"
UPSTREAM = ("export_digits", "prepare@", "backbone@", "pretrain@", "features@")
# ten: tasks after the first step (the default's task + 10); hundred: in all; one_more: single additions, one
# after another; status: params.yaml's tasks for the last `dvc status`
# status; repro_budget: the 1,000-task `dvc repro` runs only where its estimated compute fits it (the smoke run
# takes the other way, a seeded task cache)
FULL = {"ten": 11, "hundred": 100, "one_more": 3, "status": 1000, "status_repeats": 3, "repro_budget": 180,
        "floor_repeats": 3}
QUICK = {"ten": 2, "hundred": 4, "one_more": 1, "status": 12, "status_repeats": 1, "repro_budget": 0,
         "floor_repeats": 1}

DIGITS = list(range(10))
LABEL_MAPS = {
    "parity": lambda d: "even" if d % 2 == 0 else "odd",
    "highlow": lambda d: "high" if d >= 5 else "low",
    "mod3": lambda d: f"r{d % 3}",
    "prime": lambda d: "prime" if d in (2, 3, 5, 7) else "other",
    "loops": lambda d: "loop" if d in (0, 6, 8, 9) else "open",
    "curved": lambda d: "straight" if d in (1, 4, 7) else "curved",
}
SHOTS = (None, None, None, 1, 2, 5, 10, 20)  # None: every training image (the most common task)

# Timed in one process in the repository after the DVC runs: the stage's imports, fingerprinting every task,
# then run_featureset (all reused: fingerprints again, and every task published from the cache).
SPLIT_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
from transferlab.config import params as P
from transferlab.config.paths import Layout
from transferlab.tasks.cache import task_fingerprint
from transferlab.tasks.featureset import run_featureset, tasks_of
t1 = time.perf_counter()
layout = Layout()
params = P.load(layout.params)
t2 = time.perf_counter()
for name, task in tasks_of(params, sys.argv[1]).items():
    task_fingerprint(name, task, params, layout)
t3 = time.perf_counter()
record = run_featureset(sys.argv[1], params, layout, log=lambda line: None)
t4 = time.perf_counter()
print(json.dumps({"import_seconds": t1 - t0, "params_load_seconds": t2 - t1, "fingerprint_seconds": t3 - t2,
                  "run_all_reused_seconds": t4 - t3, "computed": len(record.computed),
                  "reused": len(record.reused)}))
"""


# what a process pays before it computes anything (time_split's process_floor_seconds)
_STACK = {"params": "import transferlab.config.params", "pandas": "import pandas",
          "probe (scipy.optimize)": "import scipy.optimize",
          "reference (sklearn.linear_model)": "import sklearn.linear_model",
          "figures (matplotlib.figure)": "import matplotlib.figure"}
COMPUTE_IMPORTS = {"python": "pass", **_STACK, "a computed task's stack": "; ".join(_STACK.values())}

FINGERPRINTS = """
import json
from transferlab.config import params as P
from transferlab.config.paths import Layout
from transferlab.tasks.cache import task_fingerprint
layout = Layout()
params = P.load(layout.params)
print(json.dumps({name: task_fingerprint(name, task, params, layout) for name, task in params.tasks.items()}))
"""


def task_entry(i: int, featureset: str = FEATURESET, seed: int = 0) -> tuple[str, dict]:
    """The i-th varied task (name, params.yaml entry), the same for the same i and seed."""
    rng = np.random.default_rng([seed, i])
    kind = rng.choice(["classes", "map", "map-subset"], p=[0.5, 0.3, 0.2])
    entry: dict = {"features": featureset}
    if kind == "classes":
        classes = sorted(int(d) for d in rng.choice(DIGITS, size=int(rng.integers(2, 11)), replace=False))
        entry["classes"] = classes
        desc = "c" + "".join(map(str, classes))
    else:
        name = str(rng.choice(list(LABEL_MAPS)))
        digits = DIGITS
        if kind == "map-subset":  # a subset with at least two targets under the map
            while True:
                digits = sorted(int(d) for d in rng.choice(DIGITS, size=int(rng.integers(3, 9)), replace=False))
                if len({LABEL_MAPS[name](d) for d in digits}) >= 2:
                    break
        entry["label_map"] = {d: LABEL_MAPS[name](d) for d in digits}
        desc = name + ("-" + "".join(map(str, digits)) if kind == "map-subset" else "")
    shots = SHOTS[int(rng.integers(len(SHOTS)))]
    if shots is not None:
        entry["shots"] = shots
        desc += f"-k{shots}"
        if rng.random() < 0.3:
            entry["shot_seeds"] = list(range(int(rng.choice([3, 5]))))
            desc += f"x{len(entry['shot_seeds'])}"
        if rng.random() < 0.1:
            entry["efficiency_shots"] = sorted({1, 2, 5, shots})
            desc += "-eff"
    return f"t{i:04d}-{desc}", entry


def varied_tasks(start: int, stop: int, featureset: str = FEATURESET) -> dict[str, dict]:
    return dict(task_entry(i, featureset) for i in range(start, stop))


def project_params() -> dict:
    """The shipped params.yaml cut to one feature set (digits-random) and its task, on the CPU."""
    from tests.conftest import REPO

    shipped = yaml.safe_load((REPO / "params.yaml").read_text())
    return {"seed": shipped["seed"], "device": "cpu", "datasets": {"digits": shipped["datasets"]["digits"]},
            "backbones": {"random": shipped["backbones"]["random"]}, "pretrain": {},
            "features": {FEATURESET: shipped["features"][FEATURESET]},
            "tasks": {FIRST_TASK: shipped["tasks"][FIRST_TASK]},
            "head": shipped["head"], "finetune": shipped["finetune"], "evaluate": shipped["evaluate"]}


def with_tasks(params: dict, n: int) -> dict:
    """params with its first task and varied tasks up to n tasks in all."""
    out = copy.deepcopy(params)
    out["tasks"] = {FIRST_TASK: params["tasks"][FIRST_TASK], **varied_tasks(1, n)}
    return out


def timed_cmd(repo: Path, env: dict, *cmd: str) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return seconds, proc.stdout


def status(repo: Path, env: dict, repeats: int = 1) -> dict:
    """`dvc status` wall seconds (the median of `repeats`) and the stages it lists as changed."""
    runs, out = [], ""
    for _ in range(repeats):
        seconds, out = timed_cmd(repo, env, "dvc", "status")
        runs.append(seconds)
    changed = [line.rstrip(":").strip() for line in out.splitlines()
               if line and not line.startswith((" ", "\t")) and line.rstrip().endswith(":")]
    return {"seconds": statistics.median(runs), "runs": [round(s, 3) for s in runs], "changed_stages": changed}


def step(repo: Path, env: dict, target: str | None, n_tasks: int, added: int) -> dict:
    """One `dvc repro` after params.yaml changed; checks that no upstream stage ran and what the stage did."""
    seconds, stages, _ = repro(repo, env, target)
    if upstream := [s for s in stages if s.startswith(UPSTREAM)]:
        raise RuntimeError(f"adding tasks re-ran upstream stages {upstream}")
    record = tasks_run(repo, FEATURESET)
    if record["computed"] + record["reused"] != n_tasks:
        raise RuntimeError(f"{TASKS_STAGE} published {record['computed'] + record['reused']} tasks, not {n_tasks}")
    compute = [t["seconds"] for t in record["tasks"].values() if t["computed"]]
    return {"seconds": seconds, "tasks": n_tasks, "added": added, "seconds_per_added_task": seconds / added,
            "computed": record["computed"], "reused": record["reused"],
            "task_compute_seconds": round(sum(compute), 3),
            "task_compute_seconds_median": round(statistics.median(compute), 3) if compute else None,
            "stages_run": list(stages), "stage_seconds": stages}


def seed_task_cache(repo: Path, env: dict) -> int:
    """Give every task of params.yaml without a task cache entry a copy of FIRST_TASK's entry (fingerprints
    computed by the repository's own code) -> how many were seeded. Its outputs are then published without
    compute: the file counts and sizes of a real run, not its numbers."""
    from transferlab.config.paths import Layout

    fingerprints = json.loads(timed_cmd(repo, env, "python", "-c", FINGERPRINTS)[1].strip().splitlines()[-1])
    cache = Layout(repo).task_cache()
    src, seeded = cache / fingerprints[FIRST_TASK], 0
    for key in fingerprints.values():
        if not (cache / key).exists():
            shutil.copytree(src, cache / key)
            seeded += 1
    return seeded


def pure_yaml_env(work: Path, env: dict) -> dict:
    """env with ruamel.yaml's C loader hidden (a module _ruamel_yaml that fails to import, ahead of
    ruamel.yaml.clib's on the path): DVC then parses params.yaml and dvc.lock in pure Python, as it did before the
    project depended on ruamel.yaml.clib."""
    hide = work / "pure-yaml"
    hide.mkdir(exist_ok=True)
    (hide / "_ruamel_yaml.py").write_text("raise ImportError('hidden by benchmarks.many_tasks')\n")
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(hide), env.get("PYTHONPATH")]))}


def yaml_loaders(repo: Path, env: dict, pure: dict, repeats: int) -> dict:
    """`dvc status` with the C and the pure-Python YAML loader, alternated (side by side on the same machine)."""
    probe = "from ruamel.yaml import YAML; print(YAML(typ='safe').Parser.__name__)"
    names = {k: timed_cmd(repo, e, "python", "-c", probe)[1].strip() for k, e in (("c", env), ("pure", pure))}
    if names != {"c": "CParser", "pure": "Parser"}:
        raise RuntimeError(f"the YAML loaders are not the two compared: {names}")
    runs: dict[str, list[float]] = {"c": [], "pure": []}
    for _ in range(repeats):
        for kind, e in (("c", env), ("pure", pure)):
            runs[kind].append(round(timed_cmd(repo, e, "dvc", "status")[0], 3))
    return {"c_seconds": statistics.median(runs["c"]), "pure_python_seconds": statistics.median(runs["pure"]),
            "runs": runs, "parsers": names}


def time_split(repo: Path, env: dict, one: dict, repeats: int = 3) -> dict:
    """The stage commands of one added task run by hand (outside DVC, everything reused), beside its repro."""
    # once untimed first: the outputs as the last single addition left them (not the 1,000 tasks' to delete)
    timed_cmd(repo, env, "python", "-m", "stages.tasks", FEATURESET)
    inner = json.loads(timed_cmd(repo, env, "python", "-c", SPLIT_SCRIPT, FEATURESET)[1].strip().splitlines()[-1])
    tasks_direct, _ = timed_cmd(repo, env, "python", "-m", "stages.tasks", FEATURESET)
    validate_direct, _ = timed_cmd(repo, env, "python", "-m", "stages.validate")
    report_direct, _ = timed_cmd(repo, env, "python", "-m", "stages.report")
    dvc_start, _ = timed_cmd(repo, env, "dvc", "version")
    # the floors: a Python process, and the imports a computed linear-probe task needs (its fit, the scikit-learn
    # reference, the figures), each in a process of its own
    floors = {what: round(min(timed_cmd(repo, env, "python", "-c", code)[0] for _ in range(repeats)), 3)
              for what, code in COMPUTE_IMPORTS.items()}
    compute = one["task_compute_seconds"]
    stage_s = one["stage_seconds"]
    ran = [s for s in ("validate", "report") if s in stage_s]
    processes = tasks_direct + compute + (validate_direct if "validate" in ran else 0) + (
        report_direct if "report" in ran else 0)
    out = {"repro_seconds": round(one["seconds"], 3),
           "new_task_compute_seconds": compute,
           "tasks_stage_all_reused_seconds": round(tasks_direct, 3),
           "tasks_stage_import_seconds": round(inner["import_seconds"], 3),
           "tasks_stage_params_load_seconds": round(inner["params_load_seconds"], 3),
           "tasks_stage_fingerprint_seconds": round(inner["fingerprint_seconds"], 3),
           "tasks_stage_publish_seconds": round(inner["run_all_reused_seconds"] - inner["fingerprint_seconds"], 3),
           "validate_stage_seconds": round(validate_direct, 3),
           "report_stage_seconds": round(report_direct, 3),
           "dvc_version_seconds": round(dvc_start, 3),
           "process_floor_seconds": floors,
           "dvc_remainder_seconds": round(one["seconds"] - processes, 3),
           "tasks": inner["computed"] + inner["reused"],
           "description": "the stage commands as dvc.yaml runs them, by hand after the DVC runs (every task "
                          "reused: the stage's fixed cost), the new task's compute from its run record, and "
                          "`dvc version` (DVC's start-up), process_floor: `python -c` of nothing and of each "
                          "import (the fastest of its runs); dvc_remainder = repro_seconds - (tasks stage all "
                          "reused + new task compute + validate + report): DVC collecting the stages, hashing "
                          "deps and outputs, committing them to its cache and writing dvc.lock"}
    for name in ran:
        out[f"{name}_dvc_stage_seconds"] = stage_s[name]
    if TASKS_STAGE in stage_s:
        out["tasks_dvc_stage_seconds"] = stage_s[TASKS_STAGE]
    return out


def run(work: Path, quick: bool = False) -> dict:
    from transferlab.config.paths import Layout

    c = QUICK if quick else FULL
    target = TASKS_STAGE if quick else None  # the smoke run leaves the report stage out
    params = project_params()
    repo = make_repo(work / "repo", params)
    code, env = code_state(), bench_env(work, repo)  # what was copied
    layout = Layout(repo)

    setup_s, setup_stages, _ = repro(repo, env, target)
    features_run = json.loads(layout.features_run(FEATURESET).read_text())
    meta = json.loads((layout.features(FEATURESET) / "meta.json").read_text())

    write_params(repo, with_tasks(params, c["ten"]))
    ten = step(repo, env, target, c["ten"], c["ten"] - 1)
    status_ten = status(repo, env, c["status_repeats"])

    write_params(repo, with_tasks(params, c["hundred"]))
    shutil.rmtree(layout.task_cache())  # every task computed: the baseline, and the 100-task target
    hundred = step(repo, env, target, c["hundred"], c["hundred"] - c["ten"])
    if hundred["computed"] != c["hundred"]:
        raise RuntimeError(f"with the task cache emptied all {c['hundred']} tasks compute: {hundred}")
    hundred["seconds_per_task"] = hundred["seconds"] / c["hundred"]

    singles = []
    for n in range(c["hundred"] + 1, c["hundred"] + 1 + c["one_more"]):
        write_params(repo, with_tasks(params, n))
        one = step(repo, env, target, n, 1)
        if one["computed"] != 1:
            raise RuntimeError(f"adding one task computed {one['computed']}")
        singles.append(one)
    ours = sorted(singles, key=lambda r: r["seconds"])[len(singles) // 2]
    n_final = c["hundred"] + c["one_more"]
    status_final = status(repo, env, c["status_repeats"])

    # 1,000 tasks: a `dvc repro` of them where the 100 tasks' compute says it fits the budget; else `dvc status`
    # against the lock of n_final, then against a lock of all of them whose new tasks' cache entries are seeded
    per_task = hundred["task_compute_seconds"] / hundred["computed"]
    estimate = per_task * (c["status"] - n_final)
    big = with_tasks(params, c["status"])
    write_params(repo, big)
    repro_1000: dict = {"estimated_seconds": round(estimate, 1), "budget_seconds": c["repro_budget"]}
    status_big: dict = {}
    if estimate <= c["repro_budget"]:
        big_step = step(repo, env, target, c["status"], c["status"] - n_final)
        repro_1000.update(ran=True, **{k: big_step[k] for k in ("seconds", "computed", "reused")})
    else:
        repro_1000.update(ran=False, why=f"computing {c['status'] - n_final} more tasks at {per_task:.2f} s each "
                          f"(the mean compute of the {c['hundred']} tasks) is about {estimate:.0f} s, over the "
                          f"benchmark's {c['repro_budget']} s budget for it")
        status_big["lock_of_fewer"] = {**status(repo, env, c["status_repeats"]), "lock_tasks": n_final,
                                       "description": f"params.yaml's {c['status']} tasks against the lock and "
                                                      f"outputs of {n_final}"}
        seeded = seed_task_cache(repo, env)
        seeded_step = step(repo, env, target, c["status"], c["status"] - n_final)
        if seeded_step["computed"]:
            raise RuntimeError(f"a seeded task cache still computed {seeded_step['computed']} tasks")
        repro_1000["seeded"] = {"entries_seeded": seeded,
                                **{k: seeded_step[k] for k in ("seconds", "computed", "reused", "stage_seconds")},
                                "description": f"the {seeded} new tasks' task cache entries seeded with copies "
                                               f"of {FIRST_TASK}'s (no compute), then `dvc repro`: every task "
                                               "published from the cache, DVC hashing and committing all of "
                                               "their outputs and writing the lock"}
    status_big.update(status(repo, env, c["status_repeats"]), lock_tasks=c["status"],
                      seeded=not repro_1000["ran"])
    status_big["yaml_loader"] = yaml_loaders(repo, env, pure_yaml_env(work, env), c["status_repeats"])

    write_params(repo, with_tasks(params, n_final))  # the time split: as the last single addition ran
    split = time_split(repo, env, ours, c["floor_repeats"])

    kinds = {"label subset": 0, "label map": 0, "shots": 0, "shot seeds": 0, "efficiency curve": 0}
    for entry in big["tasks"].values():
        kinds["label map" if "label_map" in entry else "label subset"] += 1
        kinds["shots"] += "shots" in entry
        kinds["shot seeds"] += "shot_seeds" in entry
        kinds["efficiency curve"] += "efficiency_shots" in entry
    out = {
        "baseline": {**hundred, "description": f"`dvc repro` after adding tasks up to {c['hundred']} in all, the "
                                                "task cache emptied first: every task computed (what adding one "
                                                "task costs when the stage recomputes all of them)"},
        "ours": {**ours, "runs": [{"tasks": r["tasks"], "seconds": round(r["seconds"], 3),
                                   "task_compute_seconds": r["task_compute_seconds"]} for r in singles],
                 "description": f"`dvc repro` after adding one task to the {c['hundred']}: the median of "
                                f"{len(singles)} added one after another; the new task computed, the others "
                                "copied from the task cache"},
        "speedup": hundred["seconds"] / ours["seconds"],
        "setup": {"seconds": setup_s, "stages_run": list(setup_stages), "stage_seconds": setup_stages,
                  "images_extracted": features_run["extracted"], "feature_dim": meta["dim"]},
        "ten_tasks": ten,
        "hundred_tasks": hundred,
        "status": {f"tasks_{c['ten']}": status_ten, f"tasks_{n_final}": status_final,
                   f"tasks_{c['status']}": status_big, "repro_1000": repro_1000},
        "one_task_seconds": ours["seconds"],
        "hundred_tasks_seconds": hundred["seconds"],
        "status_1000_seconds": status_big["seconds"],
        "target_seconds_per_added_task": TARGET["one_task_seconds_max"],
        "target_100_tasks_seconds": TARGET["hundred_tasks_seconds_max"],
        "target_status_1000_seconds": TARGET["status_1000_seconds_max"],
        "meets_target_seconds_per_added_task": ours["seconds"] <= TARGET["one_task_seconds_max"],
        "meets_target_100_tasks_seconds": hundred["seconds"] <= TARGET["hundred_tasks_seconds_max"],
        "meets_target_status_1000_seconds": status_big["seconds"] <= TARGET["status_1000_seconds_max"],
        "time_split": split,
        "task_kinds": kinds,
        "dvc_repro_target": f"{TASKS_STAGE} (quick smoke run)" if quick else "all stages",
        "code": code,
        "workload": f"the embedded digits default cut to feature set {FEATURESET} ({features_run['extracted']} "
                    f"images, resnet18 random init at 32 px, {meta['dim']}-d), its task {FIRST_TASK} and "
                    f"varied linear-probe tasks (label subsets, label maps, shots, shot seeds), params.yaml's "
                    f"shipped head (head.reference {params['head'].get('reference')}), no finetune or scratch, "
                    f"device cpu; tasks counted {c['ten']}, {c['hundred']}, {n_final}, {c['status']}",
        "notes": [f"per added task: {ten['seconds_per_added_task']:.2f} s adding {ten['added']} "
                  f"({ten['tasks']} in all), {hundred['seconds_per_task']:.2f} s per task computing all "
                  f"{c['hundred']}, {ours['seconds']:.2f} s adding one to the {c['hundred']} "
                  f"(the median of {len(singles)}; its compute {ours['task_compute_seconds']:.2f} s)",
                  f"`dvc status`: {status_ten['seconds']:.2f} s at {c['ten']} tasks, "
                  f"{status_final['seconds']:.2f} s at {n_final}, {status_big['seconds']:.2f} s with "
                  f"{c['status']} tasks in params.yaml and the lock"
                  + (f" (its outputs from a seeded task cache; {status_big['lock_of_fewer']['seconds']:.2f} s "
                     f"against the lock of {n_final})" if status_big["seeded"] else "")
                  + f"; with DVC's YAML parsed in pure Python (no ruamel.yaml.clib) "
                    f"{status_big['yaml_loader']['pure_python_seconds']:.2f} s against "
                    f"{status_big['yaml_loader']['c_seconds']:.2f} s, alternated",
                  f"the machine has {os.cpu_count()} cores; every stage is its own Python process, and "
                  "tasks@<feature set> computes its tasks one after another"],
    }
    return out
