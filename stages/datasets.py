"""Dataset sources: list an entry's image files with labels (and splits, where the source fixes them)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from stages.errors import PipelineError
from stages.params import Dataset

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


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


def _imagefolder(root: Path) -> pd.DataFrame:
    if not root.is_dir():
        raise PipelineError(f"dataset root {root} is not a folder; an ImageFolder is root/<class>/<image>")
    rows = [(str(p), p.relative_to(root).parts[0]) for p in sorted(root.rglob("*"))
            if p.is_file() and len(p.relative_to(root).parts) > 1 and not p.name.startswith(".")]
    if not rows:
        raise PipelineError(f"dataset root {root} has no class folders with files; expected root/<class>/<image>")
    return pd.DataFrame(rows, columns=["path", "label"])


def _manifest(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise PipelineError(f"manifest {path} not found; give a CSV or parquet file with path, label[, split]")
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
    missing = {"path", "label"} - set(frame.columns)
    if missing:
        raise PipelineError(f"manifest {path} lacks column(s) {sorted(missing)}; it needs path, label[, split]")
    frame = frame[[c for c in ("path", "label", "split") if c in frame.columns]].astype(str)
    frame["path"] = [str(p if Path(p).is_absolute() else path.parent / p) for p in frame["path"]]
    return frame


def _torchvision(ds: Dataset, images_dir: Path) -> pd.DataFrame:
    import torchvision.datasets as tvd

    cls = getattr(tvd, ds.name or "", None)
    if cls is None:
        raise PipelineError(f"torchvision has no dataset {ds.name!r}; see torchvision.datasets")
    try:
        data = cls(root=ds.root, download=False)
    except (RuntimeError, FileNotFoundError) as err:
        raise PipelineError(f"{ds.name} not found under {ds.root} ({err}); place the files there") from None
    classes = getattr(data, "classes", None)
    rows = []
    for i in range(len(data)):
        img, target = data[i]
        label = str(classes[target]) if classes else str(target)
        dest = images_dir / label / f"{i:06d}.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        img.save(dest)
        rows.append((str(dest), label))
    return pd.DataFrame(rows, columns=["path", "label"])


def list_images(ds: Dataset, images_dir: Path) -> pd.DataFrame:
    """Every candidate file of a dataset entry: columns path, label (and split for manifests)."""
    root = Path(ds.root)
    if ds.source in ("sklearn_digits", "imagefolder"):
        return _imagefolder(root)
    if ds.source == "manifest":
        return _manifest(root)
    return _torchvision(ds, images_dir)
