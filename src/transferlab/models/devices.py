"""Picking the torch device from params (auto: CUDA, then MPS, then CPU)."""
from __future__ import annotations

from pathlib import Path

import torch

from transferlab.config.errors import PipelineError


def resolve(spec: str | torch.device = "auto") -> torch.device:
    """params' device spec -> a torch.device; a torch.device passes through (callers take either)."""
    if isinstance(spec, torch.device):
        return spec
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
    """Mixed precision for training where it pays (bf16 on CUDA when supported); None means full fp32."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), so oneDNN runs bf16 convolutions fast.
    Without it bf16 is emulated and slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def inference_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The dtype a frozen backbone computes in (autocast) for features.<set>.precision.

    auto: bf16 where the hardware has it (CUDA with bf16, else fp16; a CPU with native bf16), fp32 elsewhere.
    Measured on a 2-core AMD EPYC with AVX512-BF16 (torch 2.14, resnet50 at 224 px, batch 32, channels_last):
    fp32 12.5 images/s, bf16 autocast 26-33; resnet18 at 32 px: 2344 vs 3741 images/s."""
    if precision != "auto":
        return getattr(torch, precision)
    if device.type == "cuda":
        return autocast_dtype(device)
    if device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return torch.float32


def numerics(device: torch.device, compute_dtype: str) -> dict:
    """What, besides the software versions, makes the same forward pass give other numbers on `device`: the GPU
    model and CUDA / cuDNN versions (other kernels), or the CPU's vector ISA and, for bf16, whether oneDNN runs
    it on AMX or AVX512-BF16 (measured: another CPU with AMX moved 67 of the default pipeline's metrics)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return {"gpu": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}",
                "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    if device.type == "cpu":
        found = {"cpu_capability": torch.backends.cpu.get_cpu_capability()}
        if compute_dtype == "bfloat16":
            found["bf16_path"] = _cpu_bf16_path()
        return found
    return {}


def _cpu_bf16_path() -> str:
    """amx, avx512_bf16 or emulated: the CPU feature oneDNN's bf16 kernels use (Linux's /proc/cpuinfo flags)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:  # not Linux: the ISA torch reports stands for it
        return "unknown"
    return "amx" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else "emulated"
