"""Decoded images as model inputs: the eval transform a backbone's preprocessing describes, optional training
augmentation, SimCLR's random views, and a map-style dataset of image files.

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


def _steps(pre: dict, augment: str) -> tuple[InterpolationMode, v2.Transform, list, list]:
    """What `transform` and `simclr_view` share: the interpolation, the resize, and the flips and affine jitter
    an augmentation adds."""
    interp = InterpolationMode(pre["interpolation"])
    if augment not in AUGMENTATIONS:
        raise PipelineError(f"augment {augment!r} is not known; use one of {', '.join(AUGMENTATIONS)}")
    # the shorter side to resize_size (aspect kept), or squash: both sides to crop_size (OpenCLIP's SigLIP)
    resize = v2.Resize((pre["crop_size"],) * 2 if pre.get("resize_mode") == "squash" else pre["resize_size"],
                       interpolation=interp, antialias=pre["antialias"])
    flip = [v2.RandomHorizontalFlip()] if augment == "crop+flip" else []
    # light: small affine jitter only; no flips or colour changes, which would change what a digit or a
    # letter means. Fill 0 is the background of the digits (and the padding torchvision uses elsewhere).
    extra = [v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), interpolation=interp)] \
        if augment == "light" else []
    return interp, resize, flip, extra


def _normalised(pre: dict) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(pre["mean"]), std=list(pre["std"]))]


def transform(pre: dict, augment: str = "none") -> v2.Compose:
    """The eval-time transform described by a preprocessing dict (as stored in backbone.json), with an
    optional training augmentation applied after the crop (it draws from torch's global RNG)."""
    interp, resize, flip, extra = _steps(pre, augment)
    # crop: Inception's random resized crop (a part of the resized image, at the crop size) for the centre crop,
    # milder than ImageNet's scale 0.08-1: the small sources this stage trains on lose their object below half
    crop = v2.RandomResizedCrop(pre["crop_size"], scale=(0.5, 1.0), interpolation=interp,
                                antialias=pre["antialias"]) if augment.startswith("crop") else \
        v2.CenterCrop(pre["crop_size"])
    return v2.Compose([v2.ToImage(), resize, crop, *flip, *extra, *_normalised(pre)])


def simclr_view(pre: dict, augment: str = "none") -> v2.Compose:
    """One random view of an image for SimCLR: the resize of `transform`, a random resized crop (scale 0.2-1),
    colour jitter (p 0.8, SimCLR's strength 0.5 for small images) and random grayscale (p 0.2), no blur (SimCLR's
    CIFAR recipe), normalised as `transform` does. augment: crop+flip adds flips, light the affine jitter."""
    interp, resize, flip, extra = _steps(pre, augment)
    return v2.Compose([
        v2.ToImage(),
        resize,
        # 0.2-1 of the area, not ImageNet SimCLR's 0.08-1: below 0.2 little of an 8 x 8 digit is left
        v2.RandomResizedCrop(pre["crop_size"], scale=(0.2, 1.0), interpolation=interp, antialias=pre["antialias"]),
        *flip,
        *extra,
        # colour on a PIL image of the crop: torchvision's hue shift of a tensor took 10 ms for one 32 px view on
        # the 2-core machine, this whole view 0.6 ms
        v2.ToPILImage(),
        v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.ToImage(),
        *_normalised(pre),
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
