"""Source huggingface on real `datasets` objects built here from real digit images: save_to_disk folders,
parquet files and folders, a Hub dataset in its cache folder read offline; ClassLabel names, the dataset's own
splits, broken rows named in rejected.csv, bad params and bad datasets failing in one line."""
from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest

from tests.conftest import SMALL_PARAMS
from tests.transferlab.data.hf_digits import NAMES, digit_files, digits_dict, hf_dataset
from transferlab.config.errors import PipelineError
from transferlab.config.params import Dataset, parse
from transferlab.data import images
from transferlab.data.prepare import prepare


def _prep(tmp_path: Path, **entry):
    out = tmp_path / "out"
    res = prepare(Dataset(source="huggingface", **entry), out, seed=0)
    return res, pd.read_parquet(out / "manifest.parquet"), pd.read_csv(out / "rejected.csv", dtype=str)


@pytest.fixture
def connections(monkeypatch) -> list:
    """Every attempt to open a connection, recorded and refused as a machine without a network refuses it
    (`datasets` swallows the error and falls back to its cache, so the record is what shows an attempt)."""
    tried = []

    def refuse(*args, **kwargs):
        tried.append(args)
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return tried


@pytest.fixture(scope="module")
def saved(tmp_path_factory, digits_root):
    """A DatasetDict (train: 4 per digit, row 7 broken; test: 1 per digit) saved with save_to_disk."""
    data, files = digits_dict(digits_root, train=4, test=1, broken_at=(7,))
    root = tmp_path_factory.mktemp("hf") / "digits"
    data.save_to_disk(str(root))
    return root, files


