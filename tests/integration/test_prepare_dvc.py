"""Real photographs from a folder outside the repository through `dvc repro` to metrics, under real DVC in a
temporary git repository; then DVC notices an image added, changed or removed out there.

One module-scoped full `dvc repro` (a random-init resnet18 at 32 px over 48 photo crops); the tests after it
re-run prepare only."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import SMALL_PARAMS, make_project, sh
from tests.photos import CLASSES, crop, encode, photo_folder
from transferlab.config.paths import Layout

METRIC_KEYS = {"test_accuracy", "val_accuracy", "macro_f1", "n_train", "n_test"}


def _params(photos: Path, shop: Path) -> dict:
    params = copy.deepcopy(SMALL_PARAMS)
    params["datasets"] = {"photos": {"source": "imagefolder", "root": str(photos)},
                          "shop": {"source": "manifest", "root": str(shop)}}
    params["pretrain"] = {}
    params["features"] = {"photos-random": {"dataset": "photos", "backbone": "random"}}
    params["tasks"] = {"photos-all": {"features": "photos-random"}}
    return params


def _stale(repo: Path) -> set[str]:
    return set(json.loads(sh("dvc", "status", "--json", cwd=repo).stdout))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    photos = photo_folder(outside / "photos", per_mode=2)  # 24 per class, every mode, 7 broken files
    shop = photo_folder(outside / "shop", broken=False)
    rows = [(Path(p).relative_to(shop.root).as_posix(), Path(p).relative_to(shop.root).parts[0])
            for p in sorted(shop.good)]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(shop.root / "manifest.csv", index=False)
    repo = make_project(tmp_path_factory.mktemp("repo") / "repo", _params(photos.root, shop.root))
    proc = sh("dvc", "repro", cwd=repo)
    return repo, photos, shop, proc.stdout + proc.stderr


def test_photos_outside_the_repo_run_through_to_metrics(built):
    repo, photos, _, output = built
    assert "Running stage 'prepare@photos'" in output and "Running stage 'tasks@photos-random'" in output
    layout = Layout(repo)
    m = json.loads(layout.metrics("photos-all").read_text())["head"]
    assert METRIC_KEYS <= set(m) and m["n_train"] + m["n_test"] <= 48 and m["n_test"] == 8
    manifest = pd.read_parquet(layout.manifest("photos"))
    rejected = pd.read_csv(layout.prepared("photos") / "rejected.csv")
    assert set(manifest["path"]) == set(photos.good)  # no good image missing
    assert set(rejected["path"]) == set(photos.broken)  # every broken one named
    assert set(manifest["label"]) == set(CLASSES)
    assert _stale(repo) == set()


def test_adding_changing_removing_an_outside_image_reruns_prepare(built, tmp_path):
    repo, photos, _, _ = built
    new = photos.root / "flower" / "new_arrival.jpg"
    new.write_bytes(encode(crop("flower", 50), "jpeg_rgb")[0])
    try:
        assert "prepare@photos" in _stale(repo)
        out = sh("dvc", "repro", "prepare@photos", cwd=repo)
        assert "Running stage 'prepare@photos'" in out.stdout
        manifest = pd.read_parquet(Layout(repo).manifest("photos"))
        assert str(new) in set(manifest["path"]) and len(manifest) == len(photos.good) + 1
        assert "prepare@photos" not in _stale(repo)

        some = sorted(photos.good)[3]
        backup = tmp_path / "backup"
        shutil.copy(some, backup)
        Path(some).write_bytes(encode(crop("china", 51), "png_rgb")[0])  # changed in place
        assert "prepare@photos" in _stale(repo)
        shutil.copy(backup, some)
    finally:
        new.unlink()  # removed: stale again (the first run's state, so the other tests see it unchanged)
    assert "prepare@photos" in _stale(repo)
    sh("dvc", "repro", "prepare@photos", cwd=repo)
    assert "prepare@photos" not in _stale(repo)


def test_manifest_folder_tracks_its_images_too(built, tmp_path):
    repo, _, shop, _ = built
    manifest = pd.read_parquet(Layout(repo).manifest("shop"))
    assert set(manifest["path"]) == set(shop.good) and len(manifest) == 24
    some = sorted(shop.good)[0]
    backup = tmp_path / "backup"
    shutil.copy(some, backup)
    try:
        Path(some).write_bytes(encode(crop("china", 52), "png_rgb")[0])  # the image, not the manifest, changes
        assert "prepare@shop" in _stale(repo)
    finally:
        shutil.copy(backup, some)
    assert "prepare@shop" not in _stale(repo)
