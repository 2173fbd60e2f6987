"""scaling: extraction time and peak memory at n = 1k, 4k and 16k images.

Each point is transferlab.features.build.build (fresh store, batch 64, num_workers 0: one process does all the
work) in its own subprocess, over the first n of 16k generated 32 px digit PNGs (every one distinct), with a
resnet18 at 32 px. seconds: the run inside the subprocess (imports excluded); peak_rss_mb: the subprocess's
peak resident set size (VmHWM of /proc/self/status, read by the subprocess as it ends). Not getrusage's
ru_maxrss, of the child or via os.wait4: on Linux a subprocess's ru_maxrss starts at its parent's peak RSS when
it execs, so it would report the benchmark runner's memory, not the extraction's.
The claim: time linear in n (time per image flat) and memory flat (the store and the feature set are written
chunk by chunk, never held whole).
baseline / ours, for the common result shape: the n=1k point's seconds extrapolated linearly to the largest
n, vs the largest n measured; speedup = 1 / time_per_image_ratio.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import CPU_NOTE, make_backbone, write_images

TARGET = {"time_per_image_ratio_max": 1.3, "peak_rss_ratio_max": 1.5}

FULL = {"ns": [1000, 4000, 16000], "arch": "resnet18", "image_size": 32, "source_px": 32}
QUICK = {"ns": [50, 200], "arch": "resnet18", "image_size": 32, "source_px": 32}
REPO = Path(__file__).resolve().parents[1]


def point(manifest: Path, n: int, backbone: Path, store: Path, out: Path) -> dict:
    """One point, run in a fresh process (python -m benchmarks.scaling ...)."""
    import pandas as pd
    import torch

    from benchmarks.common import proc_status_mb
    from transferlab.config.params import FeatureSet
    from transferlab.features.build import build

    frame = pd.read_parquet(manifest).iloc[:n].reset_index(drop=True)
    before = proc_status_mb("VmRSS")
    start = time.perf_counter()
    res = build("gen", FeatureSet(dataset="gen", backbone="bb", batch_size=64), frame, backbone, out,
                torch.device("cpu"), store_dir=store)
    seconds = time.perf_counter() - start
    return {"n": n, "seconds": seconds, "extracted": res.extracted, "rss_before_run_mb": round(before, 1),
            "peak_rss_mb": round(proc_status_mb("VmHWM"), 1)}


def _spawn(args: list[str], log: Path) -> tuple[dict, float]:
    """Run one point in a fresh subprocess: (its JSON, wall seconds)."""
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.scaling", *args], cwd=REPO, stdout=f,
                              stderr=subprocess.STDOUT, env={**os.environ, "TQDM_DISABLE": "1"})
    wall = time.perf_counter() - start
    text = log.read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"scaling point {args} failed ({proc.returncode}):\n{text[-3000:]}")
    return json.loads(text.strip().splitlines()[-1]), wall


def run(work: Path, quick: bool = False) -> dict:
    c = QUICK if quick else FULL
    ns = c["ns"]
    manifest = write_images(work / "images", range(ns[-1]), c["source_px"], "PNG")
    assert manifest["sha256"].is_unique
    manifest.to_parquet(work / "manifest.parquet")
    bb = work / "bb"
    make_backbone(bb, c["arch"], c["image_size"])

    points = []
    for n in ns:
        res, wall = _spawn([str(work / "manifest.parquet"), str(n), str(bb), str(work / f"store-{n}"),
                                  str(work / f"set-{n}")], work / f"point-{n}.log")
        assert res["extracted"] == n, res
        points.append({"n": n, "extracted": res["extracted"], "seconds": res["seconds"],
                       "seconds_per_image": res["seconds"] / n,
                       "images_per_second": round(n / res["seconds"], 1), "peak_rss_mb": res["peak_rss_mb"],
                       "rss_before_run_mb": res["rss_before_run_mb"],
                       "peak_over_before_run_mb": round(res["peak_rss_mb"] - res["rss_before_run_mb"], 1),
                       "process_seconds": round(wall, 2)})
    lo, hi = points[0], points[-1]
    tpi = hi["seconds_per_image"] / lo["seconds_per_image"]
    linear = lo["seconds"] * hi["n"] / lo["n"]
    return {
        "baseline": {"seconds": linear, "description": f"the n={lo['n']} point's seconds scaled linearly to "
                                                       f"n={hi['n']} (what linear time predicts)"},
        "ours": {"seconds": hi["seconds"],
                 "description": f"transferlab.features.build.build over n={hi['n']} images, measured"},
        "speedup": linear / hi["seconds"],
        "points": points,
        "time_per_image_ratio": tpi,
        "peak_rss_ratio": hi["peak_rss_mb"] / lo["peak_rss_mb"],
        "peak_rss_growth_mb": round(hi["peak_rss_mb"] - lo["peak_rss_mb"], 1),
        "workload": f"first n of {ns[-1]} generated {c['source_px']} px digit PNGs (distinct: shifted, tinted, "
                    f"noisy), {c['arch']} at {c['image_size']} px (random init), batch 64, num_workers 0, "
                    "fresh store per point, one subprocess per point",
        "notes": [f"{c['arch']} at {c['image_size']} px on tiny images so that 16k images fit the budget; "
                  "peak RSS includes what the process holds before extracting (rss_before_run_mb: Python, "
                  "torch's CUDA build, torchvision, pandas/pyarrow); peak_over_before_run_mb is what the "
                  "extraction added",
                  "peak RSS is the subprocess's VmHWM: getrusage's ru_maxrss (RUSAGE_CHILDREN, os.wait4, or "
                  "RUSAGE_SELF in the child) starts at the parent's peak when a subprocess execs on Linux and "
                  "read ~2 GB, the runner's own peak, at every point",
                  CPU_NOTE],
    }


def main(argv: list[str]) -> None:
    manifest, n, backbone, store, out = argv
    print(json.dumps(point(Path(manifest), int(n), Path(backbone), Path(store), Path(out))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
