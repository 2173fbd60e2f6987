"""Source huggingface: a Hugging Face `datasets` dataset (an image column, a label column) read from a local
path, its images written out as files for prepare's decoder to judge.

`root` is a save_to_disk folder (a Dataset or a DatasetDict), a .parquet file or a folder of them (a file keeps
the split its folder or its name gives: train/..., test-00000-of-00001.parquet), or, with `name`, the cache
folder holding the Hub dataset `name`. Every read is offline, whatever HF_HUB_OFFLINE / HF_DATASETS_OFFLINE
say: prepare never downloads, nor pings the Hub. Splits: validation -> val, test -> test; train is left for
prepare to divide (val, and test where the dataset has none). Images are read undecoded (Image(decode=False)),
so a broken one never stops the read: its bytes become images/<split>/<index>.<ext> and prepare refuses that
file by name; rows with no image or no label are refused here, as <split>/<index>.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image as PILImage
from tqdm import tqdm

from transferlab.config.errors import PipelineError
from transferlab.config.sections import Dataset

# The split names `datasets` itself reads from file names, by the split prepare gives them (train: None, so
# prepare draws what the dataset lacks from it).
_SPLIT_NAMES = {None: ("train", "training"), "val": ("validation", "valid", "val", "dev"),
               "test": ("test", "testing", "eval", "evaluation")}
_SPLIT_OF = {name: split for split, names in _SPLIT_NAMES.items() for name in names}
_ACCEPTED = "train (or training), validation (valid, val, dev), test (testing, eval, evaluation)"
_MAGIC = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"),
          (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))
_IMAGE_DTYPES = ("binary", "large_binary", "string", "large_string")
_LABEL_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool", "string",
                 "large_string")


@contextmanager
def _offline() -> Iterator[None]:
    """`datasets` and the Hub client offline: a dataset not in the cache fails instead of downloading, and no
    read pings the network (online, `datasets` counts each load of its parquet builder with a request)."""
    import datasets.config
    import huggingface_hub.constants as hub

    saved = datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, hub.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, hub.HF_HUB_OFFLINE = saved


def _saved(root: Path) -> bool:
    return (root / "dataset_dict.json").is_file() or (root / "state.json").is_file()


def _from_cache(name: str, root: Path) -> dict:
    import datasets

    hint = (f"prepare never downloads: where there is internet run datasets.load_dataset({name!r}, "
            f"cache_dir=...) and copy that folder to {root}, or save_to_disk the dataset and give that folder "
            "as root without name")
    if _saved(root):
        raise PipelineError(f"dataset {root} is a save_to_disk folder, not a cache folder: leave out name")
    if not root.is_dir():
        raise PipelineError(f"Hugging Face cache folder {root} not found; {hint}")
    try:
        return dict(datasets.load_dataset(name, cache_dir=str(root)))
    except (ConnectionError, FileNotFoundError, ValueError) as err:
        why = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PipelineError(f"Hub dataset {name!r} is not in the cache folder {root} ({why}); {hint}") from None


def _parquet_split(path: Path, root: Path) -> str | None:
    """The split name a parquet file's folders (train/...) or file name (train-00000.parquet) give, or None."""
    for part in path.relative_to(root).parent.parts:
        if part.lower() in _SPLIT_OF:
            return part.lower()
    stem = path.stem.lower()
    return next((n for n in sorted(_SPLIT_OF, key=len, reverse=True)
                 if stem == n or (stem.startswith(n) and stem[len(n)] in "-._ 0123456789")), None)


