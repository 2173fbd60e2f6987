"""The per-image feature store: <store>/<key_hash>/, outside DVC's outputs, shared by feature sets, runs and
checkouts. Append-only chunk files of (image sha256s, float16 rows), each with a checksum. It is what makes
extraction incremental and resumable; a feature set (transferlab.features.sets) is assembled from it."""
from __future__ import annotations

import hashlib
import os
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from transferlab.config.errors import PipelineError
from transferlab.features import sets
from transferlab.io.atomic import atomic_path, write_json
from transferlab.io.hashing import file_sha256, key_hash

STORE_ENV = "TRANSFERLAB_FEATURE_STORE"
DEFAULT_STORE = Path(".cache") / "features"
KEY_FILE, LOCK_FILE = "key.json", ".lock"
ID_DTYPE = np.dtype("S32")  # an image's raw sha256 digest
ROW_DTYPE = np.dtype("<f2")  # little-endian float16, whatever machine wrote the chunk
# Chunk header: magic, rows, dim, sha256 of everything after the header; padded to 64 bytes so rows stay aligned.
_HEADER = struct.Struct("<8sQQ32s8x")
_MAGIC = b"TLFCHNK1"


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

    def prune_damaged(self) -> list[Chunk]:
        """Delete (and report) the chunk files whose header or size is damaged -> the sound ones, oldest first."""
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

    def verified_index(self, wanted: np.ndarray) -> StoreIndex:
        """Check the chunks that serve a wanted image against their checksums, delete (and report) the damaged
        ones -> an index of the rest. Only those chunks are hashed: a run reads what it uses, not the whole
        (shared) store."""
        chunks, checked = self.prune_damaged(), set()
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
            if not len(missing) or not (Path(set_dir) / sets.META).is_file():
                continue
            if sets.read_meta(set_dir).get("key_hash") != self.dir.name:
                continue
            feats, index = sets.read(set_dir, verify=True)
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

