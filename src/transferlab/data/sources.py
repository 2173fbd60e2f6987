"""Dataset sources: list an entry's files with labels (and splits, where the source fixes them).

Every source yields a Listing: the candidate files (image_id, path, label, split) and the files refused before
any decoding (path, label, reason). Paths never leave the dataset's root: an ImageFolder's symlinks out of it
are refused by name, and a manifest whose paths escape its folder fails as a whole (manifests are untrusted).
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from transferlab.config.errors import PipelineError
from transferlab.config.sections import Dataset

SPLITS = ("train", "val", "test")
MANIFEST_NAMES = ("manifest.csv", "manifest.parquet")
COLUMNS = ["image_id", "path", "label", "split"]
REJECTED = ["path", "label", "reason"]


@dataclass(frozen=True)
class Listing:
    """files: image_id, path, label, split (None where prepare assigns it); rejected: path, label, reason."""

    files: pd.DataFrame
    rejected: pd.DataFrame


def _inside(path: str, base: str) -> bool:
    return os.path.commonpath([path, base]) == base


def _listing(files: list[tuple], rejected: list[tuple]) -> Listing:
    return Listing(pd.DataFrame(files, columns=COLUMNS), pd.DataFrame(rejected, columns=REJECTED))


# ---- imagefolder: root/<class>/[sub/...]<file> -------------------------------------------------------------

def _imagefolder(root: Path) -> Listing:
    if not root.is_dir():
        raise PipelineError(f"dataset root {root} is not a folder; an ImageFolder is root/<class>/<image>")
    real_root = os.path.realpath(root)
    files, rejected, per_class = [], [], {}
    for folder, dirs, names in os.walk(root, followlinks=False):
        rel_dir = Path(folder).relative_to(root)
        label = rel_dir.parts[0] if rel_dir.parts else ""
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if not rel_dir.parts:
            per_class.update({d: 0 for d in dirs if not os.path.islink(os.path.join(folder, d))})
        for d in [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            rejected.append((os.path.join(folder, d), label or d, "symlinked folder, not followed: put the "
                             "images themselves under the dataset root"))
        for name in sorted(n for n in names if not n.startswith(".")):
            path = os.path.join(folder, name)
            if not label:
                rejected.append((path, "", "not in a class folder (an ImageFolder is root/<class>/<file>)"))
            elif os.path.islink(path) and not _inside(os.path.realpath(path), real_root):
                rejected.append((path, label, f"symlink out of the dataset root (to {os.path.realpath(path)})"))
            else:
                files.append(((rel_dir / name).as_posix(), path, label, None))
                per_class[label] = per_class.get(label, 0) + 1
    empty = sorted(c for c, n in per_class.items() if n == 0)
    if empty:
        raise PipelineError(f"dataset root {root}: class folder(s) {empty} hold no files; add images or "
                            "remove the folder(s)")
    if not files:
        raise PipelineError(f"dataset root {root} has no class folders with files; expected root/<class>/<image>")
    return _listing(files, rejected)


# ---- manifest: CSV or parquet with path, <label_column>[, split] --------------------------------------------

def _manifest_file(root: Path) -> Path:
    if root.is_dir():
        found = [root / n for n in MANIFEST_NAMES if (root / n).is_file()]
        if len(found) != 1:
            raise PipelineError(f"manifest folder {root} must hold exactly one of {', '.join(MANIFEST_NAMES)} "
                                f"(found {len(found)})")
        return found[0]
    if not root.is_file():
        raise PipelineError(f"manifest {root} not found; give a CSV or parquet file with path, label[, split] "
                            "(or a folder holding manifest.csv)")
    return root


def _read_table(path: Path) -> pd.DataFrame:
    kind = "parquet" if path.suffix == ".parquet" else "CSV"
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise PipelineError(f"manifest {path}: cannot read it as {kind} ({err}); fix the file") from None


def _text(values: pd.Series) -> pd.Series:
    return pd.Series(["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip()
                      for v in values], index=values.index, dtype=object)


def _check_columns(frame: pd.DataFrame, path: Path, label_column: str) -> None:
    known = ", ".join(map(str, frame.columns)) or "(none)"
    if "path" not in frame.columns:
        raise PipelineError(f"manifest {path} has no 'path' column (its columns: {known}); it needs path, "
                            f"{label_column}[, split]")
    if label_column not in frame.columns:
        raise PipelineError(f"manifest {path} has no label column {label_column!r} (its columns: {known}); "
                            "rename the column or set label_column in the dataset's params entry")
    if frame.empty:
        raise PipelineError(f"manifest {path} has no rows; list one image per row")


def _first_rows(mask: pd.Series, values: pd.Series, n: int = 3) -> str:
    bad = values[mask]
    shown = ", ".join(f"row {i + 1} {v!r}" for i, v in list(bad.items())[:n])
    return shown + (f" and {len(bad) - n} more" if len(bad) > n else "")


def _escapes(raw: str, base: str, real_base: str) -> str:
    """Why a manifest path leaves the manifest's folder ('' when it stays inside)."""
    joined = os.path.normpath(os.path.join(base, raw))
    if not _inside(joined, base):
        return "absolute path outside the manifest's folder" if os.path.isabs(raw) else "'..' leads outside it"
    if not _inside(os.path.realpath(joined), real_base):
        return f"a symlink out of it (to {os.path.realpath(joined)})"
    return ""


