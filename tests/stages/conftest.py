"""Helpers shared by the stage tests: small real-image datasets cut from the exported digits."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stages import backbone, feature_store, prepare
from stages.params import Backbone, Dataset
from stages.paths import Layout


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


@pytest.fixture(scope="module")
def private_store(tmp_path_factory):
    """A feature store of this test module's own, so its extracted/reused counts see no other module's runs."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(feature_store.STORE_ENV, str(tmp_path_factory.mktemp("store")))
        yield


def tiny_layout(root: Path, tiny_digits: Path) -> Layout:
    """A project root with dataset `tiny` prepared and backbones bb32 / bb24 (same seed, other image size)."""
    layout = Layout(root)
    prepare.run(Dataset(source="imagefolder", root=str(tiny_digits)), layout.prepared("tiny"), seed=0)
    for name, size in (("bb32", 32), ("bb24", 24)):
        backbone.run(name, Backbone(arch="resnet18", weights="none", image_size=size), layout.backbone(name), 0)
    return layout
