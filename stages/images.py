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


def transform(pre: dict) -> v2.Compose:
    """The eval-time transform described by a preprocessing dict (as stored in backbone.json)."""
    interp = InterpolationMode(pre["interpolation"])
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(pre["resize_size"], interpolation=interp, antialias=pre["antialias"]),
        v2.CenterCrop(pre["crop_size"]),
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