def _manifest(root: Path, label_column: str) -> Listing:
    path = _manifest_file(root)
    frame = _read_table(path)
    _check_columns(frame, path, label_column)
    frame = frame.reset_index(drop=True)
    paths, labels = _text(frame["path"]), _text(frame[label_column])
    for what, values in (("path", paths), (f"label ({label_column})", labels)):
        if (values == "").any():
            raise PipelineError(f"manifest {path}: empty {what} in {_first_rows(values == '', values)} (rows "
                                "count from 1 after the header); fill it in or drop the row")
    base = os.path.abspath(path.parent)
    real_base = os.path.realpath(base)
    why = pd.Series([_escapes(p, base, real_base) for p in paths])
    if (why != "").any():
        i = int(np.flatnonzero(why != "")[0])
        raise PipelineError(f"manifest {path}: {int((why != '').sum())} path(s) leave the manifest's folder "
                            f"{base}, first row {i + 1} {paths[i]!r}: {why[i]}; every image must lie inside "
                            "the manifest's folder (move the manifest up to a folder that holds the images)")
    ids = pd.Series([Path(os.path.relpath(os.path.normpath(os.path.join(base, p)), base)).as_posix()
                     for p in paths])
    twice = ids.duplicated(keep=False)
    if twice.any():
        raise PipelineError(f"manifest {path} lists one file more than once: {_first_rows(twice, ids)}; keep one "
                            "row per image")
    split = [None] * len(frame)
    if "split" in frame.columns:
        split = _text(frame["split"])
        bad = sorted(set(split) - set(SPLITS))
        if bad:
            raise PipelineError(f"manifest {path}: split values {bad} are not train, val or test; fix them or "
                                "drop the split column (prepare then assigns splits)")
    folder = path.parent  # as given: a relative root keeps the manifest's paths relative to the repository
    files = [(i, os.path.normpath(folder / i), lab, s) for i, lab, s in zip(ids, labels, split, strict=True)]
    return _listing(files, [])


# ---- torchvision: a dataset class read from a local root, materialised as PNG files -------------------------

def _tv_class(name: str):
    import torchvision.datasets as tvd

    cls = getattr(tvd, name, None)
    if not (isinstance(cls, type) and issubclass(cls, tvd.VisionDataset)):
        known = ", ".join(n for n in ("CIFAR10", "CIFAR100", "MNIST", "FashionMNIST", "SVHN", "STL10"))
        raise PipelineError(f"torchvision.datasets has no dataset class {name!r} (e.g. {known})")
    return cls


