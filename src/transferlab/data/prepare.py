"""A dataset entry made ready for every later stage: each file listed, decoded and hashed once, broken ones
refused by name, exact duplicates found, splits fixed.

Writes into one folder: manifest.parquet (image_id, path, label, split, sha256, pixel_sha256, width, height,
duplicate_of), rejected.csv (path, label, reason: every file refused: empty, not an image, undecodable,
unreadable, or outside the root) and duplicates.csv (transferlab.data.splits). Streams: one decoded image in
memory at a time, small rows kept for the manifest."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from transferlab.config.errors import PipelineError
from transferlab.config.sections import Dataset
from transferlab.data import splits
from transferlab.data.images import ImageRejected, inspect
from transferlab.data.sources import REJECTED, SPLITS, collect_files
from transferlab.io.atomic import write_csv, write_parquet

COLUMNS = ["image_id", "path", "label", "split", "sha256", "pixel_sha256", "width", "height", "duplicate_of"]


@dataclass(frozen=True)
class PrepareResult:
    n_images: int
    n_rejected: int
    split_counts: dict[str, int]
    n_duplicates: int = 0
    n_dropped: int = 0


def _decode_all(files: pd.DataFrame, desc: str) -> tuple[pd.DataFrame, list[tuple]]:
    """Each file read and decoded once: (good rows with hashes and size, [(path, label, reason)])."""
    good, rejected = [], []
    rows = files.itertuples(index=False)
    for row in tqdm(rows, total=len(files), desc=desc, unit="file", mininterval=1.0):
        try:
            info = inspect(row.path)
        except ImageRejected as err:
            rejected.append((row.path, row.label, err.reason))
            continue
        good.append((row.image_id, row.path, row.label, row.split, info.sha256, info.pixel_sha256,
                     info.width, info.height))
    return pd.DataFrame(good, columns=COLUMNS[:-1]), rejected


def prepare(ds: Dataset, out_dir: Path, seed: int, name: str = "dataset") -> PrepareResult:
    """Prepare dataset entry `ds` into out_dir (its images/ holds what a torchvision source materialised)."""
    out_dir = Path(out_dir)
    if (out_dir / "images").exists():  # materialised images of an earlier run
        shutil.rmtree(out_dir / "images")
    listing = collect_files(ds, out_dir / "images")
    good, rejected = _decode_all(listing.files, f"prepare {name}")
    rejected = pd.concat([listing.rejected, pd.DataFrame(rejected, columns=REJECTED)], ignore_index=True)
    write_csv(out_dir / "rejected.csv", rejected)
    if good.empty:
        raise PipelineError(f"dataset {ds.root}: no decodable images; see {out_dir / 'rejected.csv'}")
    lost = sorted(set(listing.files["label"]) - set(good["label"]))
    if lost:
        raise PipelineError(f"dataset {ds.root}: class(es) {lost} have no decodable image (every file "
                            f"rejected; see {out_dir / 'rejected.csv'}); fix the files or remove the class")
    manifest, duplicates = splits.resolve(good, ds.val_fraction, ds.test_fraction, seed)
    write_csv(out_dir / "duplicates.csv", duplicates)
    write_parquet(out_dir / "manifest.parquet", manifest[COLUMNS])
    counts = {s: int((manifest["split"] == s).sum()) for s in SPLITS}
    return PrepareResult(len(manifest), len(rejected), counts, len(duplicates),
                         int((~duplicates["kept"].astype(bool)).sum()))
