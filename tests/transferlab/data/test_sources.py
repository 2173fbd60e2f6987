"""Real folders in, bad input out: every mode of real photographs decoded by one rule, every broken file
refused by name, duplicates never in two splits, manifests treated as untrusted, torchvision read offline."""
from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFile

from tests.conftest import SMALL_PARAMS
from tests.photos import CLASSES, MODES, crop, encode, photo_folder
from transferlab.config.errors import PipelineError
from transferlab.config.params import Dataset, parse
from transferlab.data import images
from transferlab.data.prepare import prepare


def _read(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return (pd.read_parquet(out / "manifest.parquet"), pd.read_csv(out / "rejected.csv", dtype=str),
            pd.read_csv(out / "duplicates.csv", dtype={"label": str}))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = photo_folder(tmp_path_factory.mktemp("photos") / "pets")
    out = tmp_path_factory.mktemp("prepared")
    res = prepare(Dataset(source="imagefolder", root=str(folder.root)), out, seed=0)
    return folder, res, *_read(out)


# ---- ImageFolder of real photographs ----------------------------------------------------------------------

def test_every_good_photo_kept_every_broken_file_named(photos):
    folder, res, manifest, rejected, duplicates = photos
    assert set(manifest["path"]) == set(folder.good)
    assert len(manifest) == res.n_images == len(MODES) * len(CLASSES)
    assert dict(zip(rejected["path"], rejected["reason"].str.split(":").str[0], strict=True)) == folder.broken
    assert res.n_rejected == len(folder.broken) == 7
    assert duplicates.empty and manifest["duplicate_of"].isna().all()
    assert set(manifest["label"]) == set(CLASSES)
    nested = manifest[manifest["image_id"].str.contains("/nested/deeper/")]
    assert len(nested) == 2 and all(nested["image_id"].str.split("/").str[0] == nested["label"])
    assert (manifest["width"] == 48).all() and (manifest["height"] == 40).all()  # the EXIF one turned upright
    assert manifest["sha256"].is_unique and manifest["pixel_sha256"].is_unique


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_decodes_to_the_same_rgb(photos, mode):
    folder, *_ = photos
    path, (expect, lossless) = next((p, v) for p, v in folder.good.items() if mode in Path(p).name)
    got = np.asarray(images.decode(path))
    assert got.dtype == np.uint8 and got.shape == expect.shape == (40, 48, 3)
    diff = np.abs(got.astype(int) - expect.astype(int)).mean()
    if lossless:
        assert diff == 0, mode
    else:
        assert diff < 5, (mode, diff)  # JPEG/WebP at quality 95
    if mode == "jpeg_exif6":  # the pixels are the upright ones, not the stored sideways or the wrong turn
        assert np.abs(got.astype(int) - np.rot90(expect, 2).astype(int)).mean() > 8 * diff


def test_truncated_files_are_never_loaded(tmp_path, monkeypatch):
    data, _ = encode(crop("china", 3), "jpeg_rgb")
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(images.ImageRejected, match="undecodable") as err:
        images.decode(tmp_path / "cut.jpg")
    assert err.value.reason.startswith("undecodable") and "cut.jpg" in str(err.value)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some other library might
    with pytest.raises(PipelineError, match="LOAD_TRUNCATED_IMAGES"):
        images.decode(tmp_path / "cut.jpg")


def test_unreadable_and_float_images_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((4, 4), np.float32)).save(tmp_path / "a" / "float.tif")
    (tmp_path / "a" / "locked.png").write_bytes(encode(crop("flower", 2), "png_rgb")[0])
    (tmp_path / "a" / "ok.png").write_bytes(encode(crop("flower", 3), "png_rgb")[0])
    os.chmod(tmp_path / "a" / "locked.png", 0)
    try:
        res = prepare(Dataset(source="imagefolder", root=str(tmp_path)), tmp_path / "out", seed=0)
    finally:
        os.chmod(tmp_path / "a" / "locked.png", 0o644)
    reasons = dict(zip(*[pd.read_csv(tmp_path / "out" / "rejected.csv")[c] for c in ("path", "reason")],
                       strict=True))
    assert reasons[str(tmp_path / "a" / "float.tif")].startswith("undecodable") and "mode F" in str(reasons)
    if os.geteuid() != 0:  # root reads files whatever their permissions
        assert reasons[str(tmp_path / "a" / "locked.png")].startswith("unreadable")
    assert res.n_images == 3 - len(reasons)


