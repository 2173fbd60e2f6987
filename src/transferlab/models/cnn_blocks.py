"""Features from a torchvision CNN's blocks (its stages): each chosen block's output map, averaged over space,
concatenated (features.<set>.pooling mean with `blocks`). Earlier blocks transfer better to targets unlike the
source (Yosinski et al. 2014: transferability falls with depth); with several, the head gets every scale.

The blocks are the stages a torchvision CNN is built of: layer1..layer4 of the ResNet family (ResNet, ResNeXt,
Wide ResNet), else the children of `model.features` (VGG, MobileNet, EfficientNet, ConvNeXt, DenseNet...). The
network runs only up to the deepest block read."""
from __future__ import annotations

import torch
from torch import nn

from transferlab.config.errors import PipelineError
from transferlab.models.blocks import block_indices


def _stem_and_blocks(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)) and hasattr(model, "conv1"):
        return [model.conv1, model.bn1, model.relu, model.maxpool], [getattr(model, f"layer{i}")
                                                                     for i in range(1, 5)]
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential):
        return [], list(features)
    raise PipelineError(f"pooling mean reads the blocks of a torchvision CNN (layer1..layer4, or the children of "
                        f"`features`); {type(model).__name__} has neither: use pooling model, or the model from "
                        "timm (source: timm)")


class StageReadout(nn.Module):
    """The spatially averaged output of each chosen block, concatenated in block order."""

    def __init__(self, model: nn.Module, blocks: int | tuple[int, ...]):
        super().__init__()
        stem, stages = _stem_and_blocks(model)
        self.depth = len(stages)
        self.indices = block_indices(blocks, self.depth, type(model).__name__)
        self.stem = nn.Sequential(*stem)
        self.stages = nn.ModuleList(stages[:max(self.indices) + 1])  # nothing deeper than the last block read

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, out = self.stem(x), []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.indices:
                out.append(x.mean(dim=(2, 3)))
        return torch.cat(out, dim=1)


def width(readout: StageReadout) -> int:
    """The feature width of a readout built on the meta device, from a forward pass there (shapes only)."""
    return int(readout(torch.empty(1, 3, 224, 224, device="meta")).shape[1])


def describe(model: nn.Module, library: str, pooling: str, blocks: int | tuple[int, ...]) -> tuple[list[int], int,
                                                                                                    int]:
    """(the blocks read, from 0; how many blocks the model has; the feature width) of a torchvision or timm model
    built on the meta device."""
    if library == "timm":
        from transferlab.models.timm_backbones import Readout

        r = Readout(model, pooling, blocks)
        return r.indices, r.depth, r.dim
    r = StageReadout(model, blocks)
    return r.indices, r.depth, width(r)
