"""prepare_memory: peak memory of the prepare stage on 20k generated JPEGs, against a load-everything baseline.

ours: transferlab.data.prepare.prepare over an ImageFolder of n generated 128 px JPEGs (digit-derived, every
one distinct), streaming: each file read and decoded once, one decoded image alive at a time, small rows kept
for the manifest. baseline: the same files through the same decoder (transferlab.data.images.decode), every
decoded image kept in a list before hashing, as a dataset that loads everything into memory does. Each run in
its own subprocess; peak_rss_mb is that subprocess's VmHWM (see scaling.py for why not ru_maxrss). ours also
runs at n/10 to show that its peak does not grow with n.
The claim (issue #3): prepare's peak memory on 20k images stays under 1 GB (peak_rss_mb ≤ 1024).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import write_images

TARGET = {"peak_rss_mb_max": 1024}

FULL = {"n": 20000, "source_px": 128}
QUICK = {"n": 200, "source_px": 32}
REPO = Path(__file__).resolve().parents[1]


def _ours(root: Path, out: Path) -> dict:
    from transferlab.config.params import Dataset
    from transferlab.data.prepare import prepare

    res = prepare(Dataset(source="imagefolder", root=str(root)), out, seed=0, name="gen")
    return {"images": res.n_images, "rejected": res.n_rejected}


def _baseline(root: Path, out: Path) -> dict:
    import numpy as np

    from transferlab.data.images import decode

    paths = sorted(str(p) for p in root.rglob("*") if p.is_file())
    decoded = [np.asarray(decode(p)) for p in paths]  # everything in memory first
    hashes = [hashlib.sha256(a.tobytes()).hexdigest() for a in decoded]
    return {"images": len(hashes), "decoded_mb": round(sum(a.nbytes for a in decoded) / 2**20, 1)}


def point(kind: str, root: Path, out: Path) -> dict:
    """One measurement, run in a fresh process (python -m benchmarks.prepare_memory KIND ROOT OUT)."""
    from benchmarks.common import proc_status_mb
    from transferlab.data import images, prepare  # noqa: F401  (both kinds start with prepare's imports)

    before = proc_status_mb("VmRSS")
    start = time.perf_counter()
    res = (_ours if kind == "ours" else _baseline)(root, out)
    return {"kind": kind, "seconds": time.perf_counter() - start, "rss_before_run_mb": round(before, 1),
            "peak_rss_mb": round(proc_status_mb("VmHWM"), 1), **res}


def _spawn(kind: str, root: Path, out: Path, log: Path) -> dict:
    with open(log, "w") as f:
        cmd = [sys.executable, "-m", "benchmarks.prepare_memory", kind, str(root), str(out)]
        proc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                              env={**os.environ, "TQDM_DISABLE": "1"})
    text = log.read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"prepare_memory {kind} failed ({proc.returncode}):\n{text[-3000:]}")
    return json.loads(text.strip().splitlines()[-1])


def run(work: Path, quick: bool = False) -> dict:
    c = QUICK if quick else FULL
    n, small = c["n"], c["n"] // 10
    write_images(work / "images", range(n), c["source_px"], "JPEG")
    write_images(work / "images-small", range(small), c["source_px"], "JPEG")
    ours = _spawn("ours", work / "images", work / "out", work / "ours.log")
    ours_small = _spawn("ours", work / "images-small", work / "out-small", work / "ours-small.log")
    base = _spawn("baseline", work / "images", work / "out-base", work / "baseline.log")
    assert ours["images"] == base["images"] == n and ours["rejected"] == 0, (ours, base)
    return {
        "baseline": {"seconds": base["seconds"], "images": base["images"], "peak_rss_mb": base["peak_rss_mb"],
                     "rss_before_run_mb": base["rss_before_run_mb"], "decoded_mb": base["decoded_mb"],
                     "description": "the same files and decoder, every decoded image held in a list, then hashed"},
        "ours": {"seconds": ours["seconds"], "images": ours["images"], "peak_rss_mb": ours["peak_rss_mb"],
                 "rss_before_run_mb": ours["rss_before_run_mb"],
                 "description": f"transferlab.data.prepare.prepare over {n} files (decode, hash, split, write "
                                "manifest)"},
        "ours_at_tenth": {"n": small, "images": ours_small["images"], "seconds": ours_small["seconds"],
                          "peak_rss_mb": ours_small["peak_rss_mb"]},
        "speedup": base["seconds"] / ours["seconds"],
        "peak_rss_mb": ours["peak_rss_mb"],
        "peak_rss_ratio_vs_baseline": ours["peak_rss_mb"] / base["peak_rss_mb"],
        "peak_rss_growth_mb_tenth_to_full": round(ours["peak_rss_mb"] - ours_small["peak_rss_mb"], 1),
        "workload": f"{n} generated {c['source_px']} px RGB JPEGs (digit-derived, distinct) in 10 class folders; "
                    f"ours also at n={small}",
        "notes": ["peak RSS includes what the process holds before the run (rss_before_run_mb: Python, PIL, "
                  "numpy, pandas/pyarrow, pydantic; prepare imports no torch: importing torch and torchvision "
                  "alone takes ~650 MiB here); speedup here is only "
                  "baseline seconds / ours seconds (ours also writes the manifest, rejected.csv and "
                  "duplicates.csv); the claim is peak_rss_mb"],
    }


def main(argv: list[str]) -> None:
    kind, root, out = argv
    print(json.dumps(point(kind, Path(root), Path(out))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
