"""Features on disk, in two layers.

- A feature set (the DVC output data/features/<set>/): float16 .npy shards in manifest order, index.parquet and
  meta.json; atomic writes, memory-mapped reads.
- The per-image store (<store>/<key_hash>/, outside DVC's outputs, shared by sets, runs and checkouts): append-only
  chunk files of (image sha256s, float16 rows), each with a checksum. It is what makes extraction incremental
  and resumable; a feature set is assembled from it.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from stages.atomic import atomic_path, write_json, write_parquet
from stages.errors import PipelineError
from stages.paths import Layout

META, INDEX, SHARDS = "meta.json", "index.parquet", "shards"
STORAGE_DTYPE = np.float16

STORE_ENV = "TRANSFERLAB_FEATURE_STORE"
DEFAULT_STORE = Path(".cache") / "features"
KEY_FILE, LOCK_FILE = "key.json", ".lock"
ID_DTYPE = np.dtype("S32")  # an image's raw sha256 digest
ROW_DTYPE = np.dtype("<f2")  # little-endian float16, whatever machine wrote the chunk
# Chunk header: magic, rows, dim, sha256 of everything after the header; padded to 64 bytes so rows stay aligned.
_HEADER = struct.Struct("<8sQQ32s8x")
_MAGIC = b"TLFCHNK1"


def key_hash(key: dict) -> str:
    """A stable digest of everything that determines the features."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def file_sha256(path: Path, offset: int = 0) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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

    The body of the public stages.features.load_features, here so that stages reading features (train_head,
    evaluate) do not import stages.features, which loads torch's DataLoader and torchvision to extract them."""
    feats, index = read(Layout(Path(root)).features(name))
    return feats, index[["image_id", "label", "split"]]


# ---- the per-image store ----------------------------------------------------------------------------------

def store_root(configured: str | None = None) -> Path:
    """Where the per-image store lives. Precedence: the feature set's `store` (params.yaml), then the
    TRANSFERLAB_FEATURE_STORE environment variable, then .cache/features. Relative paths are relative to the
    working directory, which is the repository root when DVC runs the stage."""
    return Path(configured or os.environ.get(STORE_ENV) or DEFAULT_STORE).expanduser()


def image_ids(hexes: Iterable[str]) -> np.ndarray:
    """Hex sha256 strings (the manifest's sha256 column) as raw 32-byte digests."""
    hexes = list(hexes)
    try:
        raw = b"".join(bytes.fromhex(h) for h in hexes)
    except (TypeError, ValueError):
        raw = b""
    if len(raw) != ID_DTYPE.itemsize * len(hexes):
        raise PipelineError("manifest sha256 values must be 64 hex digits each; re-run the prepare stage")
    return np.frombuffer(raw, ID_DTYPE)


@dataclass(frozen=True)
class Chunk:
    """One store file: header, then `n` image digests, then n × dim float16 rows."""

    path: Path
    n: int
    dim: int
    checksum: bytes

    def ids(self) -> np.ndarray:
        return np.fromfile(self.path, ID_DTYPE, count=self.n, offset=_HEADER.size)

    def rows(self) -> np.ndarray:
        offset = _HEADER.size + self.n * ID_DTYPE.itemsize
        return np.memmap(self.path, ROW_DTYPE, "r", offset=offset, shape=(self.n, self.dim))

    def verify(self) -> bool:
        return file_sha256(self.path, _HEADER.size) == self.checksum.hex()


def open_chunk(path: Path, dim: int) -> Chunk | str:
    """The chunk at path, or why it cannot be one (a damaged header or a size that does not add up)."""
    with open(path, "rb") as f:
        head = f.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return "truncated (incomplete header)"
    magic, n, file_dim, checksum = _HEADER.unpack(head)
    if magic != _MAGIC or file_dim != dim:
        return f"not a chunk of {dim}-dim features (damaged header)"
    expected = _HEADER.size + n * (ID_DTYPE.itemsize + dim * ROW_DTYPE.itemsize)
    if path.stat().st_size != expected:
        return f"truncated or padded ({path.stat().st_size} bytes, header says {expected})"
    return Chunk(path, n, dim, checksum)


def write_chunk(dest: Path, ids: np.ndarray, rows: np.ndarray) -> Chunk:
    """Write one chunk atomically. No fsync: a write torn by power loss fails its checksum and is recomputed."""
    ids = np.ascontiguousarray(ids, ID_DTYPE)
    rows = np.ascontiguousarray(rows, ROW_DTYPE)
    digest = hashlib.sha256(ids.tobytes())
    digest.update(rows.tobytes())
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            f.write(_HEADER.pack(_MAGIC, len(ids), rows.shape[1], digest.digest()))
            f.write(ids.tobytes())
            f.write(rows.tobytes())
    return Chunk(Path(dest), len(ids), rows.shape[1], digest.digest())


