"""timm backbones (transferlab.models.timm_backbones): random init, a local state dict, the pretrained tag through
timm's real loader and a planted Hugging Face cache (network off), preprocessing from the model's config, and
the pooled or block readouts of the features."""
from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import yaml
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from tests.conftest import ENV, SMALL_PARAMS
from tests.projects import plant_hf_repo
from transferlab.config.errors import PipelineError
from transferlab.config.params import Backbone, FeatureSet, parse
from transferlab.config.paths import Layout
from transferlab.features import sets
from transferlab.features.build import build
from transferlab.models import backbones

VIT, CNN = "test_vit.r160_in1k", "test_resnet.r160_in1k"
CPU = torch.device("cpu")


def test_random_init_records_the_models_own_preprocessing(tmp_path):
    info = backbones.create("v", Backbone(source="timm", arch=VIT), tmp_path / "v", seed=0)
    cfg = timm.data.resolve_model_data_config(timm.create_model(VIT))
    assert (info.library, info.arch, info.source) == ("timm", VIT, {"kind": "random", "seed": 0})
    assert info.preprocessing == {"crop_size": 160, "resize_size": math.floor(160 / cfg["crop_pct"]),
                                  "interpolation": "bicubic", "antialias": True,
                                  "mean": list(cfg["mean"]), "std": list(cfg["std"])}
    assert (info.classifier, info.num_classes, info.feature_dim) == ("head", 1000, 64)
    again = backbones.create("v", Backbone(source="timm", arch=VIT), tmp_path / "again", seed=0)
    assert again.fingerprint == info.fingerprint  # seeded: the same weights


def test_keys_set_in_params_override_the_models_config(tmp_path):
    info = backbones.create("v", Backbone(source="timm", arch=VIT, image_size=32, interpolation="bilinear"),
                            tmp_path / "v", seed=0)
    assert info.model_kwargs == {"img_size": 32}  # a ViT's position embeddings are built for its input size
    assert (info.preprocessing["crop_size"], info.preprocessing["interpolation"]) == (32, "bilinear")
    trunk, _ = backbones.load_trunk(tmp_path / "v")
    with torch.no_grad():
        assert trunk.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 64)


def test_an_unknown_name_is_named_with_the_nearest_ones(tmp_path):
    with pytest.raises(PipelineError) as err:
        backbones.create("dino", Backbone(source="timm", arch="vit_small_patch14_dinov3.lvd142m"), tmp_path, 0)
    assert "backbones.dino.arch" in str(err.value) and "vit_small_patch14_dinov2.lvd142m" in str(err.value)
    with pytest.raises(PipelineError, match="test_vit"):
        backbones.create("t", Backbone(source="timm", arch="test_vitt"), tmp_path, 0)


def test_weights_values_follow_the_source():
    with pytest.raises(ValidationError, match="weights pretrained is for source timm"):
        Backbone(arch="resnet18", weights="pretrained")
    with pytest.raises(ValidationError, match="a timm backbone takes pretrained"):
        Backbone(source="timm", arch=VIT, weights="IMAGENET1K_V1")


def test_a_local_state_dict_is_what_gets_saved(tmp_path):
    torch.manual_seed(7)
    planted = timm.create_model(CNN, num_classes=3).state_dict()
    save_file(planted, tmp_path / "w.safetensors")
    info = backbones.create("c", Backbone(source="timm", arch=CNN, weights=str(tmp_path / "w.safetensors")),
                            tmp_path / "c", seed=0)
    saved = load_file(tmp_path / "c" / backbones.WEIGHTS_FILE)
    assert set(saved) == set(planted) and all(torch.equal(saved[k], v) for k, v in planted.items())
    assert (info.num_classes, info.source["kind"]) == (3, "file")


def run_stage(root: Path, stage: str, name: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"stages.{stage}", name], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)


