"""prepare: every decodable image once in the manifest, stratified deterministic splits, rejects recorded."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.projects import subset_imagefolder
from transferlab.config.errors import PipelineError
from transferlab.config.params import Dataset
from transferlab.data.prepare import prepare


def _files(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def full_run(digits_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    ds = Dataset(source="imagefolder", root=str(digits_root), val_fraction=0.15, test_fraction=0.2)
    res = prepare(ds, out, seed=0)
    return ds, res, pd.read_parquet(out / "manifest.parquet"), out


def test_every_image_once(full_run, digits_root):
    _, res, manifest, out = full_run
    assert set(manifest["path"]) == _files(digits_root)
    assert manifest["path"].is_unique and manifest["image_id"].is_unique
    assert len(manifest) == res.n_images == 1797
    assert res.n_rejected == 0 and pd.read_csv(out / "rejected.csv").empty
    assert list(manifest.columns) == ["image_id", "path", "label", "split", "sha256", "pixel_sha256", "width",
                                      "height", "duplicate_of"]
    assert manifest["duplicate_of"].isna().all() and set(manifest["width"]) == {8}
    # labels are the class folders, image ids are paths relative to the root
    for row in manifest.sample(20, random_state=0).itertuples():
        assert Path(row.path).parent.name == row.label
        assert row.image_id == f"{row.label}/{Path(row.path).name}"
    assert sum(res.split_counts.values()) == len(manifest)


def test_splits_are_stratified(full_run):
    ds, _, manifest, _ = full_run
    counts = manifest.groupby(["label", "split"]).size().unstack(fill_value=0)
    assert sorted(counts.index, key=int) == [str(d) for d in range(10)]
    for label, row in counts.iterrows():
        n = row.sum()
        assert row["test"] == round(n * ds.test_fraction), label
        assert row["val"] == round(n * ds.val_fraction), label
        assert row["train"] == n - row["test"] - row["val"] > 0, label


def test_splits_are_deterministic_and_seeded(full_run, tmp_path):
    ds, _, manifest, _ = full_run
    prepare(ds, tmp_path / "again", seed=0)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "again" / "manifest.parquet"), manifest)
    prepare(ds, tmp_path / "other", seed=1)
    other = pd.read_parquet(tmp_path / "other" / "manifest.parquet")
    assert (other["split"] != manifest["split"]).sum() > 100  # another seed, another split
    assert (other.groupby("label")["split"].value_counts().sort_index()
            == manifest.groupby("label")["split"].value_counts().sort_index()).all()


def test_bad_files_are_rejected_with_a_reason(digits_root, tmp_path):
    root = subset_imagefolder(digits_root, tmp_path / "ds", range(3), 10)
    (root / "1" / "empty.png").write_bytes(b"")
    (root / "2" / "notes.png").write_text("this is not an image\n")
    (root / "0" / "readme.txt").write_text("hello")
    ds = Dataset(source="imagefolder", root=str(root))
    res = prepare(ds, tmp_path / "out", seed=0)

    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    rejected = pd.read_csv(tmp_path / "out" / "rejected.csv").set_index("path")
    bad = {str(root / "1" / "empty.png"), str(root / "2" / "notes.png"), str(root / "0" / "readme.txt")}
    assert set(rejected.index) == bad
    assert rejected.loc[str(root / "1" / "empty.png"), "reason"] == "empty file"
    assert rejected.loc[str(root / "2" / "notes.png"), "reason"].startswith("not an image")
    assert rejected.loc[str(root / "2" / "notes.png"), "label"] == 2
    assert not bad & set(manifest["path"])
    assert set(manifest["path"]) == _files(root) - bad
    assert (res.n_images, res.n_rejected) == (30, 3)


def test_manifest_source_with_relative_paths(digits_root, tmp_path):
    root = subset_imagefolder(digits_root, tmp_path / "ds", [3, 8], 10)
    rows = [{"path": p.relative_to(tmp_path).as_posix(), "label": p.parent.name}
            for p in sorted(root.rglob("*.png"))]
    csv = tmp_path / "list.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    res = prepare(Dataset(source="manifest", root=str(csv)), tmp_path / "out", seed=0)

    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert res.n_images == 20 == len(manifest)
    assert sorted(manifest["image_id"]) == sorted(r["path"] for r in rows)  # ids relative to the CSV's folder
    assert all(Path(p).is_file() and Path(p).is_absolute() for p in manifest["path"])
    assert set(manifest["label"]) == {"3", "8"}
    assert set(manifest.groupby("label")["split"].nunique()) == {3}


def test_manifest_source_keeps_given_splits(digits_root, tmp_path):
    root = subset_imagefolder(digits_root, tmp_path / "ds", [1, 2], 6)
    files = sorted(root.rglob("*.png"))
    splits = ["train", "val", "test"] * 4
    frame = pd.DataFrame({"path": [str(p) for p in files], "label": [p.parent.name for p in files],
                          "split": splits})
    frame.to_csv(tmp_path / "list.csv", index=False)
    prepare(Dataset(source="manifest", root=str(tmp_path / "list.csv")), tmp_path / "out", seed=0)
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet").set_index("path")
    assert manifest.loc[frame["path"], "split"].tolist() == splits

    frame.loc[0, "split"] = "holdout"
    frame.to_csv(tmp_path / "list.csv", index=False)
    with pytest.raises(PipelineError, match="holdout"):
        prepare(Dataset(source="manifest", root=str(tmp_path / "list.csv")), tmp_path / "out2", seed=0)


def test_no_decodable_images(tmp_path):
    (tmp_path / "ds" / "a").mkdir(parents=True)
    (tmp_path / "ds" / "a" / "x.png").write_bytes(b"")
    with pytest.raises(PipelineError, match="no decodable images"):
        prepare(Dataset(source="imagefolder", root=str(tmp_path / "ds")), tmp_path / "out", seed=0)
