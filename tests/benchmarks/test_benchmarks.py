"""The benchmark suite's smoke run: `python -m benchmarks --quick` of every benchmark writes well-formed JSON
in which every measured variant really ran over its quick workload.

The numbers themselves are not checked: quick workloads are far too small for them to mean anything, and the
benchmarks themselves (`make bench`) are not timed tests. What is checked is what each side did: the images it
extracted or reused, the heads it trained, the stages it ran, and that variants meant to compute the same rows
did."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np

from benchmarks import (
    BENCHMARKS,
    NOT_BUILT,
    extraction,
    head_scale,
    head_sweep,
    head_vs_frozen,
    incremental,
    many_tasks,
    model_zoo,
    prepare_memory,
    scaling,
    task_reuse,
    transfer,
)
from benchmarks.__main__ import main
from tests.conftest import REPO
from transferlab.heads import reference

MACHINE_KEYS = {"cpu", "cores", "gpu", "torch", "torchvision"}
# what every result JSON holds: __main__.run_one's columns, and the benchmark's own baseline / ours / speedup
COLUMNS = {"name", "quick", "started_at", "target", "meets_target", "baseline", "ours", "speedup", "machine",
           "machine_load", "workload", "notes"}


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_common(r: dict, name: str) -> None:
    assert COLUMNS <= set(r), (name, COLUMNS - set(r))
    assert r["name"] == name and r["quick"] is True
    for side in ("baseline", "ours"):
        assert _number(r[side]["seconds"]) and r[side]["seconds"] > 0, (name, side, r[side])
        assert isinstance(r[side]["description"], str) and r[side]["description"], (name, side)
    assert _number(r["speedup"]) and r["speedup"] > 0
    assert MACHINE_KEYS <= set(r["machine"]), r["machine"]
    assert isinstance(r["target"], dict) and r["target"] and isinstance(r["meets_target"], bool)
    assert isinstance(r["workload"], str) and r["workload"] and all(isinstance(n, str) for n in r["notes"])


def test_quick_run_of_every_benchmark_writes_result_json(tmp_path):
    # A fresh process, as `make bench` runs: this one has hosted Dask clusters and Prefect servers by now, whose
    # inherited state makes forked DataLoader workers exit with code 1 (seen only after tests/flows).
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--results", str(tmp_path / "results"),
                           "--workdir", str(tmp_path / "work")], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "TQDM_DISABLE": "1", "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    results = tmp_path / "results"
    assert sorted(p.stem for p in results.glob("*.json")) == sorted(BENCHMARKS)
    loaded = {name: json.loads((results / f"{name}.json").read_text()) for name in BENCHMARKS}
    for name, r in loaded.items():
        _check_common(r, name)

    _check_extraction(loaded["extraction"])
    _check_head_vs_frozen(loaded["head_vs_frozen"])
    _check_task_reuse(loaded["task_reuse"])
    _check_incremental(loaded["incremental"])
    _check_scaling(loaded["scaling"])
    _check_prepare_memory(loaded["prepare_memory"])
    _check_head_sweep(loaded["head_sweep"])
    _check_model_zoo(loaded["model_zoo"])
    _check_head_scale(loaded["head_scale"])
    _check_many_tasks(loaded["many_tasks"])
    _check_transfer(loaded["transfer"])

    summary = (results / "summary.md").read_text()
    for name in (*BENCHMARKS, *NOT_BUILT):
        assert name in summary


def _check_extraction(ext: dict) -> None:
    n = extraction.QUICK["n"]
    for side in extraction.METHODS:
        assert _number(ext[side]["seconds"]) and ext[side]["images_per_second"] > 0, (side, ext[side])
    # every method ran on every round's part of the images, and together on all n of them
    ran = {(run["round"], run["method"]) for run in ext["runs"]}
    assert ran == {(r, m) for r in range(extraction.ROUNDS) for m in extraction.METHODS}
    for m in extraction.METHODS:
        assert sum(run["images"] for run in ext["runs"] if run["method"] == m) == n, m
    assert ext["model_only"]["images"] >= n  # whole batches of random tensors
    assert _number(ext["fraction_of_model_only"])
    assert ext["ours"]["compute_dtype"] in ("float32", "bfloat16")
    assert ext["ours"]["memory_format"] == "channels_last"
    # ours and the naive loop computed features of the same images, image for image
    assert 0.99 < ext["agreement"]["cosine_min"] <= ext["agreement"]["cosine_mean"] <= 1 + 1e-6


def _check_head_vs_frozen(head: dict) -> None:
    c = head_vs_frozen.QUICK
    assert 0 <= head["baseline"]["accuracy"] <= 1 and 0 <= head["ours"]["accuracy"] <= 1
    assert 0 <= head["ours"]["accuracy_without_standardize"] <= 1
    assert head["baseline"]["forward_passes"] == c["n_train"] * c["epochs"]
    assert head["extraction_seconds"] > 0 and head["extraction_images"] == c["n_train"] + c["n_test"]
    assert len(head["ours"]["repeats_seconds"]) == 1 and head["ours_single_thread"]["seconds"] > 0


def _check_task_reuse(reuse: dict) -> None:
    task = reuse["ours"]["task"]
    assert task == next(iter(task_reuse.NEW_TASKS))  # quick adds one new task
    assert reuse["images"] == reuse["baseline"]["images_extracted"] == task_reuse.QUICK["n"]
    assert not [s for s in reuse["ours"]["stages_run"] if s.startswith(task_reuse.UPSTREAM)]
    assert any(s.startswith("features@") for s in reuse["baseline"]["stages_run"])
    assert task_reuse.TASKS_STAGE in reuse["baseline"]["stages_run"]
    assert task_reuse.TASKS_STAGE in reuse["ours"]["stages_run"]
    # the first run computed its one task; the second computed the new task and copied the first from the cache
    assert reuse["baseline"]["tasks_run"]["tasks"]["digits"]["computed"] is True
    ours = reuse["ours"]["tasks_run"]
    assert (ours["computed"], ours["reused"]) == (1, 1)
    assert ours["tasks"][task]["computed"] is True and ours["tasks"]["digits"] == {"computed": False}
    assert _number(reuse["ours"]["task_compute_seconds"]) and reuse["ours"]["task_compute_seconds"] > 0
    assert set(reuse["test_accuracy"]) == {"digits", task}
    assert all(0 <= a <= 1 for a in reuse["test_accuracy"].values())
    for side in ("baseline", "ours"):
        assert list(reuse[side]["stage_seconds"]) == reuse[side]["stages_run"]
        assert sum(reuse[side]["stage_seconds"].values()) <= reuse[side]["seconds"] + 0.1
        assert _number(reuse[side]["train_head_internals"]["heads_train_seconds"])
    assert len(reuse["code"]["commit"]) == 40


def _check_many_tasks(r: dict) -> None:
    c = many_tasks.QUICK
    final = c["hundred"] + c["one_more"]
    assert r["setup"]["images_extracted"] == 1797  # the embedded digits
    assert f"features@{many_tasks.FEATURESET}" in r["setup"]["stages_run"]
    ten, hundred, ours = r["ten_tasks"], r["hundred_tasks"], r["ours"]
    assert (ten["tasks"], ten["added"], ten["computed"], ten["reused"]) == (
        c["ten"], c["ten"] - 1, c["ten"] - 1, 1)
    # the task cache emptied: every task computed
    assert (hundred["tasks"], hundred["computed"], hundred["reused"]) == (c["hundred"], c["hundred"], 0)
    assert [x["tasks"] for x in ours["runs"]] == list(range(c["hundred"] + 1, final + 1))
    assert (ours["computed"], ours["reused"]) == (1, ours["tasks"] - 1)
    for side in (ten, hundred, ours):
        assert many_tasks.TASKS_STAGE in side["stages_run"]
        assert not [s for s in side["stages_run"] if s.startswith(many_tasks.UPSTREAM)]
        assert _number(side["seconds"]) and side["task_compute_seconds"] > 0
    st = r["status"]
    assert set(st) == {f"tasks_{c['ten']}", f"tasks_{final}", f"tasks_{c['status']}", "repro_1000"}
    # a quick run's budget is 0 s: status against the smaller lock, then a seeded task cache's lock of them all
    big, seeded = st[f"tasks_{c['status']}"], st["repro_1000"]["seeded"]
    assert st["repro_1000"]["ran"] is False and big["seeded"] is True
    assert (big["lock_tasks"], big["lock_of_fewer"]["lock_tasks"]) == (c["status"], final)
    assert seeded["entries_seeded"] == seeded["reused"] - final == c["status"] - final
    assert seeded["computed"] == 0 and _number(big["seconds"]) and _number(big["lock_of_fewer"]["seconds"])
    loaders = big["yaml_loader"]  # the C loader against it hidden, each timed, so the two really differ
    assert loaders["parsers"] == {"c": "CParser", "pure": "Parser"}
    assert all(len(loaders["runs"][k]) == c["status_repeats"] for k in ("c", "pure"))
    assert _number(loaders["c_seconds"]) and _number(loaders["pure_python_seconds"])
    assert (r["one_task_seconds"], r["hundred_tasks_seconds"], r["status_1000_seconds"]) == (
        ours["seconds"], hundred["seconds"], st[f"tasks_{c['status']}"]["seconds"])
    targets = ("target_seconds_per_added_task", "target_100_tasks_seconds", "target_status_1000_seconds")
    assert [r[k] for k in targets] == [3, 300, 10]
    assert r["meets_target_seconds_per_added_task"] == (r["one_task_seconds"] <= 3)
    split = r["time_split"]
    assert split["tasks"] == final and split["new_task_compute_seconds"] == ours["task_compute_seconds"]
    assert all(_number(v) for k, v in split.items() if k.endswith("_seconds") and k != "process_floor_seconds")
    floors = split["process_floor_seconds"]
    assert set(floors) == set(many_tasks.COMPUTE_IMPORTS) and all(_number(v) for v in floors.values())
    assert floors["python"] < floors["a computed task's stack"]
    assert sum(r["task_kinds"][k] for k in ("label subset", "label map")) == c["status"]


def test_many_tasks_varied_tasks(raw_digits):
    """many_tasks' tasks: valid params, each selectable on the digits, varied, and the same on every call (the
    benchmark adds tasks by growing the list)."""
    from transferlab.config import params as P
    from transferlab.data.tasks import select

    base = many_tasks.project_params()
    params = P.Params.model_validate(many_tasks.with_tasks(base, many_tasks.FULL["status"]))
    assert len(params.tasks) == many_tasks.FULL["status"]
    assert list(many_tasks.with_tasks(base, 100)["tasks"]) == list(params.tasks)[:100]
    assert many_tasks.varied_tasks(1, 50) == many_tasks.varied_tasks(1, 50)
    assert not any(t.trains_images for t in params.tasks.values())  # linear probes only
    _, index = raw_digits
    for name, task in list(params.tasks.items())[:many_tasks.FULL["hundred"] + many_tasks.FULL["one_more"]]:
        sel = select(index, task, params.seed, name)  # raises where a task cannot be built
        assert len(sel.classes) >= 2 and len(sel.split("val")) and len(sel.split("test")), name
    entries = many_tasks.varied_tasks(1, many_tasks.FULL["status"]).values()
    for key in ("classes", "label_map", "shots", "shot_seeds", "efficiency_shots"):
        assert sum(key in e for e in entries) >= 10, key
    assert len({len(e.get("classes", e.get("label_map", ()))) for e in entries}) >= 8  # 2 to 10 digits


def _check_incremental(inc: dict) -> None:
    n = incremental.QUICK["n"]
    new = max(1, n // 100)
    assert inc["baseline"]["images_extracted"] == n + new  # the fresh store extracted everything
    assert (inc["ours"]["images_extracted"], inc["ours"]["images_reused"]) == (new, n)
    assert inc["setup_seconds"] > 0
    assert inc["bit_identical"] is True  # both variants produced the same rows


def _check_scaling(scaling_r: dict) -> None:
    points = scaling_r["points"]
    assert [p["n"] for p in points] == scaling.QUICK["ns"]
    for p in points:
        assert p["extracted"] == p["n"] and p["seconds"] > 0 and p["peak_rss_mb"] > 0, p
    assert _number(scaling_r["time_per_image_ratio"]) and _number(scaling_r["peak_rss_ratio"])


def _check_prepare_memory(r: dict) -> None:
    n = prepare_memory.QUICK["n"]
    assert r["ours"]["images"] == r["baseline"]["images"] == n
    assert r["ours_at_tenth"]["images"] == r["ours_at_tenth"]["n"] == n // 10
    assert r["baseline"]["decoded_mb"] > 0  # the baseline really held the decoded images
    for side in (r["ours"], r["baseline"], r["ours_at_tenth"]):
        assert side["peak_rss_mb"] > 0 and side["peak_rss_mb"] >= side.get("rss_before_run_mb", 0)


def _check_head_sweep(r: dict) -> None:
    grid = len(head_sweep.GRID["lr"]) * len(head_sweep.GRID["weight_decay"])
    assert r["ours"]["heads"] == grid >= 12
    for side in ("baseline", "ours", "one_head"):
        assert _number(r[side]["seconds"]) and r[side]["seconds"] > 0 and _number(r[side]["cpu_seconds"])
        assert len(r[side]["repeats_seconds"]) == 1 and all(s > 0 for s in r[side]["repeats_seconds"])
    assert _number(r["sweep_to_one_head_ratio"]) and r["sweep_to_one_head_ratio"] > 0
    # the heads trained together are the heads trained one after another
    assert r["same_predictions"] is True and r["max_logit_difference"] < 1e-3
    assert r["mlp_diagnostic"]["heads"] == head_sweep.QUICK["mlp_heads"]
    assert r["mlp_diagnostic"]["same_predictions"] is True


def _check_model_zoo(r: dict) -> None:
    n = model_zoo.QUICK["n"]
    assert {(x["round"], x["method"]) for x in r["runs"]} == {
        (k, m) for k in range(model_zoo.ROUNDS) for m in model_zoo.METHODS}
    assert sum(x["images"] for x in r["runs"] if x["method"] == "ours") == n  # every image, once per model
    assert (r["baseline"]["dim"], r["ours"]["dim"], r["ours_dinov2_readout"]["dim"]) == (2048, 384, 5 * 384)
    assert 20e6 < r["ours"]["parameters"] < 25e6 and 24e6 < r["baseline"]["parameters"] < 27e6
    assert _number(r["time_per_image_ratio"]) and r["time_per_image_ratio"] > 0


def _check_head_scale(r: dict) -> None:
    assert list(r["by_dim"]) == [str(d) for d in head_scale.QUICK["dims"]]
    for side in ("ours", "baseline"):  # both fitted and scored on the same held-out rows
        assert 0.2 < r[side]["test_accuracy"] <= 1  # chance: 0.1
        # ours: a decade of sweep.C or a half-decade of sweep.refine, all of them on the reference's grid
        assert min(abs(np.log10(r[side]["C"] / c)) for c in reference.C_GRID) < 1e-9
    assert r["ours"]["fits"] in (8, 9)  # 7 decades, then one or two half-decades
    assert r["accuracy_gap"] == abs(r["ours"]["test_accuracy"] - r["baseline"]["test_accuracy"])


def _check_transfer(r: dict) -> None:
    assert set(r["datasets"]) == {"digits"}  # quick: neither Fashion-MNIST nor the anchor
    assert set(r["skipped"]) == {"fashion_mnist", "efficientnet_lite0"}
    assert math.isnan(r["fewshot_gain"]) and r["meets_target"] is False
    d, c = r["datasets"]["digits"], transfer.QUICK
    rows = d["configurations"]
    assert set(rows) == {f"{m}/{k}" for m in ("random", "supervised", "simclr") for k in transfer.READOUTS}
    assert d["sizes"]["target_test"] == 5 * c["target"][2] and d["sizes"]["source_train"] == 5 * c["source"][0]
    # SimCLR saw every image but the target's test images
    assert d["sizes"]["simclr_images"] == 5 * (c["source"][0] + c["target"][0])
    for key, row in rows.items():
        assert 0 <= row["fewshot_mean"] <= 1 and 0 <= row["full_accuracy"] <= 1, key
        assert list(row["fewshot_seeds"]) == [str(s) for s in transfer.QUICK_SHOT_SEEDS], key
        assert row["images_extracted"] == sum(d["sizes"][f"target_{s}"] for s in ("train", "val", "test"))
        assert row["dim"] == (512 if row["readout"] == "pooled" else 384), key
        assert (row["pretrain_seconds"] > 0) == (row["method"] != "random"), key
    assert rows["random/pooled"]["fewshot_gap_to_random"] == 0
    assert r["ours"]["fewshot_mean"] == rows[d["best_pretrained"]]["fewshot_mean"]


def test_transfer_reads_idx_files(tmp_path):
    """Fashion-MNIST's idx format (big-endian dims after a magic whose low byte is ndim), gzipped, as the Debian
    package ships it; a folder lacking a file reads as absent (the benchmark then skips it)."""
    import gzip

    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    for split in ("train", "t10k"):
        (tmp_path / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(
            bytes([0, 0, 8, 3]) + np.array([2, 28, 28], ">u4").tobytes() + images.tobytes()))
        (tmp_path / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(
            bytes([0, 0, 8, 1]) + np.array([2], ">u4").tobytes() + bytes([3, 7])))
    x, y = transfer.fashion_arrays(tmp_path)
    assert x.shape == (4, 28, 28) and (x[:2] == images).all() and list(y) == [3, 7, 3, 7]
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    assert transfer.fashion_arrays(tmp_path) is None


def test_quick_head_sweep_alone(tmp_path, monkeypatch):
    """The head sweep's own smoke run (seconds, unlike the whole suite's)."""
    for var in ("TQDM_DISABLE", "DVC_NO_ANALYTICS", "DO_NOT_TRACK"):
        monkeypatch.setenv(var, "1")
    assert main(["head_sweep", "--quick", "--results", str(tmp_path), "--workdir", str(tmp_path / "work")]) == 0
    r = json.loads((tmp_path / "head_sweep.json").read_text())
    _check_common(r, "head_sweep")
    assert set(r["target"]) == {"speedup_min", "sweep_to_one_head_ratio_max"}
    _check_head_sweep(r)
    assert "head_sweep" in (tmp_path / "summary.md").read_text()
