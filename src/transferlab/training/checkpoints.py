"""Resumable training state on disk: one folder per run fingerprint, outside DVC's outputs.

A checkpoint is found only by the fingerprint of everything that determines the run (config, data,
starting weights, code), so a changed config starts afresh instead of resuming from a stale state.
"""
from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from transferlab.io.atomic import atomic_path
from transferlab.io.hashing import file_sha256, fingerprint

STATE_FILE = "last.pt"


@dataclass(frozen=True)
class Checkpoint:
    """The checkpoint of one run: `root/<key>/last.pt`; other keys under `root` are stale runs."""

    root: Path
    key: str

    @property
    def path(self) -> Path:
        return self.root / self.key / STATE_FILE

    def load(self) -> dict | None:
        """The saved state (tensors on CPU), or None when this run has none; stale runs are removed."""
        if self.root.is_dir():
            for other in self.root.iterdir():
                if other.name != self.key:
                    shutil.rmtree(other, ignore_errors=True)
        if not self.path.is_file():
            return None
        for stray in self.path.parent.glob(f".{STATE_FILE}.*.tmp"):  # a write cut short by a kill
            stray.unlink(missing_ok=True)
        try:  # tensors and plain containers only: never unpickle objects
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # unreadable (it is written atomically, so only from outside): start afresh
            why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            print(f"warning: checkpoint {self.path} cannot be loaded ({type(err).__name__}: {why[:200]}); "
                  "deleted, training starts afresh", file=sys.stderr, flush=True)
            self.path.unlink(missing_ok=True)
            return None

    def save(self, state: dict) -> None:
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def clear(self) -> None:
        """Remove this run's checkpoint (after it finished) and the task's folder when it is empty."""
        shutil.rmtree(self.root / self.key, ignore_errors=True)
        for folder in (self.root, self.root.parent):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def for_run(root: Path, modules: Sequence[ModuleType], **determinants) -> Checkpoint:
    """The checkpoint of the run that `determinants` (its config, data rows, recipe, device, library versions)
    and the code of `modules` determine: their fingerprint is its key, so a change to any starts afresh."""
    code = [file_sha256(Path(m.__file__)) for m in modules]
    return Checkpoint(Path(root), fingerprint({**determinants, "code": code}))
