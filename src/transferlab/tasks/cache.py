"""Every task's outputs by fingerprint, under Layout.task_cache: `<fingerprint>/` is a complete TaskDir, renamed
into place only once the task has finished, so a killed run leaves no half entry (its finetune and scratch
resume from their checkpoints).

The fingerprint is what the task's numbers depend on: its entry and name, params.head, params.evaluate and the
seed; params.finetune and params.device only for a task that trains on its images; the feature set's meta.json
(its key: backbone weights, preprocessing, versions) and index (every image's content hash, split and row); the
library's code; and the versions of the numerical libraries. The same fingerprint reads the same outputs; any
change misses. Entries are never evicted: `rm -rf .cache/tasks` frees the space (tasks are then recomputed)."""
from __future__ import annotations

import functools
import shutil
from importlib import metadata
from pathlib import Path

import transferlab
from transferlab.config import params as P
from transferlab.config.errors import PipelineError
from transferlab.config.paths import FEATURES_INDEX as INDEX
from transferlab.config.paths import FEATURES_META as META
from transferlab.config.paths import Layout, TaskDir
from transferlab.io.hashing import file_sha256, fingerprint

VERSIONED = ("numpy", "scipy", "scikit-learn", "pandas", "torch", "torchvision", "timm", "open_clip_torch")


@functools.cache
def code_digest() -> str:
    """One digest of every module of the library (relative path and bytes)."""
    root = Path(transferlab.__file__).parent
    return fingerprint({str(p.relative_to(root)): file_sha256(p) for p in sorted(root.rglob("*.py"))})


@functools.cache
def versions() -> dict[str, str | None]:
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None
    return {name: version(name) for name in VERSIONED}


def task_fingerprint(name: str, task: P.Task, params: P.Params, layout: Layout) -> str:
    feats = layout.features(task.features)
    if not all((feats / f).is_file() for f in (META, INDEX)):
        raise PipelineError(f"tasks.{name}: feature set {task.features!r} not found or incomplete at {feats}; run "
                            f"`dvc repro features@{task.features}` first")
    trains = task.trains_images
    return fingerprint({
        "task": name, "entry": task.model_dump(mode="json"), "head": params.head.model_dump(mode="json"),
        "evaluate": params.evaluate.model_dump(mode="json"), "seed": params.seed,
        "finetune": params.finetune.model_dump(mode="json") if trains else None,
        "device": params.device if trains else None,
        "features": {f: file_sha256(feats / f) for f in (META, INDEX)},
        "code": code_digest(), "versions": versions()})


class TaskCache:
    """The entries under one folder (Layout.task_cache)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def entry(self, key: str) -> TaskDir | None:
        """The complete entry of a fingerprint, or None."""
        path = self.root / key
        return TaskDir(path) if path.is_dir() else None

    def staging(self, key: str) -> TaskDir:
        """An empty folder to compute the entry in (a killed run's leftover is removed first)."""
        path = self.root / f"{key}.partial"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return TaskDir(path)

    def commit(self, key: str, staged: TaskDir) -> TaskDir:
        """Move a computed entry into place (one rename: readers see all of it or none), its files made read-only
        first: an entry never changes, and its published outputs are links to them (transferlab.tasks.publish)."""
        for path in staged.path.rglob("*"):
            if path.is_file():
                path.chmod(path.stat().st_mode & ~0o222)
        final = self.root / key
        staged.path.rename(final)
        return TaskDir(final)
