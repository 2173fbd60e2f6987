"""Materialising backbones: torchvision enum (through the hub cache), local files, seeded random init."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import load_file, save_file

from transferlab.config.errors import PipelineError
from transferlab.config.params import IMAGENET_MEAN, IMAGENET_STD, Backbone
from transferlab.models import backbones

R18_V1 = torchvision.models.ResNet18_Weights.IMAGENET1K_V1


def _seeded_resnet18(seed: int, **kwargs) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(**kwargs).state_dict()


def _assert_same_state(saved: dict, planted: dict) -> None:
    assert set(saved) == set(planted)
    for k, v in planted.items():
        assert torch.equal(saved[k], v), k


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # so get_dir() reads TORCH_HOME, not a set_dir()
    assert Path(torch.hub.get_dir()) == home / "hub"
    return home


def test_enum_weights_from_the_hub_cache(torch_home, tmp_path):
    planted = _seeded_resnet18(1234)
    ckpt = torch_home / "hub" / "checkpoints" / os.path.basename(R18_V1.url)
    ckpt.parent.mkdir(parents=True)
    torch.save(planted, ckpt)

    out = tmp_path / "r18"
    info = backbones.create("r18", Backbone(arch="resnet18", weights="IMAGENET1K_V1"), out, seed=0)

    _assert_same_state(load_file(out / backbones.WEIGHTS_FILE), planted)
    recorded = json.loads((out / backbones.INFO_FILE).read_text())
    pre = recorded["preprocessing"]
    assert pre["crop_size"] == 224 and pre["resize_size"] == 256
    assert pre["interpolation"] == "bilinear"
    assert pre["mean"] == pytest.approx(list(IMAGENET_MEAN)) and pre["std"] == pytest.approx(list(IMAGENET_STD))
    assert recorded["source"]["kind"] == "torchvision"
    assert "IMAGENET1K_V1" in recorded["source"]["weights"]
    assert recorded["num_classes"] == 1000 and recorded["feature_dim"] == 512 and recorded["classifier"] == "fc"
    assert info.fingerprint == recorded["fingerprint"]


def _network_reachable(host: str = "download.pytorch.org") -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.timeout(90)
def test_enum_weights_not_cached_and_offline(torch_home, tmp_path):
    if _network_reachable():
        pytest.skip("network is reachable: the download would succeed (and be large)")
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(5)  # urllib has no timeout of its own: bound any connect attempt
    try:
        with pytest.raises(PipelineError) as err:
            backbones.create("r18", Backbone(arch="resnet18", weights="IMAGENET1K_V1"), tmp_path / "r18", seed=0)
    finally:
        socket.setdefaulttimeout(old)
    msg = str(err.value)
    assert "IMAGENET1K_V1" in msg and str(torch_home) in msg
    assert not (tmp_path / "r18" / backbones.WEIGHTS_FILE).exists()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file(tmp_path, suffix):
    planted = _seeded_resnet18(7, num_classes=7)
    path = tmp_path / f"mine{suffix}"
    if suffix == ".safetensors":
        save_file(planted, path)
    else:
        torch.save(planted, path)
    out = tmp_path / "out"
    info = backbones.create("mine", Backbone(arch="resnet18", weights=str(path), image_size=32), out, seed=0)

    _assert_same_state(load_file(out / backbones.WEIGHTS_FILE), planted)
    assert info.num_classes == 7 and info.feature_dim == 512
    assert info.source["kind"] == "file"
    import hashlib
    assert info.source["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.preprocessing["crop_size"] == 32
    model, _ = backbones.load_classifier(out)
    assert model.fc.out_features == 7


def test_pth_checkpoint_wrapping_a_state_dict(tmp_path):
    planted = _seeded_resnet18(3, num_classes=7)
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 4, "state_dict": planted}, path)
    backbones.create("ckpt", Backbone(arch="resnet18", weights=str(path)), tmp_path / "out", seed=0)
    _assert_same_state(load_file(tmp_path / "out" / backbones.WEIGHTS_FILE), planted)


class _Canary:
    """Unpickling this runs os.mkdir(marker): proof that arbitrary code would have executed."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_pth_with_pickled_object_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save(_Canary(marker), path)
    with pytest.raises(PipelineError, match="not a loadable state dict"):
        backbones.create("evil", Backbone(arch="resnet18", weights=str(path)), tmp_path / "out", seed=0)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the canary is live: full unpickling would have run it
    assert marker.is_dir()


def test_pth_holding_non_tensors_is_refused(tmp_path):
    path = tmp_path / "junk.pth"
    torch.save({"fc.weight": [1, 2, 3]}, path)
    with pytest.raises(PipelineError, match="no state dict of tensors"):
        backbones.create("junk", Backbone(arch="resnet18", weights=str(path)), tmp_path / "out", seed=0)


def test_weights_for_another_arch_are_refused(tmp_path):
    path = tmp_path / "r18.safetensors"
    save_file(_seeded_resnet18(0), path)
    with pytest.raises(PipelineError, match="do not fit resnet34"):
        backbones.create("x", Backbone(arch="resnet34", weights=str(path)), tmp_path / "out", seed=0)


def test_missing_weights_file(tmp_path):
    with pytest.raises(PipelineError, match="not found"):
        backbones.create("x", Backbone(arch="resnet18", weights=str(tmp_path / "nope.pth")), tmp_path / "o",
                         seed=0)


def test_random_init_is_seeded(tmp_path):
    entry = Backbone(arch="resnet18", weights="none", image_size=32)
    a = backbones.create("a", entry, tmp_path / "a", seed=0)
    b = backbones.create("b", entry, tmp_path / "b", seed=0)
    c = backbones.create("c", entry, tmp_path / "c", seed=1)
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint
    weights = [(tmp_path / d / backbones.WEIGHTS_FILE).read_bytes() for d in "ab"]
    assert weights[0] == weights[1]
    assert a.source == {"kind": "random", "seed": 0} and c.source["seed"] == 1
    assert a.preprocessing == {"crop_size": 32, "resize_size": 32, "interpolation": "bilinear", "antialias": True,
                               "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


@pytest.mark.parametrize("weights", ["none", "IMAGENET1K_V1"])
def test_unknown_arch(tmp_path, weights):
    with pytest.raises(PipelineError, match="resnet9000"):
        backbones.create("x", Backbone(arch="resnet9000", weights=weights), tmp_path / "x", seed=0)


def test_unknown_enum_name(tmp_path):
    with pytest.raises(PipelineError) as err:
        backbones.create("x", Backbone(arch="resnet18", weights="IMAGENET9K_V7"), tmp_path / "x", seed=0)
    assert "IMAGENET9K_V7" in str(err.value) and "IMAGENET1K_V1" in str(err.value)  # names the known ones too


@pytest.mark.parametrize("arch,dim,classifier", [("resnet18", 512, "fc"),
                                                 ("mobilenet_v3_small", 1024, "classifier.3")])
def test_load_trunk_outputs_feature_dim(tmp_path, arch, dim, classifier):
    info = backbones.create(arch, Backbone(arch=arch, weights="none", image_size=32), tmp_path / arch, seed=0)
    assert (info.feature_dim, info.classifier) == (dim, classifier)
    trunk, tinfo = backbones.load_trunk(tmp_path / arch)
    full, _ = backbones.load_classifier(tmp_path / arch)
    trunk.eval(), full.eval()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = trunk(x)
        assert feats.shape == (2, tinfo.feature_dim)
        # the trunk stops exactly at the classifier's input
        cls = full.get_submodule(classifier)
        assert torch.allclose(cls(feats), full(x), atol=1e-5)