def _tv_parts(cls, ds: Dataset) -> list[tuple[str | None, dict]]:
    """(split, constructor kwargs) for each part of a torchvision dataset: its own splits where the class has
    them (train=... or split=...; its train or trainval part is left for prepare to divide into train and
    val), else one part whose split prepare assigns."""
    sig = inspect.signature(cls.__init__).parameters
    kw: dict = {"root": ds.root}
    if "download" in sig:
        kw["download"] = ds.download
    elif ds.download:
        raise PipelineError(f"torchvision {ds.name} cannot download; set download: false and place the files "
                            f"under {ds.root}")
    if "train" in sig:
        return [(None, {**kw, "train": True}), ("test", {**kw, "train": False})]
    if "split" in sig:
        return [(None if s in ("train", "trainval") else s, {**kw, "split": s})
                for s in ("train", "trainval", "val", "test")]
    return [(None, kw)]


def _tv_open(cls, ds: Dataset, kw: dict):
    try:
        return cls(**kw)
    except ValueError as err:  # torchvision's verify_str_arg: this class has no such split
        if "split" in kw:
            return None
        raise PipelineError(f"torchvision {ds.name}: {err}") from None
    except TypeError as err:
        raise PipelineError(f"torchvision {ds.name} needs arguments this source does not give ({err}); "
                            "export it as an ImageFolder or a manifest instead") from None
    except (RuntimeError, FileNotFoundError, OSError) as err:
        hint = "place the dataset's files there" if ds.download else "set download: true or place the files"
        raise PipelineError(f"torchvision {ds.name}: not found under {ds.root} ({err}); {hint}") from None


def _torchvision(ds: Dataset, images_dir: Path) -> Listing:
    cls = _tv_class(ds.name or "")
    files, parts = [], []
    for split, kw in _tv_parts(cls, ds):
        if kw.get("split") == "trainval" and any(kw2.get("split") == "train" for _, _, kw2 in parts):
            continue  # trainval only where the class has no train split (it would repeat train and val)
        data = _tv_open(cls, ds, kw)
        if data is not None:
            parts.append((split, data, kw))
    if not parts:
        raise PipelineError(f"torchvision {ds.name}: no train/val/test split could be opened under {ds.root}")
    for split, data, kw in parts:
        classes = getattr(data, "classes", None)
        part = kw.get("split") or ("train" if kw.get("train", True) else "test")
        (images_dir / part).mkdir(parents=True, exist_ok=True)
        for i in tqdm(range(len(data)), desc=f"materialise {ds.name} {part}", unit="img", mininterval=1.0):
            img, target = data[i]
            if not isinstance(img, Image.Image) or not isinstance(target, (int, np.integer)):
                raise PipelineError(f"torchvision {ds.name} is not an image classification dataset "
                                    "(items are not (PIL image, class index)); use an ImageFolder or manifest")
            image_id = f"{part}/{i:06d}.png"
            img.save(images_dir / image_id)
            label = str(classes[target]) if classes else str(int(target))
            files.append((image_id, str(images_dir / image_id), label, split))
    return _listing(files, [])


def collect_files(ds: Dataset, images_dir: Path) -> Listing:
    """Every candidate file of a dataset entry. File sources are listed where they lie; a torchvision dataset
    (held in memory) is first written out as PNG files under images_dir, a huggingface one as its images' files."""
    root = Path(ds.root)
    if ds.source in ("sklearn_digits", "imagefolder"):
        return _imagefolder(root)
    if ds.source == "manifest":
        return _manifest(root, ds.label_column)
    if ds.source == "huggingface":
        from transferlab.data import huggingface  # `datasets` is imported only where a dataset uses it

        return _listing(*huggingface.collect(ds, images_dir))
    return _torchvision(ds, images_dir)
