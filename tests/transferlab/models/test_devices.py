"""Devices: what of the hardware changes the numbers (part of every feature key)."""
from __future__ import annotations

import torch

from transferlab.models import devices


def test_cpu_numerics_name_the_vector_isa_and_for_bf16_its_path():
    fp32 = devices.numerics(torch.device("cpu"), "float32")
    assert fp32 == {"cpu_capability": torch.backends.cpu.get_cpu_capability()}
    bf16 = devices.numerics(torch.device("cpu"), "bfloat16")
    assert bf16["bf16_path"] in {"amx", "avx512_bf16", "emulated", "unknown"}
    flags = open("/proc/cpuinfo").read().split()
    assert (bf16["bf16_path"] == "amx") == ("amx_bf16" in flags)


def test_cuda_numerics_name_the_gpu_and_its_libraries():
    if not torch.cuda.is_available():
        import pytest

        pytest.skip("no CUDA device here: the GPU model, CUDA and cuDNN versions cannot be read")
    found = devices.numerics(torch.device("cuda"), "bfloat16")
    assert set(found) == {"gpu", "compute_capability", "cuda", "cudnn"} and found["gpu"]
