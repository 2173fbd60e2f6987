"""A torch FeatureHead's logits on numpy features, for tests that compare it with the numpy head file."""
from __future__ import annotations

import numpy as np
import torch

from transferlab.heads.torch_heads import FeatureHead


@torch.inference_mode()
def predict(head: FeatureHead, x: np.ndarray) -> np.ndarray:
    return head(torch.as_tensor(np.asarray(x, np.float32))).numpy()
