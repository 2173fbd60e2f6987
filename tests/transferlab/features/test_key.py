"""features.key: the feature key of real (tiny, random-init) resnet18 backbone folders."""
from __future__ import annotations

import pytest
import torch

from transferlab.config.params import Backbone
from transferlab.features.key import compute_dtype_name, feature_key
from transferlab.io.hashing import key_hash
from transferlab.models import backbones

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def infos(tmp_path_factory) -> dict[int, backbones.BackboneInfo]:
    """Backbones at 32 and 24 px: same arch, same seed (so the same weights), other preprocessing."""
    root = tmp_path_factory.mktemp("backbones")
    return {size: backbones.create(f"bb{size}", Backbone(arch="resnet18", weights="none", image_size=size),
                                   root / f"bb{size}", 0)
            for size in (32, 24)}


def test_other_preprocessing_other_key(infos):
    dtype = compute_dtype_name(CPU)
    key24, key32 = (feature_key(infos[size], CPU, 16, dtype) for size in (24, 32))
    # same seed, same weights: the preprocessing alone must change the key
    assert key24["backbone_fingerprint"] == key32["backbone_fingerprint"]
    assert key24["preprocessing"]["crop_size"] == 24
    assert key_hash(key24) != key_hash(key32)


def test_the_hardware_that_changes_the_numbers_is_in_the_key(infos):
    """Rows computed on another CPU ISA or bf16 path (or another GPU, CUDA, cuDNN) must never share a key."""
    from transferlab.models.devices import numerics

    here = feature_key(infos[32], CPU, 16, "float32")
    isa = torch.backends.cpu.get_cpu_capability()
    assert here["numerics"] == numerics(CPU, "float32") == {"cpu_capability": isa}
    other = next(c for c in ("AVX2", "AVX512", "DEFAULT") if c != isa)  # another machine's ISA, not this one's
    elsewhere = feature_key(infos[32], CPU, 16, "float32", numerics={"cpu_capability": other})
    assert key_hash(here) != key_hash(elsewhere)
