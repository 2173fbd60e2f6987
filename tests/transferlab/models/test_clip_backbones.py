"""OpenCLIP backbones (transferlab.models.clip_backbones): a model config, an hf-hub repository found through
OpenCLIP's real loader in a planted Hugging Face cache (network off), the image tower as the trunk, and the
folder OpenCLIP itself can load."""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from tests.conftest import ENV, SMALL_PARAMS
from tests.projects import TINY_CLIP, plant_hf_repo, tiny_clip_config
from transferlab.config.errors import PipelineError
from transferlab.config.params import Backbone, FeatureSet
from transferlab.config.paths import Layout
from transferlab.data.transforms import ImageFiles, transform
from transferlab.features import sets
from transferlab.features.build import build
from transferlab.models import backbones, clip_backbones

CPU = torch.device("cpu")


def test_a_model_config_builds_a_seeded_clip(tmp_path):
    config = tiny_clip_config(tmp_path / "configs")
    info = backbones.create("clip", Backbone(source="open_clip", arch=str(config)), tmp_path / "clip", seed=0)
    assert (info.library, info.feature_dim, info.classifier, info.num_classes) == ("open_clip", 32, "", 0)
    assert info.preprocessing == {"crop_size": 32, "resize_size": 32, "interpolation": "bicubic",
                                  "antialias": True, "mean": list(open_clip.OPENAI_DATASET_MEAN),
                                  "std": list(open_clip.OPENAI_DATASET_STD)}
    # the folder is an OpenCLIP local-dir: folder, and the trunk is the image tower (encode_image)
    theirs = open_clip.create_model(f"local-dir:{tmp_path / 'clip'}").eval()
    trunk, _ = backbones.load_trunk(tmp_path / "clip")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(trunk.eval()(x), theirs.encode_image(x))
    again = backbones.create("clip", Backbone(source="open_clip", arch=str(config)), tmp_path / "again", seed=0)
    assert again.fingerprint == info.fingerprint


def test_unknown_names_and_tags_are_named_with_the_known_ones(tmp_path):
    with pytest.raises(PipelineError) as err:
        backbones.create("c", Backbone(source="open_clip", arch="ViT-B-33"), tmp_path / "c", seed=0)
    assert "backbones.c.arch" in str(err.value) and "ViT-B-32" in str(err.value)
    with pytest.raises(PipelineError) as err:
        backbones.create("c", Backbone(source="open_clip", arch="ViT-B-32", weights="laion9b"), tmp_path / "c", 0)
    assert "backbones.c.weights" in str(err.value) and "laion2b_s34b_b79k" in str(err.value)


def test_image_size_is_the_models_own(tmp_path):
    with pytest.raises(PipelineError, match="takes 32 px images"):
        backbones.create("c", Backbone(source="open_clip", arch=str(tiny_clip_config(tmp_path)), image_size=64),
                         tmp_path / "c", seed=0)


def test_hub_weights_come_from_the_hugging_face_cache_offline(tiny_prepared, tmp_path):
    """OpenCLIP's real loader (hf-hub: -> huggingface_hub) finds a planted repository with the network off, and
    its weights, not random ones, are what extract the features."""
    torch.manual_seed(1234)
    theirs = clip_backbones.build({"model_cfg": TINY_CLIP, "preprocess_cfg": {}})
    planted = {k: v.contiguous() for k, v in theirs.state_dict().items()}
    plant_hf_repo(tmp_path / "hub", "someone/tiny-clip", {
        "open_clip_config.json": lambda p: p.write_text(json.dumps({"model_cfg": TINY_CLIP, "preprocess_cfg": {
            "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bilinear"}})),
        "open_clip_model.safetensors": lambda p: save_file(planted, p)})
    root = tiny_prepared
    params = {**copy.deepcopy(SMALL_PARAMS), "pretrain": {}, "features": {}, "tasks": {},
              "backbones": {"hub": {"source": "open_clip", "arch": "hf-hub:someone/tiny-clip",
                                    "weights": "pretrained"},
                            "hub-random": {"source": "open_clip", "arch": "hf-hub:someone/tiny-clip"}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**ENV, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    for name in ("hub", "hub-random"):
        proc = subprocess.run([sys.executable, "-m", "stages.backbone", name], cwd=root, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        assert "WARNING" not in proc.stderr, proc.stderr  # OpenCLIP's notes stay out of the stage's output
    layout = Layout(root)
    saved = load_file(layout.backbone("hub") / backbones.WEIGHTS_FILE)
    assert set(saved) == set(planted) and all(torch.equal(saved[k], v) for k, v in planted.items())
    info = backbones.read_info(layout.backbone("hub"))
    assert info.source == {"kind": "open_clip", "weights": "pretrained"}
    assert (info.preprocessing["mean"], info.preprocessing["interpolation"]) == ([0.5] * 3, "bilinear")

    manifest = pd.read_parquet(layout.manifest("tiny"))
    feats = {}
    for name in ("hub", "hub-random"):
        build(name, FeatureSet(dataset="tiny", backbone=name, precision="float32"), manifest,
              layout.backbone(name), layout.features(name), CPU, store_dir=tmp_path / "store")
        feats[name] = np.asarray(sets.read(layout.features(name))[0], dtype=np.float32)
    images = ImageFiles(manifest["path"][:4], [0] * 4, transform(info.preprocessing))
    with torch.no_grad():
        want = theirs.eval().encode_image(torch.stack([images[i][0] for i in range(4)])).numpy()
    np.testing.assert_allclose(feats["hub"][:4], want, rtol=2e-3, atol=2e-3)  # float16 storage
    assert not np.allclose(feats["hub-random"][:4], want, atol=1e-2)
    assert sets.read_meta(layout.features("hub"))["key"]["open_clip"] == open_clip.__version__


def test_a_missing_hub_repository_fails_on_one_line_offline(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {**copy.deepcopy(SMALL_PARAMS), "pretrain": {}, "features": {}, "tasks": {},
         "backbones": {"c": {"source": "open_clip", "arch": "ViT-B-32", "weights": "laion2b_s34b_b79k"}}}))
    proc = subprocess.run([sys.executable, "-m", "stages.backbone", "c"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600,
                          env={**ENV, "HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "ViT-B-32/laion2b_s34b_b79k" in lines[0] and "Hugging Face cache" in lines[0]
