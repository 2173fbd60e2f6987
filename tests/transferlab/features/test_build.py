"""features.build: a real (tiny, random-init) resnet18 over real digit images, cached as float16 shards."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from tests.projects import tiny_layout
from transferlab import load_features
from transferlab.config.params import FeatureSet
from transferlab.data import images, transforms
from transferlab.features import sets
from transferlab.features.build import build
from transferlab.features.key import compute_dtype_name
from transferlab.io.hashing import key_hash
from transferlab.models import backbones, devices

CPU = torch.device("cpu")
FS = FeatureSet(dataset="tiny", backbone="bb32", batch_size=16)


pytestmark = pytest.mark.usefixtures("private_store")


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_digits):
    """Dataset tiny, backbones bb32 / bb24, and one feature set, in a tmp layout."""
    layout = tiny_layout(tmp_path_factory.mktemp("proj"), tiny_digits)
    manifest = pd.read_parquet(layout.manifest("tiny"))
    res = build("f32", FS, manifest, layout.backbone("bb32"), layout.features("f32"), CPU)
    return layout, manifest, res


def test_load_features_shape_dtype_and_order(project):
    layout, manifest, res = project
    feats, index = load_features("f32", layout.root)
    assert len(manifest) == 40
    assert feats.dtype == np.float16 and feats.shape == (40, 512) == (res.n, res.dim)
    assert list(index.columns) == ["image_id", "label", "split"]
    pd.testing.assert_frame_equal(index, manifest[["image_id", "label", "split"]].reset_index(drop=True))
    assert np.isfinite(feats).all() and feats.std(0).max() > 0


def _trunk_rows(layout, manifest, rows: list[int], dtype: torch.dtype | None = None) -> np.ndarray:
    """The trunk's own features for `rows`, in one plain forward pass (fp32, or under autocast `dtype`)."""
    trunk, info = backbones.load_trunk(layout.backbone("bb32"))
    tf = transforms.transform(info.preprocessing)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        x = torch.stack([tf(images.decode(manifest["path"].iloc[i])) for i in rows])
        return trunk.eval()(x).float().numpy()


def test_float32_rows_are_the_trunks_features_of_each_image(project, tmp_path):
    layout, manifest, _ = project
    fs = FS.model_copy(update={"precision": "float32"})
    res = build("f32", fs, manifest, layout.backbone("bb32"), tmp_path / "fp32", CPU)
    feats, _ = sets.read(tmp_path / "fp32")
    rows = [0, 17, 39]
    np.testing.assert_allclose(feats[rows].astype(np.float32), _trunk_rows(layout, manifest, rows),
                               rtol=2e-3, atol=2e-3)
    meta = json.loads((tmp_path / "fp32" / sets.META).read_text())
    assert meta["key"]["compute_dtype"] == "float32" and meta["key"]["memory_format"] == "channels_last"
    assert res.key_hash != project[2].key_hash or compute_dtype_name(CPU) == "float32"


@pytest.mark.skipif(not devices.cpu_has_bf16(), reason="this CPU has no native bf16: auto means float32 here")
def test_auto_precision_is_bf16_on_a_bf16_cpu(project, tmp_path):
    """precision auto computes in bf16 here: close to the fp32 features (a linear probe cannot tell), not
    equal to them, and keyed apart from a float32 set of the same images."""
    layout, manifest, res = project
    feats, _ = load_features("f32", layout.root)
    key = json.loads((layout.features("f32") / sets.META).read_text())["key"]
    assert key["compute_dtype"] == "bfloat16" and key["memory_format"] == "channels_last"
    rows = list(range(40))
    fp32 = _trunk_rows(layout, manifest, rows)
    got = feats.astype(np.float32)
    cos = (got * fp32).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(fp32, axis=1)
    assert cos.min() > 0.99, cos.min()
    assert not np.allclose(got, fp32, rtol=2e-3, atol=2e-3)  # bf16 really ran
    np.testing.assert_allclose(got[[0, 17]], _trunk_rows(layout, manifest, [0, 17], torch.bfloat16),
                               rtol=0.05, atol=0.05)
    fp32_set = build("f32", FS.model_copy(update={"precision": "float32"}), manifest,
                     layout.backbone("bb32"), tmp_path / "fp32", CPU, store_dir=tmp_path / "store")
    assert fp32_set.key_hash != res.key_hash and fp32_set.extracted == 40


def test_rerun_is_bit_identical(project, tmp_path):
    layout, manifest, res = project
    again = tmp_path / "again"
    res2 = build("f32", FS, manifest, layout.backbone("bb32"), again, CPU)
    a, _ = sets.read(layout.features("f32"), verify=True)
    b, _ = sets.read(again, verify=True)
    assert a.tobytes() == b.tobytes()
    assert res2.key_hash == res.key_hash and (res.extracted, res2.extracted, res2.reused) == (40, 0, 40)
    # every file of the set is the same bytes whether its run extracted or reused: DVC sees no change
    files = sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(layout.features("f32")) for p in layout.features("f32").rglob("*")
                           if p.is_file())
    assert all((again / f).read_bytes() == (layout.features("f32") / f).read_bytes() for f in files)


def test_meta_holds_the_key(project):
    layout, _, res = project
    meta = json.loads((layout.features("f32") / sets.META).read_text())
    info = backbones.read_info(layout.backbone("bb32"))
    key = meta["key"]
    assert key["backbone_fingerprint"] == info.fingerprint
    assert key["preprocessing"] == info.preprocessing and key["preprocessing"]["crop_size"] == 32
    assert key["torch"] == torch.__version__ and "torchvision" in key
    assert key["storage_dtype"] == "float16" and key["compute_dtype"] == compute_dtype_name(CPU)
    assert key["memory_format"] == "channels_last"
    assert key["device"] == "cpu" and key["forward_batch_size"] == 16
    assert meta["key_hash"] == key_hash(key) == res.key_hash
    assert (meta["n"], meta["dim"], meta["dataset"], meta["backbone"]) == (40, 512, "tiny", "bb32")
    assert sum(s["rows"] for s in meta["shards"]) == 40
    # what the run did is beside the set, not in it: a re-run that only reuses rows leaves the set's bytes alone
    assert not {"extracted", "reused", "seconds", "store", "executor"} & set(meta)
    run = json.loads(layout.features_run("f32").read_text())
    assert layout.features_run("f32") == sets.run_path(layout.features("f32"))
    assert (run["extracted"], run["reused"], run["executor"]) == (40, 0, "local") and run["seconds"] > 0