class StoreIndex:
    """Where each image digest lives among some chunks (the oldest chunk wins if two hold the same image)."""

    def __init__(self, chunks: list[Chunk], dim: int):
        self.chunks, self.dim = list(chunks), dim
        ids = np.concatenate([c.ids() for c in chunks]) if chunks else np.empty(0, ID_DTYPE)
        chunk_no = np.repeat(np.arange(len(chunks)), [c.n for c in chunks])
        row_no = np.concatenate([np.arange(c.n) for c in chunks]) if chunks else np.empty(0, np.int64)
        order = np.argsort(ids, kind="stable")
        self._ids, self._chunk, self._row = ids[order], chunk_no[order], row_no[order]

    def locate(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(chunk number, row) of each wanted digest; chunk number -1 where the store lacks the image."""
        if not len(self._ids):
            return np.full(len(wanted), -1), np.full(len(wanted), -1)
        pos = np.minimum(np.searchsorted(self._ids, wanted), len(self._ids) - 1)
        hit = self._ids[pos] == wanted
        return np.where(hit, self._chunk[pos], -1), np.where(hit, self._row[pos], -1)

    def gather(self, wanted: np.ndarray) -> np.ndarray:
        """The float16 rows of the wanted digests, in order (read from the memory-mapped chunks)."""
        chunk_no, row_no = self.locate(wanted)
        if (chunk_no < 0).any():
            raise LookupError(f"{int((chunk_no < 0).sum())} wanted images are not in the store")
        out = np.empty((len(wanted), self.dim), ROW_DTYPE)
        for c in np.unique(chunk_no):
            sel = chunk_no == c
            out[sel] = self.chunks[c].rows()[row_no[sel]]
        return out


class ChunkStore:
    """<root>/<key_hash>/: key.json and append-only chunk files holding the features of one key.

    Use it as a context manager: it holds <dir>/.lock (a filelock) throughout, so two processes never extract
    the same images at once; the second waits, then finds them present."""

    def __init__(self, root: Path, key: dict, dim: int):
        self.dir, self.key, self.dim = Path(root) / key_hash(key), key, dim
        self._lock = FileLock(self.dir / LOCK_FILE)

    def __enter__(self) -> ChunkStore:
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            print(f"waiting for {self.dir / LOCK_FILE}: another process is extracting these features",
                  file=sys.stderr, flush=True)
            self._lock.acquire()
        try:
            for tmp in self.dir.glob(".chunk-*.tmp"):  # we hold the lock, so the writer of this one was killed
                tmp.unlink(missing_ok=True)
            if not (self.dir / KEY_FILE).is_file():
                write_json(self.dir / KEY_FILE, self.key)
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()

    def chunks(self) -> list[Chunk]:
        """The chunks whose header and size are sound, oldest first; the others are reported and deleted."""
        found = []
        for path in sorted(self.dir.glob("chunk-*.bin")):
            chunk = open_chunk(path, self.dim)
            if isinstance(chunk, Chunk):
                found.append(chunk)
            else:
                self.discard(path, chunk)
        return found

    def discard(self, path: Path, why: str) -> None:
        print(f"warning: {path}: {why}; deleted, its images will be recomputed", file=sys.stderr, flush=True)
        Path(path).unlink(missing_ok=True)

    def index(self, wanted: np.ndarray) -> StoreIndex:
        """An index of the store in which every chunk that serves a wanted image has passed its checksum.
        Only those chunks are hashed: a run reads what it uses, not the whole (shared) store."""
        chunks, checked = self.chunks(), set()
        while True:
            index = StoreIndex(chunks, self.dim)
            serving = [chunks[i] for i in np.unique(index.locate(wanted)[0]) if i >= 0]
            unchecked = [c for c in serving if c.path not in checked]
            if not unchecked:
                return index
            for chunk in unchecked:  # a bad chunk may hide a good copy elsewhere: re-index and look again
                checked.add(chunk.path)
                if not chunk.verify():
                    self.discard(chunk.path, "checksum mismatch (corrupted)")
                    chunks.remove(chunk)

    def next_number(self) -> int:
        """The number the next chunk takes: names sort oldest first (chunk-<number>[-<run>-<shard>-<k>].bin)."""
        numbers = [int(n) for p in self.dir.glob("chunk-*.bin") if (n := p.stem.split("-")[1]).isdigit()]
        return max(numbers, default=0) + 1

    def append(self, ids: np.ndarray, rows: np.ndarray) -> Chunk:
        return write_chunk(self.dir / f"chunk-{self.next_number():08d}.bin", ids, rows)

    def import_sets(self, set_dirs: Iterable[Path], wanted: np.ndarray) -> dict[str, int]:
        """Copy into the store the rows of wanted images that finished feature sets of this same key hold, e.g.
        sets a `dvc pull` brought from a machine whose store this one lacks. -> set name: rows imported."""
        imported, missing = {}, np.unique(wanted)
        for set_dir in set_dirs:
            if not len(missing) or not (Path(set_dir) / META).is_file():
                continue
            if read_meta(set_dir).get("key_hash") != self.dir.name:
                continue
            feats, index = read(set_dir, verify=True)
            ids = image_ids(index["sha256"])
            pos = np.flatnonzero(np.isin(ids, missing))
            _, first = np.unique(ids[pos], return_index=True)
            pos = pos[np.sort(first)]
            for start in range(0, len(pos), 4096):
                part = pos[start:start + 4096]
                self.append(ids[part], np.asarray(feats[part]))
            if len(pos):
                imported[Path(set_dir).name] = int(len(pos))
                missing = np.setdiff1d(missing, ids[pos])
        return imported


class ShardChunks:
    """The chunk files of one shard of a sharded extraction, written by a Dask worker while the driver holds the
    store's lock. Names carry the run's reserved chunk number, a random run token and the shard number, so
    workers never collide (with each other or a worker orphaned by a killed run) and sort after older chunks."""

    def __init__(self, store_dir: Path | str, prefix: str):
        self.dir, self.prefix, self.count = Path(store_dir), prefix, 0

    def append(self, ids: np.ndarray, rows: np.ndarray) -> Chunk:
        self.count += 1
        return write_chunk(self.dir / f"chunk-{self.prefix}-{self.count:04d}.bin", ids, rows)

