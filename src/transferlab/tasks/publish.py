"""A task's TaskDir (its cache entry) copied into the outputs of tasks@<feature set>: the models, run records and
results to Layout.task, the curves to Layout.task_curves. Copies, not links: DVC makes the files of its cache
read-only, and the task cache stays the task's own. (The report stage copies the results on into results/.)"""
from __future__ import annotations

import shutil
from pathlib import Path

from transferlab.config.paths import Layout, TaskDir

MODEL_PARTS = ("head", "zero_shot", "finetune", "scratch", "results", "finetune.run.json", "scratch.run.json")


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest, dirs_exist_ok=True)
    elif src.is_file():
        shutil.copyfile(src, dest)


def placements(entry: TaskDir, layout: Layout, featureset: str, task: str) -> list[tuple[Path, Path]]:
    """(file or folder in the entry, where it is published), for every part of a task's outputs."""
    models = layout.task(featureset, task)
    return [*((entry.path / part, models.path / part) for part in MODEL_PARTS),
            (entry.path / "curves", layout.task_curves(featureset, task))]


def publish(entry: TaskDir, layout: Layout, featureset: str, task: str) -> None:
    for src, dest in placements(entry, layout, featureset, task):
        _copy(src, dest)


def clear_outputs(layout: Layout, featureset: str) -> None:
    """Empty every output folder of tasks@<featureset> (DVC has already removed them before a run; a run
    outside DVC must not keep a task params.yaml no longer has), each left existing, so that DVC finds it
    even for a feature set whose tasks have none of that kind."""
    for path in (layout.tasks(featureset), layout.tasks_curves(featureset)):
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
