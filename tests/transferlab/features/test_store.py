"""The per-image feature store: keyed reuse, incremental extraction, resume after kill -9, corruption, locking.

Real (tiny, random-init) resnet18s over real digit images; every test gets its own store folder.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import REPO
from tests.projects import subset_imagefolder, tiny_layout
from transferlab import load_features
from transferlab.config.params import Dataset, FeatureSet
from transferlab.config.paths import Layout
from transferlab.data.prepare import prepare
from transferlab.features import sets
from transferlab.features import store as feature_store
from transferlab.features.build import build

CPU = torch.device("cpu")
FS = FeatureSet(dataset="tiny", backbone="bb32", batch_size=4)


pytestmark = pytest.mark.usefixtures("private_store")


@pytest.fixture(scope="module")
def proj(tmp_path_factory, tiny_digits) -> Layout:
    """Dataset tiny (40 images) and backbones bb32 / bb24."""
    return tiny_layout(tmp_path_factory.mktemp("proj"), tiny_digits)


@pytest.fixture(scope="module")
def reference(proj, tmp_path_factory) -> np.ndarray:
    """tiny × bb32 extracted in one uninterrupted run into a fresh store."""
    out = tmp_path_factory.mktemp("ref") / "f"
    build("f", FS, manifest(proj), proj.backbone("bb32"), out, CPU, store_dir=out.parent / "store")
    return np.array(sets.read(out, verify=True)[0])


def manifest(layout: Layout, dataset: str = "tiny") -> pd.DataFrame:
    return pd.read_parquet(layout.manifest(dataset))


def extract(layout: Layout, store: Path | None, name: str = "f", fs: FeatureSet = FS, **kw):
    """Run the features stage for `name` in `layout`; (result, meta.json with the run's record, features as a
    plain array)."""
    res = build(name, fs, manifest(layout, fs.dataset), layout.backbone(fs.backbone), layout.features(name), CPU,
                store_dir=store, **kw)
    feats, _ = load_features(name, layout.root)
    meta = {**sets.read_meta(layout.features(name)), **sets.read_run(layout.features(name))}
    return res, meta, np.array(feats)


def chunk_files(store: Path) -> list[Path]:
    return sorted(store.glob("*/chunk-*.bin"))


# --- keyed reuse -------------------------------------------------------------------------------------------

def test_two_feature_sets_with_one_key_share_the_store(proj, reference, tmp_path):
    """Two tasks reading two feature sets over the same images and backbone: the second costs nothing."""
    store = tmp_path / "store"
    _, meta_a, a = extract(proj, store, "for-task-a")
    other = FeatureSet(dataset="tiny", backbone="bb32", batch_size=4, num_workers=0)
    _, meta_b, b = extract(proj, store, "for-task-b", other)
    assert (meta_a["extracted"], meta_a["reused"]) == (40, 0)
    assert (meta_b["extracted"], meta_b["reused"]) == (0, 40)
    assert a.tobytes() == b.tobytes() == reference.tobytes()


def test_two_checkouts_share_one_store(proj, reference, tmp_path, monkeypatch):
    """Checkout A finds the store through the environment, checkout B through params (which wins)."""
    shared = tmp_path / "shared"
    other = Layout(tmp_path / "checkout-b")
    for part in (proj.prepared("tiny"), proj.backbone("bb32")):
        shutil.copytree(part, other.root / part.relative_to(proj.root))
    monkeypatch.setenv(feature_store.STORE_ENV, str(shared))
    _, meta_a, a = extract(proj, None)
    monkeypatch.setenv(feature_store.STORE_ENV, str(tmp_path / "not-this-one"))
    _, meta_b, b = extract(other, None, fs=FS.model_copy(update={"store": str(shared)}))
    assert (meta_a["extracted"], meta_b["extracted"], meta_b["reused"]) == (40, 0, 40)
    assert Path(meta_b["store"]).parent == shared and not (tmp_path / "not-this-one").exists()
    assert a.tobytes() == b.tobytes() == reference.tobytes()


def test_store_root_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv(feature_store.STORE_ENV)
    assert feature_store.store_root(None) == Path(".cache/features")
    monkeypatch.setenv(feature_store.STORE_ENV, str(tmp_path / "env"))
    assert feature_store.store_root(None) == tmp_path / "env"
    assert feature_store.store_root(str(tmp_path / "params")) == tmp_path / "params"


def test_default_store_is_dot_cache_under_the_working_directory(proj, tmp_path, monkeypatch):
    monkeypatch.delenv(feature_store.STORE_ENV)
    monkeypatch.chdir(tmp_path)
    _, meta, _ = extract(proj, None, "default-store")
    assert Path(meta["store"]).parent == Path(".cache/features")
    assert len(chunk_files(tmp_path / ".cache" / "features")) == 1


def test_a_preprocessing_change_misses(proj, tmp_path):
    store = tmp_path / "store"
    _, meta32, _ = extract(proj, store, "f32")
    _, meta24, f24 = extract(proj, store, "f24", FS.model_copy(update={"backbone": "bb24"}))
    assert meta24["key"]["preprocessing"]["crop_size"] == 24
    assert (meta24["extracted"], meta24["reused"]) == (40, 0)
    assert meta24["key_hash"] != meta32["key_hash"] and len(chunk_files(store)) == 2


def test_another_forward_batch_size_misses(proj, tmp_path):
    # measured on CPU: most images give other float16 values alone than in a batch of 2 or more
    store = tmp_path / "store"
    extract(proj, store, "b4")
    _, meta, _ = extract(proj, store, "b1", FS.model_copy(update={"batch_size": 1}))
    assert (meta["extracted"], meta["reused"]) == (40, 0)


# --- incremental -------------------------------------------------------------------------------------------

def test_appending_images_extracts_only_the_new_ones(proj, digits_root, tmp_path):
    for name, per_class in (("v1", 3), ("v2", 5)):
        folder = subset_imagefolder(digits_root, tmp_path / name, range(10), per_class)
        prepare(Dataset(source="imagefolder", root=str(folder)), proj.prepared(name), seed=0)
    v1, v2 = manifest(proj, "v1"), manifest(proj, "v2")
    new = set(v2["sha256"]) - set(v1["sha256"])
    assert len(new) >= 15  # a few digit images may be byte-identical duplicates; each is computed once
    store = tmp_path / "store"
    extract(proj, store, "f-v1", FS.model_copy(update={"dataset": "v1"}))
    _, meta, grown = extract(proj, store, "f-v2", FS.model_copy(update={"dataset": "v2"}))
    assert meta["extracted"] == len(new)
    assert meta["reused"] == int(v2["sha256"].isin(set(v1["sha256"])).sum())
    _, fresh_meta, fresh = extract(proj, tmp_path / "fresh", "f-fresh", FS.model_copy(update={"dataset": "v2"}))
    assert fresh_meta["reused"] == 0
    assert grown.tobytes() == fresh.tobytes()  # old rows came from other batches: the values must not care


def test_growing_one_image_at_a_time_matches_a_fresh_run(proj, reference, tmp_path):
    """Each run below has a batch with a single image; alone in a forward pass, most digit images give other
    float16 values than in a batch of 4 (measured), unless the batch is padded to its full size."""
    store, full = tmp_path / "store", manifest(proj)
    for k in range(1, 11):
        res = build("grow", FS, full.iloc[:k], proj.backbone("bb32"), tmp_path / "grow", CPU, store_dir=store)
        assert (res.extracted, res.reused) == (1, k - 1)
    _, meta, feats = extract(proj, store, "grown")
    assert (meta["extracted"], meta["reused"]) == (30, 10)
    assert feats.tobytes() == reference.tobytes()


# --- resume after kill -9 ----------------------------------------------------------------------------------

CHILD = """
import json, sys, time
from pathlib import Path
import pandas as pd, torch
from transferlab.config.params import FeatureSet
from transferlab.config.paths import Layout
from transferlab.data import transforms
from transferlab.features.build import build
args = json.loads(sys.argv[1])
layout = Layout(args["root"])
get = transforms.ImageFiles.__getitem__
def slow(self, i):  # so that a kill lands in the middle of extraction, not after it
    time.sleep(args["delay"])
    return get(self, i)