def _parquet_files(root: Path) -> dict[str, list[str]]:
    if root.is_file():
        return {_parquet_split(root, root.parent) or "train": [str(root)]}
    files = sorted(p for p in root.rglob("*.parquet")
                   if not any(s.startswith(".") for s in p.relative_to(root).parts))
    if not files:
        raise PipelineError(f"dataset {root} is neither a save_to_disk folder (dataset_dict.json or "
                            "state.json) nor holds .parquet files; for a Hugging Face cache folder set name: "
                            "<owner>/<dataset>")
    split = {f: _parquet_split(f, root) for f in files}
    unnamed = [f.relative_to(root).as_posix() for f, s in split.items() if s is None]
    if unnamed and len(unnamed) < len(files):
        raise PipelineError(f"dataset {root}: parquet file(s) {unnamed[:3]} name no split while others do; "
                            f"put each file under a split's folder or name, accepted: {_ACCEPTED}")
    by_split: dict[str, list[str]] = {}
    for f, s in split.items():
        by_split.setdefault(s or "train", []).append(str(f))
    return by_split


def _open(ds: Dataset, scratch: str) -> tuple[dict, bool]:
    """(the dataset's parts by split name, whether those names are its splits) as `datasets` reads them;
    scratch: a folder for what `datasets` writes beside a streamed read (its locks)."""
    import datasets

    root = Path(ds.root)
    if ds.name:
        return _from_cache(ds.name, root), True
    if not root.exists():
        raise PipelineError(f"dataset {root} not found; give a save_to_disk folder, a .parquet file or folder, "
                            "or a Hugging Face cache folder with name: <owner>/<dataset>")
    if root.is_dir() and _saved(root):
        try:
            loaded = datasets.load_from_disk(str(root))
        except (FileNotFoundError, ValueError, OSError) as err:
            raise PipelineError(f"dataset {root}: datasets.load_from_disk cannot read it ({err})") from None
        if isinstance(loaded, datasets.DatasetDict):
            return dict(loaded), True
        part = re.sub(r"[^\w.-]", "_", str(loaded.split or "train"))  # e.g. train[:10%]
        return {part: loaded}, False  # one Dataset, whatever its split: prepare splits it
    if root.is_file() and root.suffix != ".parquet":
        raise PipelineError(f"dataset {root} is not a .parquet file; give a parquet file or a folder")
    files = _parquet_files(root)
    try:  # streamed: nothing converted into a cache on the way
        return dict(datasets.load_dataset("parquet", data_files=files, streaming=True, cache_dir=scratch)), True
    except (FileNotFoundError, ValueError, OSError) as err:
        raise PipelineError(f"dataset {root}: cannot read its parquet file(s) ({err})") from None


def _check(features, ds: Dataset, part: str) -> list[str] | None:
    """The label column's ClassLabel names (None: its values are the labels); PipelineError for bad columns."""
    import datasets

    known = ", ".join(features or {}) or "(none)"
    for key, column in (("image_column", ds.image_column), ("label_column", ds.label_column)):
        if column not in (features or {}):
            raise PipelineError(f"dataset {ds.root} ({part}) has no column {column!r} (its columns: {known}); "
                                f"set {key} in the dataset's params entry")
    image, label = features[ds.image_column], features[ds.label_column]
    castable = isinstance(image, datasets.Value) and image.dtype in _IMAGE_DTYPES  # encoded bytes or file paths
    if not (isinstance(image, datasets.Image) or castable or (isinstance(image, dict) and "bytes" in image)):
        raise PipelineError(f"dataset {ds.root}: column {ds.image_column!r} holds {image}, not images; set "
                            "image_column to the column of images (datasets.Image, bytes or file paths)")
    if isinstance(label, datasets.ClassLabel):
        return list(label.names)
    if not (isinstance(label, datasets.Value) and label.dtype in _LABEL_DTYPES):
        raise PipelineError(f"dataset {ds.root}: column {ds.label_column!r} holds {label}, not one class per "
                            "row; set label_column to a ClassLabel, integer or string column")
    return None


def _suffix(data: bytes, path: str | None) -> str:
    """The file extension of encoded image bytes (their magic number, else the stored name's); '' if unknown."""
    found = next((ext for magic, ext in _MAGIC if data.startswith(magic)), None)
    if found is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        found = ".webp"
    ext = Path(path or "").suffix.lower()
    return found or (ext if ext in PILImage.registered_extensions() else "")


