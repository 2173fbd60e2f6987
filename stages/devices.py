"""Picking the torch device from params (auto: CUDA, then MPS, then CPU)."""
from __future__ import annotations

import torch

from stages.errors import PipelineError


def resolve(spec: str = "auto") -> torch.device:
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError(f"device {spec!r}: CUDA is not available here; set device: auto or cpu")
    if spec == "mps" and not torch.backends.mps.is_available():
        raise PipelineError("device 'mps': MPS is not available here; set device: auto or cpu")
    return torch.device(spec)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision where it pays (bf16 on CUDA when supported); None means full fp32."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None