def test_progress_bar_counts_files_per_second(tmp_path, capsys):
    folder = photo_folder(tmp_path / "p", broken=False)
    prepare(Dataset(source="imagefolder", root=str(folder.root)), tmp_path / "out", seed=0, name="pets")
    err = capsys.readouterr().err
    assert "prepare pets" in err and "file/s" in err


def test_imagefolder_refuses_what_lies_outside_its_classes(tmp_path):
    folder = photo_folder(tmp_path / "root", broken=False)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.png").write_bytes(encode(crop("china", 30), "png_rgb")[0])
    os.symlink(outside / "x.png", folder.root / "china" / "link_out.png")
    os.symlink(outside, folder.root / "flower" / "linked_dir")
    os.symlink(folder.root / "china" / "004_png_rgb.png", folder.root / "flower" / "link_in.png")
    (folder.root / "stray.jpg").write_bytes(encode(crop("china", 31), "jpeg_rgb")[0])
    (folder.root / "china" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    res = prepare(Dataset(source="imagefolder", root=str(folder.root)), tmp_path / "out", seed=0)
    manifest, rejected, duplicates = _read(tmp_path / "out")
    why = dict(zip(rejected["path"], rejected["reason"], strict=True))
    assert why[str(folder.root / "china" / "link_out.png")].startswith("symlink out of the dataset root")
    assert why[str(folder.root / "flower" / "linked_dir")].startswith("symlinked folder")
    assert why[str(folder.root / "stray.jpg")].startswith("not in a class folder")
    assert len(why) == 3 and res.n_images == len(folder.good) + 1  # the link inside the root is an image
    link_in = manifest.set_index("image_id").loc["flower/link_in.png"]
    assert link_in["duplicate_of"] == "china/004_png_rgb.png"
    assert link_in["split"] == manifest.set_index("image_id").loc["china/004_png_rgb.png", "split"]
    assert duplicates["note"].str.contains("label differs").all() and duplicates["same_file"].all()


def test_empty_class_fails_naming_it(tmp_path):
    folder = photo_folder(tmp_path / "root", broken=False)
    (folder.root / "zebra").mkdir()
    (folder.root / "zebra" / ".hidden").write_text("x")
    with pytest.raises(PipelineError, match=r"\['zebra'\] hold no files"):
        prepare(Dataset(source="imagefolder", root=str(folder.root)), tmp_path / "out", seed=0)
    shutil.rmtree(folder.root / "zebra")
    (folder.root / "yak").mkdir()
    (folder.root / "yak" / "empty.jpg").write_bytes(b"")
    with pytest.raises(PipelineError, match=r"\['yak'\] have no decodable image"):
        prepare(Dataset(source="imagefolder", root=str(folder.root)), tmp_path / "out", seed=0)
    assert "yak/empty.jpg" in (tmp_path / "out" / "rejected.csv").read_text()  # written before failing


# ---- duplicates ---------------------------------------------------------------------------------------------

def _dup_folder(root: Path, n: int = 12) -> Path:
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for i in range(n):
            (root / cls / f"{i:02d}.png").write_bytes(encode(crop(cls, i), "png_rgb")[0])
    return root


def test_duplicates_share_one_split_and_are_reported(tmp_path):
    root = _dup_folder(tmp_path / "d")
    for i in range(12):  # a byte copy and a re-encoded copy (same pixels, other file) of every china image
        shutil.copy(root / "china" / f"{i:02d}.png", root / "china" / f"{i:02d}_copy.png")
        Image.open(root / "china" / f"{i:02d}.png").save(root / "china" / f"{i:02d}_again.bmp")
    for seed in (0, 1, 2):
        res = prepare(Dataset(source="imagefolder", root=str(root)), tmp_path / f"o{seed}", seed=seed)
        manifest, _, duplicates = _read(tmp_path / f"o{seed}")
        assert res.n_images == 12 * 4 and res.n_duplicates == 24 and res.n_dropped == 0
        assert (manifest.groupby("pixel_sha256")["split"].nunique() == 1).all()
        assert set(manifest.loc[manifest["label"] == "china", "split"]) == {"train", "val", "test"}
        dup = manifest.dropna(subset=["duplicate_of"]).set_index("image_id")
        assert sorted(dup.index) == sorted(f"china/{i:02d}_{k}" for i in range(12)
                                           for k in ("again.bmp", "copy.png"))
        assert all(dup.loc[i, "duplicate_of"] == f"china/{i[6:8]}.png" for i in dup.index)
        same = dict(zip(duplicates["image_id"], duplicates["same_file"], strict=True))
        assert same["china/00_copy.png"] and not same["china/00_again.bmp"]
        assert duplicates["kept"].all() and not duplicates["note"].fillna("").any()


def test_manifest_splits_keep_the_first_copy_of_a_straddling_duplicate(tmp_path):
    root = _dup_folder(tmp_path / "d", n=6)
    shutil.copy(root / "china" / "00.png", root / "china" / "00_copy.png")
    shutil.copy(root / "flower" / "01.png", root / "flower" / "01_copy.png")
    rows = [("china/00.png", "china", "test"), ("china/00_copy.png", "china", "train"),
            ("flower/01_copy.png", "flower", "val"), ("flower/01.png", "flower", "train")]
    rows += [(f"{c}/{i:02d}.png", c, "train") for c in CLASSES for i in range(2, 6)]
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(root / "manifest.csv", index=False)
    res = prepare(Dataset(source="manifest", root=str(root)), tmp_path / "out", seed=0)
    manifest, _, duplicates = _read(tmp_path / "out")
    kept = manifest.set_index("image_id")["split"]
    assert kept["china/00.png"] == "test" and "china/00_copy.png" not in kept
    assert kept["flower/01_copy.png"] == "val" and "flower/01.png" not in kept  # first row wins, not the name
    assert res.n_dropped == 2 and res.n_images == len(rows) - 2
    assert set(duplicates.loc[~duplicates["kept"], "image_id"]) == {"china/00_copy.png", "flower/01.png"}
    assert duplicates["note"].str.startswith("dropped").all()
    assert (manifest.groupby("pixel_sha256")["split"].nunique() == 1).all()


# ---- manifests: sources and untrusted input -----------------------------------------------------------------

@pytest.fixture
def listed(tmp_path) -> Path:
    folder = photo_folder(tmp_path / "shop", broken=False)
    rows = [(Path(p).relative_to(folder.root).as_posix(), Path(p).relative_to(folder.root).parts[0])
            for p in sorted(folder.good)]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(folder.root / "manifest.csv", index=False)
    return folder.root


def _prep(root, tmp_path, **kw):
    return prepare(Dataset(source="manifest", root=str(root), **kw), tmp_path / "out", seed=0)


def test_manifest_folder_form_and_parquet_with_own_label_column(listed, tmp_path):
    res = _prep(listed, tmp_path)
    assert res.n_images == len(MODES) * 2 and res.n_rejected == 0
    frame = pd.read_csv(listed / "manifest.csv").rename(columns={"label": "kind"})
    frame["kind"] = frame["kind"].map({"china": 7, "flower": 9})  # integer labels, as parquet keeps them
    (listed / "manifest.csv").unlink()
    frame.to_parquet(listed / "list.parquet")
    _prep(listed / "list.parquet", tmp_path, label_column="kind")
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert set(manifest["label"]) == {"7", "9"} and len(manifest) == len(frame)
    assert set(manifest["image_id"]) == set(frame["path"])
    with pytest.raises(PipelineError, match=r"no label column 'label' \(its columns: path, kind\)"):
        _prep(listed / "list.parquet", tmp_path)


def test_manifest_missing_files_are_rejected_not_fatal(listed, tmp_path):
    with open(listed / "manifest.csv", "a") as f:
        f.write("china/gone.jpg,china\n")
    res = _prep(listed, tmp_path)
    rejected = pd.read_csv(tmp_path / "out" / "rejected.csv")
    assert rejected["path"].tolist() == [str(listed / "china" / "gone.jpg")]
    assert rejected["reason"].iloc[0].startswith("unreadable") and res.n_images == len(MODES) * 2


@pytest.mark.parametrize("bad, why", [
    ("../outside.png", "'..' leads outside it"),
    ("china/../../outside.png", "'..' leads outside it"),
    ("ABS", "absolute path outside the manifest's folder"),
    ("china/link.png", "a symlink out of it"),
])
def test_manifest_paths_escaping_the_folder_fail(listed, tmp_path, bad, why):
    outside = listed.parent / "outside.png"
    outside.write_bytes(encode(crop("china", 40), "png_rgb")[0])
    os.symlink(outside, listed / "china" / "link.png")
    bad = str(outside) if bad == "ABS" else bad
    frame = pd.read_csv(listed / "manifest.csv")
    frame.loc[len(frame)] = [bad, "china"]
    frame.to_csv(listed / "manifest.csv", index=False)
    with pytest.raises(PipelineError, match="leave the manifest's folder") as err:
        _prep(listed, tmp_path)
    assert why in str(err.value) and f"row {len(frame)} {bad!r}" in str(err.value)
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def test_manifest_absolute_path_inside_its_folder_is_fine(listed, tmp_path):
    frame = pd.read_csv(listed / "manifest.csv")
    frame.loc[0, "path"] = str(listed / frame.loc[0, "path"])
    frame.to_csv(listed / "manifest.csv", index=False)
    assert _prep(listed, tmp_path).n_images == len(frame)


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.assign(label=f["label"].where(f.index != 3, "")), r"empty label \(label\) in row 4"),
    (lambda f: f.assign(path=f["path"].where(f.index != 0, "")), "empty path in row 1"),
    (lambda f: pd.concat([f, f.iloc[[2]]]), "lists one file more than once"),
    (lambda f: f.iloc[:0], "has no rows"),
    (lambda f: f.rename(columns={"path": "file"}), "has no 'path' column"),
    (lambda f: f.assign(split="holdout"), r"split values \['holdout'\]"),
    (lambda f: f.assign(label=f["label"].where(f.index != 0, "ghost"), path=f["path"].where(
        f.index != 0, "china/missing.png")), r"class\(es\) \['ghost'\] have no decodable image"),
])
def test_bad_manifests_fail_clearly(listed, tmp_path, edit, message):
    edit(pd.read_csv(listed / "manifest.csv")).to_csv(listed / "manifest.csv", index=False)
    with pytest.raises(PipelineError, match=message):
        _prep(listed, tmp_path)


