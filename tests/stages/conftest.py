"""Helpers shared by the stage tests: small real-image datasets cut from the exported digits."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def subset_imagefolder(src: Path, dest: Path, classes, per_class: int) -> Path:
    """Copy the first `per_class` images of each class folder of an ImageFolder to dest (same layout)."""
    for c in classes:
        files = sorted((Path(src) / str(c)).glob("*.png"))[:per_class]
        assert len(files) == per_class, f"class {c} has only {len(files)} images"
        (dest / str(c)).mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy(f, dest / str(c) / f.name)
    return dest


@pytest.fixture(scope="session")
def tiny_digits(tmp_path_factory, digits_root) -> Path:
    """40 real digit images: 4 of each class, as an ImageFolder at an absolute path."""
    return subset_imagefolder(digits_root, tmp_path_factory.mktemp("tiny_digits"), range(10), 4)
