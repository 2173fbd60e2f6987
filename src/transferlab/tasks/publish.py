"""A task's TaskDir (its cache entry) published into the outputs of tasks@<feature set>: the models, run records
and results to Layout.task, the curves to Layout.task_curves. Hard links where the file system has them (a copy
where it does not): a feature set's hundred tasks are 1,500 files, which DVC deletes before every run of the stage;
copying them back took the stage 1.2 s, and each copy was a new file that DVC hashed again, where a link keeps the
inode and mtime its state database knows. The entries are read-only (TaskCache.commit), so an output cannot be
edited in place, as DVC's own linked outputs cannot. (The report stage copies the results on into results/.)"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from transferlab.config.paths import Layout, TaskDir

MODEL_PARTS = ("head", "zero_shot", "finetune", "scratch", "results", "finetune.run.json", "scratch.run.json")


def _link(src: str, dest: str) -> None:
    if os.path.lexists(dest):  # replaced, never written through: an old output may be a link into an entry
        os.unlink(dest)
    try:
        os.link(src, dest)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(src, dest)


def _place(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest, dirs_exist_ok=True, copy_function=_link)
    elif src.is_file():
        _link(str(src), str(dest))


def placements(entry: TaskDir, layout: Layout, featureset: str, task: str) -> list[tuple[Path, Path]]:
    """(file or folder in the entry, where it is published), for every part of a task's outputs."""
    models = layout.task(featureset, task)
    return [*((entry.path / part, models.path / part) for part in MODEL_PARTS),
            (entry.path / "curves", layout.task_curves(featureset, task))]


def publish(entry: TaskDir, layout: Layout, featureset: str, task: str) -> None:
    for src, dest in placements(entry, layout, featureset, task):
        _place(src, dest)


def clear_outputs(layout: Layout, featureset: str) -> None:
    """Empty every output folder of tasks@<featureset> (DVC has already removed them before a run; a run
    outside DVC must not keep a task params.yaml no longer has), each left existing, so that DVC finds it
    even for a feature set whose tasks have none of that kind."""
    for path in (layout.tasks(featureset), layout.tasks_curves(featureset)):
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
