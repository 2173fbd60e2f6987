"""Features from earlier blocks of a CNN (features.<set>.pooling mean with `blocks`): torchvision models through
transferlab.models.cnn_blocks, timm models through forward_intermediates; block lists in the feature key."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from torchvision.models import feature_extraction

from transferlab.config.errors import PipelineError
from transferlab.config.params import Backbone, FeatureSet
from transferlab.config.paths import Layout
from transferlab.features import sets
from transferlab.features.build import build
from transferlab.models import backbones, cnn_blocks

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    out = tmp_path_factory.mktemp("bb") / "r"
    info = backbones.create("r", Backbone(arch="resnet18", weights="none", image_size=32), out, seed=0)
    return out, info


def _pooled(model: torch.nn.Module, nodes: list[str], x: torch.Tensor) -> torch.Tensor:
    """torchvision's own feature extractor on the same model: the nodes' maps, averaged over space."""
    maps = feature_extraction.create_feature_extractor(model, return_nodes=nodes)(x)
    return torch.cat([maps[n].mean(dim=(2, 3)) for n in nodes], dim=1)


def test_block_features_are_torchvisions_own_intermediate_maps(resnet):
    """layer3 alone ([-2]), or layer3 + layer4 (the last 2): the averaged maps torchvision's feature extractor
    returns for those nodes; the last block alone is the model's own pooled penultimate feature."""
    path, info = resnet
    model, _ = backbones.load_classifier(path)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        model.eval()
        layer3 = backbones.load_trunk(path, "mean", (-2,))[0].eval()(x)
        both = backbones.load_trunk(path, "mean", 2)[0].eval()(x)
        last = backbones.load_trunk(path, "mean", 1)[0].eval()(x)
        pooled = backbones.load_trunk(path)[0].eval()(x)
        torch.testing.assert_close(layer3, _pooled(model, ["layer3"], x))
        torch.testing.assert_close(both, _pooled(model, ["layer3", "layer4"], x))
    torch.testing.assert_close(last, pooled)
    assert backbones.readout(info, "mean", (-2,)) == ("mean of blocks [2] of 4", 256)
    assert backbones.readout(info, "mean", (2,)) == ("mean of blocks [2] of 4", 256)  # the same rows
    assert backbones.readout(info, "mean", (-1, 1)) == ("mean of blocks [1, 3] of 4", 128 + 512)
    assert backbones.readout(info, "mean", 2) == ("mean of the last 2 blocks", 768)


def test_only_the_blocks_up_to_the_deepest_read_run(resnet):
    path, _ = resnet
    trunk = backbones.load_trunk(path, "mean", (0, 1))[0]
    assert len(trunk.stages) == 2  # layer3 and layer4 are not part of it
    seen = []
    trunk.stages[1].register_forward_hook(lambda *_: seen.append("layer2"))
    trunk.eval()(torch.randn(1, 3, 32, 32))
    assert seen == ["layer2"]


def test_a_features_sequence_model_reads_its_children():
    """MobileNet and the like: the blocks are the children of `features`; widths from a meta-device pass."""
    from torchvision.models import mobilenet_v3_small

    with torch.device("meta"):
        r = cnn_blocks.StageReadout(mobilenet_v3_small(), (-1, 3))
    assert (r.depth, r.indices) == (13, [3, 12]) and cnn_blocks.width(r) == 24 + 576


def test_blocks_a_model_lacks_fail_on_one_line(resnet):
    from torchvision.models import vit_b_16

    _, info = resnet
    with pytest.raises(PipelineError, match=r"blocks \[4\]: block 4 is out of range; ResNet has 4 blocks"):
        backbones.readout(info, "mean", (4,))
    with pytest.raises(PipelineError, match="names a block twice"):
        backbones.readout(info, "mean", (1, -3))
    with pytest.raises(PipelineError, match="blocks 5: ResNet has 4 blocks"):
        backbones.readout(info, "mean", 5)
    with pytest.raises(PipelineError, match="'cls' does not read a torchvision model"):
        backbones.readout(info, "cls", 1)
    with torch.device("meta"), pytest.raises(PipelineError, match="VisionTransformer has neither"):
        cnn_blocks.StageReadout(vit_b_16(), 1)
    with pytest.raises(ValidationError, match="name at least one block"):
        FeatureSet(dataset="d", backbone="r", pooling="mean", blocks=[])
    with pytest.raises(ValidationError, match="at least 1"):
        FeatureSet(dataset="d", backbone="r", pooling="mean", blocks=0)


def test_a_block_list_is_its_own_feature_set(tiny_prepared, tmp_path):
    """Each readout its own key and rows; [-2] and [2] the same key, so the second reuses every row."""
    layout = Layout(tiny_prepared)
    backbones.create("r32", Backbone(arch="resnet18", weights="none", image_size=32), layout.backbone("r32"),
                     seed=0)
    manifest = pd.read_parquet(layout.manifest("tiny"))
    metas = {}
    for name, pooling, blocks in (("pooled", "model", 1), ("l3", "mean", [-2]), ("l34", "mean", 2)):
        fs = FeatureSet(dataset="tiny", backbone="r32", pooling=pooling, blocks=blocks)
        r = build(name, fs, manifest, layout.backbone("r32"), layout.features(name), CPU,
                  store_dir=tmp_path / "store")
        assert r.extracted == len(manifest)
        metas[name] = sets.read_meta(layout.features(name))
    assert len({m["key_hash"] for m in metas.values()}) == 3
    assert [metas[n]["dim"] for n in ("pooled", "l3", "l34")] == [512, 256, 768]
    assert metas["l3"]["readout"] == {"pooling": "mean", "blocks": [-2]}
    again = build("l3b", FeatureSet(dataset="tiny", backbone="r32", pooling="mean", blocks=[2]), manifest,
                  layout.backbone("r32"), layout.features("l3b"), CPU, store_dir=tmp_path / "store")
    assert (again.extracted, again.reused) == (0, len(manifest))
    feats, _ = sets.load_features("l3b", tiny_prepared)
    l3, _ = sets.load_features("l3", tiny_prepared)
    assert (feats == l3).all()
