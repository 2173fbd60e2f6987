"""Hugging Face `datasets` objects built from real digit images (tests.conftest's digits_root), with broken
image rows where a test asks for them: nothing downloaded."""
from __future__ import annotations

from pathlib import Path

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digit_files(digits_root: Path, start: int, per_class: int) -> list[tuple[Path, int]]:
    """(file, class index) of images start..start+per_class of each digit class, class by class."""
    rows = []
    for c in range(10):
        files = sorted((Path(digits_root) / str(c)).glob("*.png"))[start:start + per_class]
        assert len(files) == per_class
        rows += [(f, c) for f in files]
    return rows


def hf_dataset(rows: list[tuple[Path, int]], broken_at: tuple[int, ...] = ()):
    """A datasets.Dataset with an Image column `image` (the files' bytes; cut in half, so truncated PNGs, at the
    rows broken_at) and a ClassLabel column `label` named by NAMES."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
    data = [f.read_bytes() for f, _ in rows]
    images = [{"bytes": d[: len(d) // 2] if i in broken_at else d, "path": None} for i, d in enumerate(data)]
    return datasets.Dataset.from_dict({"image": images, "label": [c for _, c in rows]}, features=features)


def digits_dict(digits_root: Path, train: int, test: int, broken_at: tuple[int, ...] = ()):
    """A DatasetDict: `train` images of each digit in train (broken at its rows broken_at), the next `test` in
    test; and the files of each split's rows."""
    import datasets

    files = {"train": digit_files(digits_root, 0, train), "test": digit_files(digits_root, train, test)}
    return datasets.DatasetDict(train=hf_dataset(files["train"], broken_at),
                                test=hf_dataset(files["test"])), files