def test_save_to_disk_dict_keeps_splits_and_class_names_and_names_the_broken_row(saved, tmp_path, connections):
    root, files = saved
    res, manifest, rejected = _prep(tmp_path, root=str(root))
    out = tmp_path / "out"
    assert rejected["path"].tolist() == [str(out / "images" / "train" / "000007.png")]  # split/index
    assert rejected["label"].tolist() == [NAMES[files["train"][7][1]]]
    assert rejected["reason"].iloc[0].startswith("undecodable") and res.n_rejected == 1
    assert res.n_images == 49 == len(manifest)  # nothing else lost
    assert set(manifest["label"]) == set(NAMES)
    by_id = manifest.set_index("image_id")
    assert (by_id.loc[[f"test/{i:06d}.png" for i in range(10)], "split"] == "test").all()
    # val drawn from train per class: round(0.15 * 4) = 1, none of the three good ones of row 7's class
    assert res.split_counts == {"train": 30, "val": 9, "test": 10}
    for part, i in (("train", 0), ("train", 39), ("test", 9)):
        src, c = files[part][i]
        row = by_id.loc[f"{part}/{i:06d}.png"]
        assert row["label"] == NAMES[c] and Path(row["path"]).is_relative_to(out / "images")
        assert row["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()  # the stored file, as it was
        np.testing.assert_array_equal(np.asarray(images.decode(row["path"])), np.asarray(images.decode(src)))
    again, *_ = _prep(tmp_path, root=str(root))
    assert again == res and len(list((out / "images").rglob("*.png"))) == 50
    assert connections == []


def test_one_saved_dataset_is_split_by_prepare(digits_root, tmp_path):
    hf_dataset(digit_files(digits_root, 0, 4)).save_to_disk(str(tmp_path / "one"))
    res, manifest, _ = _prep(tmp_path, root=str(tmp_path / "one"))
    assert res.split_counts == {"train": 20, "val": 10, "test": 10}
    assert manifest["image_id"].str.startswith("train/").all()


@pytest.mark.parametrize("layout", ["folders", "names"])
def test_parquet_folder_keeps_the_split_its_folders_or_names_give(saved, tmp_path, layout, connections,
                                                                  monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "user-cache")
    data = datasets.load_from_disk(str(saved[0]))
    data["validation"] = data["train"].select(range(10, 20))
    data["train"] = data["train"].select([i for i in range(40) if not 10 <= i < 20])
    paths = ({"train": "train/0000.parquet", "validation": "validation/0000.parquet", "test": "test/0.parquet"}
             if layout == "folders" else {"train": "data/train-00000-of-00001.parquet",
                                          "validation": "data/validation-00000-of-00001.parquet",
                                          "test": "test.parquet"})
    for split, rel in paths.items():
        (tmp_path / "pq" / rel).parent.mkdir(parents=True, exist_ok=True)
        data[split].to_parquet(str(tmp_path / "pq" / rel))
    res, manifest, rejected = _prep(tmp_path, root=str(tmp_path / "pq"))
    assert res.split_counts == {"train": 29, "val": 10, "test": 10}  # the dataset's own val: none drawn
    assert rejected["path"].str.endswith("images/train/000007.png").all() and len(rejected) == 1
    val = manifest[manifest["split"] == "val"]
    assert val["image_id"].str.startswith("validation/").all() and set(manifest["label"]) == set(NAMES)
    assert connections == [] and not (tmp_path / "user-cache").exists()  # streamed: no cache, no lock files


def test_parquet_file_with_plain_columns_and_integer_labels(digits_root, tmp_path):
    rows = digit_files(digits_root, 0, 4)
    frame = pd.DataFrame({"png": [f.read_bytes() for f, _ in rows], "digit": [c for _, c in rows]})
    frame.to_parquet(tmp_path / "digits.parquet")  # no Hugging Face features: bytes and int64
    res, manifest, _ = _prep(tmp_path, root=str(tmp_path / "digits.parquet"), image_column="png",
                             label_column="digit")
    assert res.n_images == 40 and set(manifest["label"]) == {str(c) for c in range(10)}
    assert set(manifest["split"]) == {"train", "val", "test"}  # one unsplit part
    with pytest.raises(PipelineError, match=r"no column 'image' \(its columns: png, digit\); set image_column"):
        _prep(tmp_path, root=str(tmp_path / "digits.parquet"), label_column="digit")


def _hub_cache(cache: Path, repo_id: str, parquet: dict[str, list[str]]) -> None:
    """The cache folder load_dataset(repo_id, cache_dir=cache) leaves behind for a parquet-backed Hub dataset:
    the same builder (datasets' Parquet) prepares it, from local files instead of the Hub's."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    owner, name = repo_id.split("/")
    builder = Parquet(cache_dir=str(cache), dataset_name=name, config_name="default", config_id="default",
                      hash="0123456789abcdef", data_files=parquet)
    builder.download_and_prepare()
    # repo_id carries the namespace into the folder name; the builder refuses local files with a repo_id
    os.rename(cache / name, cache / f"{owner}___{name}")


def test_hub_dataset_is_read_offline_from_its_cache_folder(saved, tmp_path, monkeypatch, connections):
    data = datasets.load_from_disk(str(saved[0]))
    parquet = {}
    for split in data:
        data[split].to_parquet(str(tmp_path / f"{split}.parquet"))
        parquet[split] = [str(tmp_path / f"{split}.parquet")]
    cache = tmp_path / "hf-cache"
    _hub_cache(cache, "someone/tiny-digits", parquet)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # as without the variables: online
    res, manifest, rejected = _prep(tmp_path, root=str(cache), name="someone/tiny-digits")
    assert res.n_images == 49 and res.split_counts["test"] == 10 and set(manifest["label"]) == set(NAMES)
    assert rejected["path"].str.endswith("images/train/000007.png").all() and len(rejected) == 1
    assert datasets.config.HF_HUB_OFFLINE is False  # offline only while reading
    with pytest.raises(PipelineError, match=r"'someone/other' is not in the cache folder .* never downloads"):
        _prep(tmp_path, root=str(cache), name="someone/other")
    with pytest.raises(PipelineError, match="cache folder .*not found"):
        _prep(tmp_path, root=str(tmp_path / "nowhere"), name="someone/tiny-digits")
    with pytest.raises(PipelineError, match="is a save_to_disk folder, not a cache folder: leave out name"):
        _prep(tmp_path, root=str(saved[0]), name="someone/tiny-digits")
    assert connections == []


def test_rows_without_image_or_label_are_refused_by_row(digits_root, tmp_path):
    rows = digit_files(digits_root, 0, 3)
    (tmp_path / "ds" / "imgs").mkdir(parents=True)
    (tmp_path / "ds" / "imgs" / "inside.png").write_bytes(rows[0][0].read_bytes())
    outside = tmp_path / "outside.png"
    outside.write_bytes(rows[1][0].read_bytes())
    image = [{"bytes": f.read_bytes(), "path": None} for f, _ in rows]
    image[2], image[3], image[4] = None, {"bytes": None, "path": str(outside)}, {"bytes": None, "path": "gone.png"}
    image[5] = {"bytes": None, "path": "imgs/inside.png"}  # inside the dataset's folder: copied
    labels = [c for _, c in rows]
    labels[6] = -1  # ClassLabel's "no label"
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
    frame = datasets.Dataset.from_dict({"image": image, "label": labels}, features=features)
    frame.to_parquet(str(tmp_path / "ds" / "rows.parquet"), batch_size=10)  # paths stay paths in parquet
    res, manifest, rejected = _prep(tmp_path, root=str(tmp_path / "ds"))
    why = dict(zip(rejected["path"], rejected["reason"], strict=True))
    assert why == {"train/000002": "no image in this row", "train/000004": why["train/000004"],
                   "train/000003": why["train/000003"], "train/000006": "no label (label is -1)"}
    assert why["train/000003"].startswith("image stored as a path outside the dataset's folder")
    assert why["train/000004"].startswith("unreadable: image file") and "gone.png" in why["train/000004"]
    assert res.n_images == 30 - 4 and "train/000005.png" in set(manifest["image_id"])


def test_bad_datasets_fail_clearly(saved, digits_root, tmp_path):
    data = datasets.load_from_disk(str(saved[0]))
    cases = {
        "extra": (datasets.DatasetDict(train=data["train"], extra=data["test"]),
                  r"split\(s\) \['extra'\] are not accepted \(train \(or training\), validation"),
        "only-test": (datasets.DatasetDict(test=data["test"]), "has no train split"),
        "float-labels": (data["test"].cast_column("label", datasets.Value("float32")),
                         "column 'label' holds .*float32.*set label_column"),
        "no-images": (data["test"].cast_column("label", datasets.Value("int64")).rename_columns(
            {"image": "x", "label": "image"}), "column 'image' holds .*int64.*not images"),
    }
    for name, (bad, message) in cases.items():
        bad.save_to_disk(str(tmp_path / name))
        with pytest.raises(PipelineError, match=message):
            _prep(tmp_path, root=str(tmp_path / name), **({"label_column": "x"} if name == "no-images" else {}))
    (tmp_path / "mixed" / "train").mkdir(parents=True)
    data["train"].to_parquet(str(tmp_path / "mixed" / "train" / "0.parquet"))
    data["test"].to_parquet(str(tmp_path / "mixed" / "holdout.parquet"))
    with pytest.raises(PipelineError, match=r"\['holdout.parquet'\] name no split while others do"):
        _prep(tmp_path, root=str(tmp_path / "mixed"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError, match="neither a save_to_disk folder .* nor holds .parquet files"):
        _prep(tmp_path, root=str(tmp_path / "empty"))
    with pytest.raises(PipelineError, match="not found; give a save_to_disk folder"):
        _prep(tmp_path, root=str(tmp_path / "nowhere"))


@pytest.mark.parametrize("entry, message", [
    ({"source": "imagefolder", "root": "/d", "image_column": "img"}, "`image_column` is for source huggingface"),
    ({"source": "manifest", "root": "/d", "name": "x"}, "`name` is for sources torchvision and huggingface"),
    ({"source": "huggingface", "root": "/d", "download": True}, "`download` is for source torchvision only"),
    ({"source": "huggingface", "root": "/d", "name": "a/b/c"}, "`name` 'a/b/c' is not a Hub dataset id"),
    ({"source": "huggingface", "root": "/d", "name": "./local"}, "local save_to_disk or parquet dataset goes in"),
    ({"source": "huggingface", "root": "/d", "label_column": "image"}, "both 'image'; name two columns"),
    ({"source": "huggingface", "root": "/d", "image_column": ""}, "image_column"),
])
def test_bad_params_fail_naming_the_key(entry, message):
    base = dict(SMALL_PARAMS)
    with pytest.raises(PipelineError, match=f"datasets.x.*{message}") as err:
        parse({**base, "datasets": {**base["datasets"], "x": entry}})
    assert "\n" not in str(err.value)


def test_good_params_for_huggingface():
    base = dict(SMALL_PARAMS)
    entries = {"a": {"source": "huggingface", "root": "/data/my_dataset"},
               "b": {"source": "huggingface", "root": "/hf-cache", "name": "owner/ds", "image_column": "img",
                     "label_column": "fine_label"}}
    ok = parse({**base, "datasets": {**base["datasets"], **entries}}).datasets
    assert ok["a"].image_column == "image" and ok["a"].label_column == "label" and ok["a"].name is None
    assert (ok["b"].name, ok["b"].image_column, ok["b"].label_column) == ("owner/ds", "img", "fine_label")
