"""scikit-learn's bundled handwritten digits (real, offline) written out as an ImageFolder: the default dataset."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def export_digits(root: Path) -> int:
    """Write scikit-learn's bundled handwritten digits as an ImageFolder (root/<digit>/<index>.png)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in range(10):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        pixels = np.round(img * (255.0 / 16.0)).astype(np.uint8)  # 0..16 ink levels -> 8-bit gray
        Image.fromarray(pixels, mode="L").save(root / str(label) / f"{i:04d}.png")
    return len(digits.images)