def test_manifest_folder_needs_exactly_one_manifest(listed, tmp_path):
    pd.read_csv(listed / "manifest.csv").to_parquet(listed / "manifest.parquet")
    with pytest.raises(PipelineError, match="exactly one of manifest.csv, manifest.parquet"):
        _prep(listed, tmp_path)


# ---- torchvision --------------------------------------------------------------------------------------------

def _idx(path: Path, array: np.ndarray) -> None:
    """An MNIST idx file (big-endian header, uint8 data), as torchvision's MNIST reads it."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _mnist(root: Path, n_train: int = 40, n_test: int = 12) -> dict[str, np.ndarray]:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    made = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 4
        _idx(raw / f"{part}-images-idx3-ubyte", imgs)
        _idx(raw / f"{part}-labels-idx1-ubyte", labels)
        made[part] = (imgs, labels)
    return made


def test_torchvision_dataset_is_materialised_with_its_test_split(tmp_path):
    made = _mnist(tmp_path / "mnist")
    out = tmp_path / "out"
    res = prepare(Dataset(source="torchvision", name="MNIST", root=str(tmp_path / "mnist")), out, seed=0)
    manifest = pd.read_parquet(out / "manifest.parquet").set_index("image_id")
    assert res.n_images == 52 and res.n_rejected == 0
    assert res.split_counts["test"] == 12 and res.split_counts["val"] == 4 * round(10 * 0.15)
    assert (manifest.loc[[f"test/{i:06d}.png" for i in range(12)], "split"] == "test").all()
    imgs, labels = made["train"]
    for i in (0, 17, 39):
        row = manifest.loc[f"train/{i:06d}.png"]
        assert row["label"] == ["0 - zero", "1 - one", "2 - two", "3 - three"][labels[i]]
        assert Path(row["path"]).is_relative_to(out / "images")
        np.testing.assert_array_equal(np.asarray(images.decode(row["path"]))[..., 0], imgs[i])
    again = prepare(Dataset(source="torchvision", name="MNIST", root=str(tmp_path / "mnist")), out, seed=0)
    assert again == res and len(list((out / "images").rglob("*.png"))) == 52


def test_torchvision_missing_root_or_class_fails_clearly(tmp_path):
    with pytest.raises(PipelineError, match="not found under .*set download: true or place the files"):
        prepare(Dataset(source="torchvision", name="MNIST", root=str(tmp_path / "none")), tmp_path / "o", 0)
    with pytest.raises(PipelineError, match="has no dataset class 'Mnist'"):
        prepare(Dataset(source="torchvision", name="Mnist", root=str(tmp_path)), tmp_path / "o", 0)


def test_dataset_params_keys_belong_to_their_source():
    base = {k: v for k, v in SMALL_PARAMS.items()}
    ok = parse({**base, "datasets": {**base["datasets"], "c": {"source": "torchvision", "name": "CIFAR10",
                                                              "root": "/d", "download": True}}})
    assert ok.datasets["c"].download is True
    for entry, msg in (({"source": "imagefolder", "root": "/d", "download": True}, "torchvision only"),
                       ({"source": "imagefolder", "root": "/d", "label_column": "kind"}, "manifest only")):
        with pytest.raises(PipelineError, match=f"datasets.x: .*{msg}"):
            parse({**base, "datasets": {**base["datasets"], "x": entry}})


class _TrainvalTest:
    """A dataset class shaped like torchvision's OxfordIIITPet: split in (trainval, test), no download."""

    def __init__(self, root: str, split: str = "trainval"):
        from torchvision.datasets.utils import verify_str_arg

        self.split = verify_str_arg(split, "split", ("trainval", "test"))
        self.classes = ["cat", "dog"]
        self.n = 20 if split == "trainval" else 6

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return Image.fromarray(crop(CLASSES[i % 2], i + (0 if self.split == "trainval" else 40))), i % 2


