"""Decoding image files and turning them into model inputs, the same way in every stage."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode, v2

from stages.errors import PipelineError


def decode(path: Path | str) -> Image.Image:
    """Open an image file as RGB with its EXIF orientation applied."""
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise PipelineError(f"{path}: cannot decode image ({err}); remove or replace the file") from None


AUGMENTATIONS = ("none", "light")


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
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(pre["resize_size"], interpolation=interp, antialias=pre["antialias"]),
        v2.CenterCrop(pre["crop_size"]),
        *extra,
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(pre["mean"]), std=list(pre["std"])),
    ])


class ImageFiles(Dataset):
    """Image files with integer targets, decoded and transformed on access."""

    def __init__(self, paths: Sequence[str], targets: Sequence[int], tf: v2.Compose):
        if len(paths) != len(targets):
            raise ValueError("paths and targets differ in length")
        self.paths, self.targets, self.tf = list(paths), list(targets), tf

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.tf(decode(self.paths[i])), self.targets[i]