def _materialise(image: dict, out: Path, base: Path) -> tuple[Path | None, str]:
    """Write one row's image under out (+ its extension): (the file, '') or (None, why it has none)."""
    if image.get("bytes"):
        dest = out.with_name(out.name + _suffix(image["bytes"], image.get("path")))
        dest.write_bytes(image["bytes"])
        return dest, ""
    if not image.get("path"):
        return None, "no image in this row"
    src = Path(os.path.normpath(base / image["path"]))
    if os.path.commonpath([os.path.realpath(src), os.path.realpath(base)]) != os.path.realpath(base):
        return None, f"image stored as a path outside the dataset's folder ({src}); save it with the images in"
    if not src.is_file():
        return None, f"unreadable: image file {src} not found"
    dest = out.with_name(out.name + src.suffix.lower())
    shutil.copyfile(src, dest)
    return dest, ""


def _label(value, names: list[str] | None) -> str:
    if value is None or (names is not None and not 0 <= int(value) < len(names)):
        return ""  # ClassLabel's -1: no label
    return names[int(value)] if names is not None else str(value).strip()


def _part(rows, part: str, split: str | None, names: list[str] | None, ds: Dataset, images_dir: Path,
          base: Path) -> tuple[list[tuple], list[tuple]]:
    """One split's rows materialised: (files, refused rows), as collect returns them."""
    import pyarrow as pa

    files, rejected = [], []
    (images_dir / part).mkdir(parents=True, exist_ok=True)
    try:
        for i, row in enumerate(tqdm(rows, desc=f"materialise {Path(ds.root).name} {part}", unit="img",
                                     mininterval=1.0)):
            value, row_id = row[ds.label_column], f"{part}/{i:06d}"
            label = _label(value, names)
            path, why = (None, f"no label ({ds.label_column} is {value})") if not label else _materialise(
                row[ds.image_column] or {}, images_dir / row_id, base)
            if path is None:
                rejected.append((row_id, label, why))
            else:
                files.append((path.relative_to(images_dir).as_posix(), str(path), label, split))
    except (pa.ArrowException, OSError) as err:  # a broken data file
        raise PipelineError(f"dataset {ds.root}: cannot read split {part!r} ({err}); fix or replace it") from None
    return files, rejected


def collect(ds: Dataset, images_dir: Path) -> tuple[list[tuple], list[tuple]]:
    """(files: image_id, path, label, split; refused rows: path, label, reason) of a huggingface dataset entry,
    its images written under images_dir/<split name>/<index>.<ext>."""
    with _offline(), tempfile.TemporaryDirectory(prefix="transferlab-hf-") as scratch:
        return _collect(ds, images_dir, scratch)


def _collect(ds: Dataset, images_dir: Path, scratch: str) -> tuple[list[tuple], list[tuple]]:
    from datasets import Image

    parts, named = _open(ds, scratch)
    unknown = sorted(p for p in parts if p.lower() not in _SPLIT_OF) if named else []
    if unknown:
        raise PipelineError(f"dataset {ds.root}: split(s) {unknown} are not accepted ({_ACCEPTED}); save the "
                            "dataset without them, or rename them")
    if named and not any(_SPLIT_OF[p.lower()] is None for p in parts):
        raise PipelineError(f"dataset {ds.root} has no train split (its splits: {', '.join(parts)}); add one")
    root = Path(ds.root)
    files, rejected = [], []
    for part, data in parts.items():
        names = _check(data.features, ds, part)
        if hasattr(data, "to_iterable_dataset"):  # casting a whole in-memory table would copy its images
            data = data.to_iterable_dataset()
        rows = data.select_columns([ds.image_column, ds.label_column]).cast_column(
            ds.image_column, Image(decode=False))
        got = _part(rows, part, _SPLIT_OF[part.lower()] if named else None, names, ds, images_dir,
                    root if root.is_dir() else root.parent)
        files += got[0]
        rejected += got[1]
    return files, rejected