def test_torchvision_classes_by_split_name_and_without_splits(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd, "TrainvalTest", type("TrainvalTest", (_TrainvalTest, tvd.VisionDataset), {}),
                        raising=False)
    res = prepare(Dataset(source="torchvision", name="TrainvalTest", root=str(tmp_path)), tmp_path / "o1", 0)
    assert res.split_counts == {"train": 20 - 2 * round(10 * 0.15), "val": 2 * round(10 * 0.15), "test": 6}
    ids = set(pd.read_parquet(tmp_path / "o1" / "manifest.parquet")["image_id"])
    assert {"trainval/000000.png", "test/000005.png"} <= ids

    folder = photo_folder(tmp_path / "tvroot", broken=False)  # torchvision's own ImageFolder: one part
    res = prepare(Dataset(source="torchvision", name="ImageFolder", root=str(folder.root)), tmp_path / "o2", 0)
    assert res.n_images == len(folder.good)
    manifest = pd.read_parquet(tmp_path / "o2" / "manifest.parquet")
    assert set(manifest["label"]) == set(CLASSES) and set(manifest["split"]) == {"train", "val", "test"}
    with pytest.raises(PipelineError, match="ImageFolder cannot download; set download: false"):
        prepare(Dataset(source="torchvision", name="ImageFolder", root=str(folder.root), download=True),
                    tmp_path / "o3", 0)
