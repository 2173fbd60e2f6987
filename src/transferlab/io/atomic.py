"""Atomic writes: a temp file (or folder) in the same folder, then rename, so a reader never sees half of it."""
from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # frames arrive from callers: validate and skipped stages need not import pandas (0.4 s)
    import pandas as pd


def _umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(dest: Path | str) -> Iterator[Path]:
    """Yield a temp path beside `dest`; on success it replaces `dest`, on error it is removed."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600: honour the umask, as open() would
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(dest: Path | str) -> Iterator[Path]:
    """Yield an empty temp folder beside `dest`; on success it replaces `dest` (two renames, the old folder then
    removed), on error it is removed and `dest` is left as it was. What a killed run left beside `dest` is cleared
    first (_recover_dir); one writer per `dest` at a time, as DVC's stage locks have it."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _recover_dir(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700
    try:
        yield tmp
        old = tmp.with_suffix(".old")
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _recover_dir(dest: Path) -> None:
    """After a kill -9 inside atomic_dir: its temp folders (.<name>.*.tmp) are removed, and where it died between
    its two renames (`dest` gone, the old folder .<name>.*.old kept) the old folder is put back, so nothing is lost
    and no hidden folder lingers beside `dest` (in git, for results/)."""
    stem = glob.escape(f".{dest.name}.")
    for old in sorted(dest.parent.glob(f"{stem}*.old")):
        if dest.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, dest)
    for tmp in dest.parent.glob(f"{stem}*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(dest: Path | str, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)


def write_json(dest: Path | str, obj: object) -> None:
    write_text(dest, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_parquet(dest: Path | str, frame: pd.DataFrame) -> None:
    with atomic_path(dest) as tmp:
        frame.to_parquet(tmp, index=False)


def write_csv(dest: Path | str, frame: pd.DataFrame) -> None:
    with atomic_path(dest) as tmp:
        frame.to_csv(tmp, index=False)