def test_pretrained_weights_come_from_the_hugging_face_cache_offline(tiny_prepared, tmp_path):
    """The real loader (timm -> huggingface_hub) finds a planted checkpoint with the network off, and those
    weights, not random ones, are what extract the features."""
    torch.manual_seed(1234)
    planted = timm.create_model(VIT).state_dict()
    plant_hf_repo(tmp_path / "hub", timm.models.get_pretrained_cfg(VIT).hf_hub_id,
                  {"model.safetensors": lambda p: save_file(planted, p)})
    root = tiny_prepared
    params = {**copy.deepcopy(SMALL_PARAMS), "pretrain": {}, "features": {}, "tasks": {},
              "backbones": {"vit": {"source": "timm", "arch": VIT, "weights": "pretrained", "image_size": 32},
                            "vit-random": {"source": "timm", "arch": VIT, "weights": "none", "image_size": 32}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**ENV, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    for name in ("vit", "vit-random"):
        proc = run_stage(root, "backbone", name, env)
        assert proc.returncode == 0, proc.stderr
    layout = Layout(root)
    saved = load_file(layout.backbone("vit") / backbones.WEIGHTS_FILE)
    pos = "pos_embed"  # resized to the 32-pixel grid by timm's loader: compare every other tensor exactly
    assert all(torch.equal(saved[k], v) for k, v in planted.items() if k != pos)
    info = backbones.read_info(layout.backbone("vit"))
    assert info.source == {"kind": "timm", "weights": VIT, "hf_hub_id": f"timm/{VIT}"}

    manifest = pd.read_parquet(layout.manifest("tiny"))
    feats = {}
    for name in ("vit", "vit-random"):
        build(name, FeatureSet(dataset="tiny", backbone=name, precision="float32"), manifest,
              layout.backbone(name), layout.features(name), CPU, store_dir=tmp_path / "store")
        feats[name] = np.asarray(sets.read(layout.features(name))[0], dtype=np.float32)
    # the planted weights' own features, computed here without the pipeline
    model = timm.create_model(VIT, num_classes=0, img_size=32)
    model.load_state_dict({k: v for k, v in saved.items() if not k.startswith("head.")})
    from transferlab.data.transforms import ImageFiles, transform

    images = ImageFiles(manifest["path"][:4], [0] * 4, transform(info.preprocessing))
    with torch.no_grad():
        want = model.eval()(torch.stack([images[i][0] for i in range(4)])).numpy()
    np.testing.assert_allclose(feats["vit"][:4], want, rtol=2e-3, atol=2e-3)  # float16 storage
    assert not np.allclose(feats["vit-random"][:4], want, atol=1e-2)


def test_missing_pretrained_weights_fail_on_one_line_offline(tiny_prepared, tmp_path):
    root = tmp_path / "p"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(
        {**copy.deepcopy(SMALL_PARAMS), "pretrain": {}, "features": {}, "tasks": {},
         "backbones": {"vit": {"source": "timm", "arch": VIT, "weights": "pretrained"}}}))
    proc = run_stage(root, "backbone", "vit", {**ENV, "HF_HUB_CACHE": str(tmp_path / "empty"),
                                               "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2  # a user error (transferlab.config.errors)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"timm/{VIT}" in lines[0] and "Hugging Face cache" in lines[0], proc.stderr


@pytest.mark.parametrize("arch,pooling,blocks,dim", [(VIT, "model", 1, 64), (VIT, "cls", 2, 128),
                                                     (VIT, "mean", 1, 64), (VIT, "cls+mean", 2, 192),
                                                     (CNN, "mean", 2, 192 + 96)])
def test_readouts_have_the_width_they_announce(tmp_path, arch, pooling, blocks, dim):
    info = backbones.create("m", Backbone(source="timm", arch=arch, image_size=32), tmp_path / "m", seed=0)
    layer, width = backbones.readout(info, pooling, blocks)
    trunk, _ = backbones.load_trunk(tmp_path / "m", pooling, blocks)
    with torch.no_grad():
        assert trunk.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, width) and width == dim
    assert layer == ("pre_logits" if pooling == "model" else f"{pooling} of the last {blocks} blocks")


def test_cls_pooling_of_one_block_is_the_models_own_pre_logits(tmp_path):
    backbones.create("v", Backbone(source="timm", arch=VIT, image_size=32), tmp_path / "v", seed=0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pooled = backbones.load_trunk(tmp_path / "v")[0].eval()(x)
        cls = backbones.load_trunk(tmp_path / "v", "cls", 1)[0].eval()(x)
    torch.testing.assert_close(cls, pooled)


def test_pooling_that_a_model_lacks_fails_on_one_line(tmp_path):
    info = backbones.create("c", Backbone(source="timm", arch=CNN, image_size=32), tmp_path / "c", seed=0)
    with pytest.raises(PipelineError, match="class token"):
        backbones.readout(info, "cls", 1)
    params = copy.deepcopy(SMALL_PARAMS)
    params["features"]["digits-random"]["pooling"] = "cls"  # a torchvision backbone
    with pytest.raises(PipelineError, match="features.digits-random.pooling: 'cls' does not read random, a "
                                            "torchvision model; it takes pooling model or mean"):
        parse(params)
    with pytest.raises(ValidationError, match="blocks is for pooling"):
        FeatureSet(dataset="d", backbone="v", blocks=2)


def test_two_readouts_of_one_model_never_share_rows(tiny_prepared, tmp_path):
    """Other layers or pooling, another feature key: each set extracts its own rows into its own store."""
    layout = Layout(tiny_prepared)
    backbones.create("v32", Backbone(source="timm", arch=VIT, image_size=32), layout.backbone("v32"), seed=0)
    manifest = pd.read_parquet(layout.manifest("tiny"))
    results, metas = {}, {}
    for name, pooling, blocks in (("pooled", "model", 1), ("dino", "cls+mean", 2), ("dino1", "cls+mean", 1)):
        fs = FeatureSet(dataset="tiny", backbone="v32", pooling=pooling, blocks=blocks)
        results[name] = build(name, fs, manifest, layout.backbone("v32"), layout.features(name), CPU,
                              store_dir=tmp_path / "store")
        metas[name] = sets.read_meta(layout.features(name))
    assert all(r.extracted == len(manifest) for r in results.values())  # none reused another's rows
    assert len({m["key_hash"] for m in metas.values()}) == 3
    assert (metas["pooled"]["dim"], metas["dino"]["dim"], metas["dino1"]["dim"]) == (64, 192, 128)
    assert metas["dino"]["key"]["layer"] == "cls+mean of the last 2 blocks"
    assert metas["dino"]["key"]["timm"] == timm.__version__
    assert metas["dino"]["readout"] == {"pooling": "cls+mean", "blocks": 2}
    again = build("dino", FeatureSet(dataset="tiny", backbone="v32", pooling="cls+mean", blocks=2), manifest,
                  layout.backbone("v32"), layout.features("dino"), CPU, store_dir=tmp_path / "store")
    assert (again.extracted, again.reused) == (0, len(manifest))
    json.dumps(metas)  # meta.json stays plain JSON
