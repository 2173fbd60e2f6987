"""features.sets: a feature set on disk (float16 shards, index, meta.json), written and read back, and the
damage a read must catch. The set is real: a tiny random-init resnet18 over real digit images."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from tests.projects import tiny_layout
from transferlab import load_features
from transferlab.config.errors import PipelineError
from transferlab.config.params import FeatureSet
from transferlab.config.paths import Layout
from transferlab.features import sets
from transferlab.features.build import build

pytestmark = pytest.mark.usefixtures("private_store")


@pytest.fixture(scope="module")
def feature_set(tmp_path_factory, tiny_digits):
    """A 40-image feature set (one shard of 40 rows × 512) built from dataset tiny and backbone bb32."""
    layout = tiny_layout(tmp_path_factory.mktemp("proj"), tiny_digits)
    fs = FeatureSet(dataset="tiny", backbone="bb32", batch_size=16)
    build("f32", fs, pd.read_parquet(layout.manifest("tiny")), layout.backbone("bb32"), layout.features("f32"),
          torch.device("cpu"))
    return layout.features("f32")


def test_shard_writer_splits_and_reads_back(feature_set, tmp_path):
    feats, index = sets.read(feature_set)
    writer = sets.ShardWriter(tmp_path / "sharded", shard_rows=7)
    for start in range(0, 40, 3):  # uneven batches straddle the shard boundaries
        writer.add(np.asarray(feats[start:start + 3], np.float32))
    shards = writer.close()
    sets.write(tmp_path / "sharded", index, shards, {"dim": 512})
    assert [s["rows"] for s in shards] == [7] * 5 + [5]
    again, index2 = sets.read(tmp_path / "sharded", verify=True)
    assert np.array_equal(again, feats) and again.dtype == np.float16
    pd.testing.assert_frame_equal(index2, index)


def _copy_set(src, dest):
    shutil.copytree(src, dest)
    meta = sets.read_meta(dest)
    return dest / meta["shards"][0]["file"]


def test_truncated_shard_fails_checksum(feature_set, tmp_path):
    shard = _copy_set(feature_set, tmp_path / "copy")
    size = shard.stat().st_size
    with open(shard, "r+b") as f:
        f.truncate(size - 512)
    with pytest.raises(PipelineError, match="checksum"):
        sets.read(tmp_path / "copy", verify=True)


def test_shard_with_fewer_rows_than_meta(feature_set, tmp_path):
    shard = _copy_set(feature_set, tmp_path / "copy")
    arr = np.load(shard)
    np.save(shard, arr[:-3])
    with pytest.raises(PipelineError, match="37 rows, meta.json says 40"):
        sets.read(tmp_path / "copy")


def test_truncated_shard_without_verify(feature_set, tmp_path):
    shard = _copy_set(feature_set, tmp_path / "copy")
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size - 512)
    with pytest.raises(PipelineError):
        sets.read(tmp_path / "copy")


def test_incomplete_set_without_meta(feature_set, tmp_path):
    """A set whose shards and index are there but whose meta.json (written last) is not reads as incomplete."""
    incomplete = Layout(tmp_path).features("set")
    shutil.copytree(feature_set, incomplete)
    (incomplete / sets.META).unlink()
    assert (incomplete / sets.INDEX).is_file() and list((incomplete / sets.SHARDS).glob("shard-*.npy"))
    with pytest.raises(PipelineError, match="missing or incomplete"):
        load_features("set", tmp_path)
