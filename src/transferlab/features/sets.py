"""A feature set on disk (the DVC output data/features/<set>/): float16 .npy shards in manifest order,
index.parquet and meta.json; atomic writes, memory-mapped reads. `load_features` is the public reader.

The per-image store the sets are assembled from is transferlab.features.store."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from transferlab.config.errors import PipelineError
from transferlab.config.paths import FEATURES_INDEX, FEATURES_META, Layout
from transferlab.io.atomic import atomic_path, write_json, write_parquet
from transferlab.io.hashing import file_sha256

META, INDEX, SHARDS = FEATURES_META, FEATURES_INDEX, "shards"
STORAGE_DTYPE = np.float16


class ShardWriter:
    """Buffers feature rows and writes fixed-size shards atomically, so memory stays bounded."""

    def __init__(self, out_dir: Path, shard_rows: int = 4096):
        self.dir = Path(out_dir) / SHARDS
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shard_rows, self.buffer, self.shards = shard_rows, [], []
        self._buffered = 0

    def add(self, rows: np.ndarray) -> None:
        self.buffer.append(rows.astype(STORAGE_DTYPE, copy=False))
        self._buffered += len(rows)
        while self._buffered >= self.shard_rows:
            self._flush(self.shard_rows)

    def close(self) -> list[dict]:
        if self._buffered:
            self._flush(self._buffered)
        return self.shards

    def _flush(self, n: int) -> None:
        block = np.concatenate(self.buffer)
        head, rest = block[:n], block[n:]
        self.buffer, self._buffered = ([rest] if len(rest) else []), len(rest)
        dest = self.dir / f"shard-{len(self.shards):05d}.npy"
        with atomic_path(dest) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(head))
        self.shards.append({"file": f"{SHARDS}/{dest.name}", "rows": int(n), "sha256": file_sha256(dest)})


def write(out_dir: Path, index: pd.DataFrame, shards: list[dict], meta: dict) -> None:
    """Finish a feature set: the index and meta.json are written last, so a set without them is incomplete."""
    write_parquet(Path(out_dir) / INDEX, index)
    write_json(Path(out_dir) / META, {**meta, "shards": shards, "n": int(len(index))})
    listed = {Path(s["file"]).name for s in shards}
    for stale in (Path(out_dir) / SHARDS).glob("shard-*.npy"):  # left by an earlier, larger run
        if stale.name not in listed:
            stale.unlink()


def run_path(set_dir: Path) -> Path:
    """<set>.run.json beside the set's folder: what the set's last run did (store, executor, extracted, reused,
    imported, seconds). Outside the folder, which holds only what the numbers depend on, so the stages that
    read the set do not re-run when a run merely found its rows in the store, or took other seconds."""
    set_dir = Path(set_dir)
    return set_dir.with_name(set_dir.name + ".run.json")


def write_run(set_dir: Path, run: dict) -> None:
    write_json(run_path(set_dir), run)


def read_run(set_dir: Path) -> dict:
    return json.loads(run_path(set_dir).read_text())


def read_meta(set_dir: Path) -> dict:
    path = Path(set_dir) / META
    if not path.is_file():
        raise PipelineError(f"feature set {set_dir} is missing or incomplete (no {META}); "
                            "run `dvc repro` for its features stage")
    return json.loads(path.read_text())


def read_index(set_dir: Path) -> tuple[dict, pd.DataFrame]:
    """(meta, index) of a feature set, without touching its shards (for stages that need only the rows)."""
    return read_meta(set_dir), pd.read_parquet(Path(set_dir) / INDEX)


def read(set_dir: Path, verify: bool = False) -> tuple[np.ndarray, pd.DataFrame]:
    """(features N×D float16, index) of a feature set; shards are memory-mapped."""
    set_dir = Path(set_dir)
    meta = read_meta(set_dir)
    parts = []
    for shard in meta["shards"]:
        path = set_dir / shard["file"]
        if verify and file_sha256(path) != shard["sha256"]:
            raise PipelineError(f"{path}: checksum mismatch (corrupted); re-run its features stage with "
                                "`dvc repro --force features@<name>`")
        try:
            arr = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as err:
            raise PipelineError(f"{path}: truncated or unreadable ({err}); re-run its features stage") from None
        if arr.shape[0] != shard["rows"]:
            raise PipelineError(f"{path}: has {arr.shape[0]} rows, meta.json says {shard['rows']}; "
                                "re-run its features stage")
        parts.append(arr)
    index = pd.read_parquet(set_dir / INDEX)
    feats = parts[0] if len(parts) == 1 else (np.concatenate(parts) if parts
                                              else np.zeros((0, meta["dim"]), STORAGE_DTYPE))
    if len(feats) != len(index):
        raise PipelineError(f"feature set {set_dir}: {len(feats)} feature rows but {len(index)} index rows")
    return feats, index


def load_features(name: str, root: str | Path = ".") -> tuple[np.ndarray, pd.DataFrame]:
    """A cached feature set: (features N×D float16, DataFrame with image_id, label, split in row order).

    Loads no torch: a tasks@<set> run that fits only heads on features starts without it."""
    feats, index = read(Layout(Path(root)).features(name))
    return feats, index[["image_id", "label", "split"]]
