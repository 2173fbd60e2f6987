"""The feature key: everything that determines a backbone's features. Same key, same numbers."""
from __future__ import annotations

import torch

from transferlab.data.images import DECODER
from transferlab.models import devices
from transferlab.models.backbones import BackboneInfo, versions

MEMORY_FORMAT = "channels_last"  # of the images and the trunk during extraction, on every device


def feature_key(info: BackboneInfo, device: torch.device, batch_size: int, compute_dtype: str = "float32",
                numerics: dict | None = None, layer: str | None = None) -> dict:
    """Everything that determines the numbers: same key, same features.

    The forward batch size is part of it. Measured on CPU (resnet18 at 24/32 px, torch 2.14): an image alone
    in a forward pass gives other float16 values (for ~70% of digit images) than in a batch of 2 to 64, and
    within one batch shape neither the other images nor the position matter. So every forward pass is padded
    to exactly batch_size images (transferlab.features.extract.pad), and other batch sizes (other shapes, other
    GPU kernels) miss. The compute dtype and the memory format (channels_last everywhere: other kernels, other
    numbers) are in it too, and so is what of the hardware changes the numbers (`numerics`, devices.numerics:
    the GPU model and CUDA / cuDNN versions, or the CPU's vector ISA and bf16 path, as read where the features
    are computed; default this process's), so a store shared by several machines never mixes their rows.
    `layer`: what of the model the features are (models.backbones.readout); default the classifier's input."""
    return {"backbone_fingerprint": info.fingerprint, "arch": info.arch,
            "layer": layer or f"input of {info.classifier}", "preprocessing": info.preprocessing,
            "decoder": DECODER, "device": device.type,
            "compute_dtype": compute_dtype, "memory_format": MEMORY_FORMAT,
            "forward_batch_size": batch_size, "storage_dtype": "float16", **versions(info.library),
            "numerics": devices.numerics(device, compute_dtype) if numerics is None else numerics}


def compute_dtype_name(device: torch.device, precision: str = "auto") -> str:
    """The dtype the backbone computes in on `device` for features.<set>.precision, as the key spells it."""
    return str(devices.inference_dtype(device, precision)).removeprefix("torch.")