transforms.ImageFiles.__getitem__ = slow
Path(args["ready"]).touch()
while not all(Path(p).exists() for p in args["wait_for"]):  # start both children's runs together
    time.sleep(0.01)
res = build(args["name"], FeatureSet(**args["fs"]), pd.read_parquet(layout.manifest("tiny")),
            layout.backbone("bb32"), layout.features(args["name"]), torch.device("cpu"),
            store_dir=args["store"], chunk_rows=args["chunk_rows"])
print(json.dumps({"extracted": res.extracted, "reused": res.reused}))
"""


def child(name: str, layout: Layout, store: Path, ready: Path, wait_for: list[Path], delay: float,
          chunk_rows: int = 8) -> subprocess.Popen:
    """The features stage in another process, each image slowed by `delay` seconds; it starts extracting
    once every file in `wait_for` exists."""
    args = {"name": name, "root": str(layout.root), "store": str(store), "chunk_rows": chunk_rows, "delay": delay,
            "ready": str(ready), "wait_for": [str(p) for p in wait_for], "fs": FS.model_dump()}
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}"}
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_9_mid_extraction_then_rerun_is_bit_identical(proj, reference, tmp_path):
    store = tmp_path / "store"
    proc = child("killed", proj, store, tmp_path / "ready", [], delay=0.05)
    deadline = time.monotonic() + 120
    while not chunk_files(store) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    stored = sum(feature_store.open_chunk(p, 512).n for p in chunk_files(store))
    assert 8 <= stored < 40  # killed after its first chunk, long before its last
    key_dir = chunk_files(store)[0].parent
    (key_dir / ".chunk-00000099.bin.x.tmp").write_bytes(b"half a chunk")  # as a kill during a write leaves
    out = tmp_path / "rerun"
    res = build("f", FS, manifest(proj), proj.backbone("bb32"), out, CPU, store_dir=store, chunk_rows=8)
    assert (res.extracted, res.reused) == (40 - stored, stored)
    assert not list(key_dir.glob(".*.tmp"))
    assert np.array(sets.read(out, verify=True)[0]).tobytes() == reference.tobytes()


# --- integrity ---------------------------------------------------------------------------------------------

def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset:offset + 4] = bytes(b ^ 0xFF for b in data[offset:offset + 4])
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 100)


DAMAGE = {
    "rows flipped": lambda p: _flip(p, p.stat().st_size - 300),
    "ids flipped": lambda p: _flip(p, 64 + 40),
    "header flipped": lambda p: _flip(p, 0),
    "truncated": _truncate,
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_chunk_is_reported_deleted_and_recomputed(proj, reference, tmp_path, capfd, damage):
    store = tmp_path / "store"
    extract(proj, store, "first", chunk_rows=16)
    chunks = chunk_files(store)
    assert len(chunks) == 3  # 16 + 16 + 8 rows
    DAMAGE[damage](chunks[1])
    capfd.readouterr()
    res, meta, feats = extract(proj, store, "again", chunk_rows=16)
    err = capfd.readouterr().err
    assert f"warning: {chunks[1]}" in err and "recomputed" in err, err
    assert (res.extracted, res.reused) == (16, 24)
    assert feats.tobytes() == reference.tobytes()
    _, meta, _ = extract(proj, store, "third", chunk_rows=16)  # the store is whole again, without warnings
    assert (meta["extracted"], meta["reused"]) == (0, 40) and "warning" not in capfd.readouterr().err


# --- two processes at once ---------------------------------------------------------------------------------

def test_two_concurrent_extractions_compute_once(proj, reference, tmp_path):
    store, ready = tmp_path / "store", [tmp_path / "ready-0", tmp_path / "ready-1"]
    procs = [child("concurrent", proj, store, ready[i], ready, delay=0.05) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    counts = sorted((json.loads(out.splitlines()[-1])["extracted"] for out, _ in outs))
    assert counts == [0, 40], outs
    assert sum("waiting for" in err for _, err in outs) == 1, outs  # the second one really waited
    feats, _ = sets.read(proj.features("concurrent"), verify=True)
    assert np.array(feats).tobytes() == reference.tobytes()
    assert sum(feature_store.open_chunk(p, 512).n for p in chunk_files(store)) == 40
