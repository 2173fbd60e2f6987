"""tasks.select: classes, label_map and k shots per class over a feature index."""
from __future__ import annotations

import pandas as pd
import pytest

from transferlab.config.errors import PipelineError
from transferlab.config.params import Task
from transferlab.data.tasks import label_order, select


def _index(train=20, val=5, test=5, labels=("0", "1", "2", "3", "10")) -> pd.DataFrame:
    rows = []
    for label in labels:
        for split, n in (("train", train), ("val", val), ("test", test)):
            rows += [{"image_id": f"{label}/{split}{i}", "label": label, "split": split} for i in range(n)]
    # interleave classes and splits, as a real manifest might be ordered
    return pd.DataFrame(rows).sample(frac=1, random_state=0).reset_index(drop=True)


def test_label_order_is_numeric_when_possible():
    assert label_order(["10", "9", "1"]) == ["1", "9", "10"]
    assert label_order(["b", "a", "10"]) == ["10", "a", "b"]


def test_all_classes_by_default():
    index = _index()
    sel = select(index, Task(features="f"), seed=0)
    assert sel.classes == ["0", "1", "2", "3", "10"]
    assert len(sel.rows) == len(index)
    assert (index.loc[sel.rows["row"], "image_id"].to_numpy() == sel.rows["image_id"].to_numpy()).all()
    assert (sel.rows["y"] == sel.rows["label"].map({c: i for i, c in enumerate(sel.classes)})).all()


def test_classes_select_rows():
    index = _index()
    sel = select(index, Task(features="f", classes=[10, 2]), seed=0)
    assert sel.classes == ["2", "10"]
    assert set(sel.rows["label"]) == {"2", "10"} and len(sel.rows) == 60
    assert sel.rows["row"].is_monotonic_increasing  # index order kept
    assert dict(zip(sel.rows["label"], sel.rows["y"], strict=True)) == {"2": 0, "10": 1}
    assert (index.loc[sel.rows["row"], "label"].to_numpy() == sel.rows["label"].to_numpy()).all()


def test_label_map_merges_classes():
    index = _index()
    sel = select(index, Task(features="f", label_map={0: "even", 1: "odd", 2: "even"}), seed=0)
    assert sel.classes == ["even", "odd"]
    assert set(sel.rows["label"]) == {"0", "1", "2"}
    assert (sel.rows["target"] == sel.rows["label"].map({"0": "even", "1": "odd", "2": "even"})).all()
    assert (sel.rows["y"] == (sel.rows["target"] == "odd").astype(int)).all()


def test_label_map_must_cover_selected_classes():
    with pytest.raises(PipelineError, match=r"tasks\.par\.label_map.*'3'"):
        select(_index(), Task(features="f", classes=[1, 3], label_map={1: "odd"}), seed=0, name="par")


def test_missing_class():
    with pytest.raises(PipelineError, match=r"tasks\.t: classes \['7'\]"):
        select(_index(), Task(features="f", classes=[1, 7]), seed=0, name="t")


def test_shots_take_k_per_class_from_train_only():
    index = _index()
    full = select(index, Task(features="f", classes=[0, 1, 2]), seed=0)
    sel = select(index, Task(features="f", classes=[0, 1, 2], shots=4), seed=0)
    train = sel.split("train")
    assert train["label"].value_counts().to_dict() == {"0": 4, "1": 4, "2": 4}
    assert set(train["image_id"]) <= set(full.split("train")["image_id"])
    for split in ("val", "test"):
        pd.testing.assert_frame_equal(sel.split(split).reset_index(drop=True),
                                      full.split(split).reset_index(drop=True))
    assert sel.rows["row"].is_monotonic_increasing


def test_shots_are_deterministic_by_seed():
    index = _index()
    task = Task(features="f", shots=3)
    picks = [set(select(index, task, seed=s).split("train")["image_id"]) for s in (0, 0, 1)]
    assert picks[0] == picks[1]
    assert picks[0] != picks[2]


def test_shots_count_mapped_targets():
    # label_map merges two 3-image classes into target a (6 images); b keeps 3: shots are per target
    index = _index(train=3)
    task = dict(features="f", label_map={0: "a", 1: "a", 2: "b"})
    sel = select(index, Task(**task, shots=3), seed=0)
    assert sel.split("train")["target"].value_counts().to_dict() == {"a": 3, "b": 3}
    with pytest.raises(PipelineError, match="class 'b' has 3 training images"):
        select(index, Task(**task, shots=4), seed=0)


def test_too_few_training_images_for_shots():
    index = _index()
    index = index[~((index["label"] == "3") & index["image_id"].str.match(r"3/train(1\d|[3-9])$"))]
    assert (index[(index["label"] == "3") & (index["split"] == "train")].shape[0]) == 3
    with pytest.raises(PipelineError) as err:
        select(index, Task(features="f", shots=4), seed=0, name="few")
    msg = str(err.value)
    assert "tasks.few.shots" in msg and "'3'" in msg and "has 3 training images" in msg and "shots=4" in msg


def test_class_without_training_images_for_shots():
    index = _index()
    index = index[~((index["label"] == "3") & (index["split"] == "train"))]
    with pytest.raises(PipelineError, match="'3' has 0 training images"):
        select(index, Task(features="f", shots=2), seed=0, name="t")


def test_needs_two_training_classes():
    index = _index(labels=("a", "b"))
    index = index[~((index["label"] == "b") & (index["split"] == "train"))]
    with pytest.raises(PipelineError, match="at least two classes"):
        select(index, Task(features="f"), seed=0)
