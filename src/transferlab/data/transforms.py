"""Decoded images as model inputs: the eval transform a backbone's preprocessing describes, optional training
augmentation, and a map-style dataset of image files.

torch and torchvision are imported here, where tensors are made, not in transferlab.data.images, so that
prepare (decoding and hashing only) runs without them: they hold ~650 MiB of the process's memory once
imported."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import InterpolationMode, v2

from transferlab.config.errors import PipelineError
from transferlab.data.images import decode

AUGMENTATIONS = ("none", "light", "crop", "crop+flip")


def transform(pre: dict, augment: str = "none") -> v2.Compose:
    """The eval-time transform described by a preprocessing dict (as stored in backbone.json), with an
    optional training augmentation applied after the crop (it draws from torch's global RNG)."""
    interp = InterpolationMode(pre["interpolation"])
    if augment not in AUGMENTATIONS:
        raise PipelineError(f"augment {augment!r} is not known; use one of {', '.join(AUGMENTATIONS)}")
    # light: small affine jitter only; no flips or colour changes, which would change what a digit or a
    # letter means. Fill 0 is the background of the digits (and the padding torchvision uses elsewhere).
    extra = [v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), interpolation=interp)] \
        if augment == "light" else []
    # crop: Inception's random resized crop (a part of the resized image, at the crop size) for the centre crop,
    # milder than ImageNet's scale 0.08-1: the small sources this stage trains on lose their object below half
    crop = v2.RandomResizedCrop(pre["crop_size"], scale=(0.5, 1.0), interpolation=interp,
                                antialias=pre["antialias"]) if augment.startswith("crop") else \
        v2.CenterCrop(pre["crop_size"])
    flip = [v2.RandomHorizontalFlip()] if augment == "crop+flip" else []
    return v2.Compose([
        v2.ToImage(),
        # the shorter side to resize_size (aspect kept), or squash: both sides to crop_size (OpenCLIP's SigLIP)
        v2.Resize((pre["crop_size"],) * 2 if pre.get("resize_mode") == "squash" else pre["resize_size"],
                  interpolation=interp, antialias=pre["antialias"]),
        crop,
        *flip,
        *extra,
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(pre["mean"]), std=list(pre["std"])),
    ])


class ImageFiles:
    """Image files with integer targets, decoded and transformed on access (a map-style torch dataset)."""

    def __init__(self, paths: Sequence[str], targets: Sequence[int], tf: v2.Compose):
        if len(paths) != len(targets):
            raise ValueError("paths and targets differ in length")
        self.paths, self.targets, self.tf = list(paths), list(targets), tf

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.tf(decode(self.paths[i])), self.targets[i]
