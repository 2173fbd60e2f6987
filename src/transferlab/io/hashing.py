"""Content digests: of files (weights, shards, code), and of JSON-able descriptions (feature keys, runs)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path


def file_sha256(path: Path | str, offset: int = 0) -> str:
    """The sha256 of a file's bytes from `offset` on, read a MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def key_hash(key: dict) -> str:
    """A stable digest of everything that determines an artifact (the feature store's folder name)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def fingerprint(parts: dict) -> str:
    """A short stable hash of a JSON-able description of a run (objects by their str)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]
