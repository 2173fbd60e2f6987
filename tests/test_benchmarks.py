"""The benchmark suite's smoke run: `python -m benchmarks --quick` of every benchmark writes well-formed JSON.

Only the shape is checked: quick workloads are far too small for their numbers to mean anything, and the
benchmarks themselves (`make bench`) are not timed tests."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from benchmarks import BENCHMARKS, NOT_BUILT
from benchmarks.__main__ import main
from tests.conftest import REPO

MACHINE_KEYS = {"cpu", "cores", "gpu", "torch", "torchvision"}


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def test_quick_run_of_every_benchmark_writes_result_json(tmp_path):
    # A fresh process, as `make bench` runs: this one has hosted Dask clusters and Prefect servers by now, whose
    # inherited state makes forked DataLoader workers exit with code 1 (seen only after tests/flows).
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--results", str(tmp_path / "results"),
                           "--workdir", str(tmp_path / "work")], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "TQDM_DISABLE": "1", "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    results = tmp_path / "results"
    assert sorted(p.stem for p in results.glob("*.json")) == sorted(BENCHMARKS)
    for name in BENCHMARKS:
        r = json.loads((results / f"{name}.json").read_text())
        assert r["name"] == name and r["quick"] is True
        for side in ("baseline", "ours"):
            assert _number(r[side]["seconds"]) and r[side]["seconds"] > 0, (name, side, r[side])
            assert isinstance(r[side]["description"], str) and r[side]["description"], (name, side)
        assert _number(r["speedup"])
        assert math.isclose(r["speedup"], r["baseline"]["seconds"] / r["ours"]["seconds"], rel_tol=1e-9)
        assert MACHINE_KEYS <= set(r["machine"]), r["machine"]
        assert isinstance(r["target"], dict) and r["target"] and isinstance(r["meets_target"], bool)

    ext = json.loads((results / "extraction.json").read_text())
    for side in ("baseline", "ours", "model_only"):
        assert ext[side]["images_per_second"] > 0
    assert _number(ext["fraction_of_model_only"])
    assert ext["ours"]["compute_dtype"] in ("float32", "bfloat16")
    assert ext["ours"]["memory_format"] == "channels_last"
    assert 0.99 < ext["agreement"]["cosine_min"] <= ext["agreement"]["cosine_mean"] <= 1 + 1e-6
    head = json.loads((results / "head_vs_frozen.json").read_text())
    assert 0 <= head["baseline"]["accuracy"] <= 1 and 0 <= head["ours"]["accuracy"] <= 1
    assert head["extraction_seconds"] > 0
    reuse = json.loads((results / "task_reuse.json").read_text())
    assert not [s for s in reuse["ours"]["stages_run"] if s.startswith(("features@", "backbone@", "prepare@"))]
    assert any(s.startswith("features@") for s in reuse["baseline"]["stages_run"])
    for side in ("baseline", "ours"):
        assert list(reuse[side]["stage_seconds"]) == reuse[side]["stages_run"]
        assert sum(reuse[side]["stage_seconds"].values()) <= reuse[side]["seconds"] + 0.1
    inc = json.loads((results / "incremental.json").read_text())
    assert inc["ours"]["images_reused"] > 0 and inc["bit_identical"] is True
    scaling = json.loads((results / "scaling.json").read_text())
    assert [p["n"] for p in scaling["points"]] == sorted(p["n"] for p in scaling["points"])
    for p in scaling["points"]:
        assert {"n", "seconds", "peak_rss_mb"} <= set(p) and p["seconds"] > 0 and p["peak_rss_mb"] > 0
    assert _number(scaling["time_per_image_ratio"]) and _number(scaling["peak_rss_ratio"])

    _check_head_sweep(json.loads((results / "head_sweep.json").read_text()))

    summary = (results / "summary.md").read_text()
    for name in (*BENCHMARKS, *NOT_BUILT):
        assert name in summary


def _check_head_sweep(r: dict) -> None:
    assert r["ours"]["heads"] >= 12
    for side in ("baseline", "ours", "one_head"):
        assert _number(r[side]["seconds"]) and r[side]["seconds"] > 0 and _number(r[side]["cpu_seconds"])
    ratio = r["ours"]["seconds"] / r["one_head"]["seconds"]
    assert math.isclose(r["sweep_to_one_head_ratio"], ratio, rel_tol=1e-9)
    assert r["same_predictions"] is True and r["max_logit_difference"] < 1e-3
    assert r["mlp_diagnostic"]["heads"] >= 2 and r["mlp_diagnostic"]["same_predictions"] is True


def test_quick_head_sweep_alone(tmp_path, monkeypatch):
    """The head sweep's own smoke run (seconds, unlike the whole suite's)."""
    for var in ("TQDM_DISABLE", "DVC_NO_ANALYTICS", "DO_NOT_TRACK"):
        monkeypatch.setenv(var, "1")
    assert main(["head_sweep", "--quick", "--results", str(tmp_path), "--workdir", str(tmp_path / "work")]) == 0
    r = json.loads((tmp_path / "head_sweep.json").read_text())
    assert r["name"] == "head_sweep" and r["quick"] is True
    assert set(r["target"]) == {"speedup_min", "sweep_to_one_head_ratio_max"}
    assert isinstance(r["meets_target"], bool)
    assert math.isclose(r["speedup"], r["baseline"]["seconds"] / r["ours"]["seconds"], rel_tol=1e-9)
    _check_head_sweep(r)
    assert "head_sweep" in (tmp_path / "summary.md").read_text()
