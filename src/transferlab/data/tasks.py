"""A task's label selection over a feature set's index: classes, label_map and k shots per class."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from transferlab.config.errors import PipelineError
from transferlab.config.sections import Task


def label_order(labels) -> list[str]:
    """Sorted class names: numerically when every label is a number, else alphabetically."""
    uniq = sorted({str(x) for x in labels})
    try:
        return sorted(uniq, key=float)
    except ValueError:
        return uniq


@dataclass(frozen=True)
class Selection:
    """Rows of the feature index a task uses, with `target` (its label) and `y` (the class index)."""

    rows: pd.DataFrame
    classes: list[str]

    def split(self, name: str) -> pd.DataFrame:
        return self.rows[self.rows["split"] == name]


def select(index: pd.DataFrame, task: Task, seed: int, name: str = "task") -> Selection:
    """Apply classes / label_map / shots (deterministic by seed) to a feature index."""
    frame = index.assign(label=index["label"].astype(str), row=np.arange(len(index)))
    present = set(frame["label"])
    wanted = task.classes if task.classes is not None else (
        list(task.label_map) if task.label_map else sorted(present))
    missing = [c for c in wanted if c not in present]
    if missing:
        raise PipelineError(f"tasks.{name}: classes {missing} are not in the feature set's labels "
                            f"({', '.join(label_order(present))})")
    frame = frame[frame["label"].isin(wanted)]
    if task.label_map:
        unmapped = sorted(set(frame["label"]) - set(task.label_map))
        if unmapped:
            raise PipelineError(f"tasks.{name}.label_map: no target for label(s) {unmapped}; "
                                "map every selected class")
        frame = frame.assign(target=frame["label"].map(task.label_map))
    else:
        frame = frame.assign(target=frame["label"])
    if task.shots is not None:
        frame = _few_shot(frame, task.shots, seed, name)
    classes = label_order(frame["target"])
    frame = frame.assign(y=frame["target"].map({c: i for i, c in enumerate(classes)}).astype(int))
    if frame[frame["split"] == "train"]["y"].nunique() < 2:
        raise PipelineError(f"tasks.{name}: needs training images of at least two classes")
    return Selection(frame.reset_index(drop=True), classes)


def _few_shot(frame: pd.DataFrame, k: int, seed: int, name: str) -> pd.DataFrame:
    train = frame[frame["split"] == "train"]
    counts = train["target"].value_counts().reindex(label_order(frame["target"]), fill_value=0)
    short = counts[counts < k]
    if not short.empty:
        cls, n = short.index[0], int(short.iloc[0])
        raise PipelineError(f"tasks.{name}.shots: class {cls!r} has {n} training images, fewer than "
                            f"shots={k}; lower shots or add images")
    picked = train.groupby("target", group_keys=False).sample(n=k, random_state=seed)
    return pd.concat([picked, frame[frame["split"] != "train"]]).sort_values("row")
