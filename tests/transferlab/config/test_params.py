"""params.yaml validation: the repo's default validates; every kind of mistake is one line naming the key."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from transferlab.config import params as P
from transferlab.config.errors import PipelineError

REPO = Path(__file__).resolve().parents[3]


def _error(data: dict) -> str:
    with pytest.raises(PipelineError) as err:
        P.parse(data)
    msg = str(err.value)
    assert "\n" not in msg, f"message is not one line: {msg!r}"
    return msg


def test_default_params_yaml_validates():
    params = P.load(REPO / "params.yaml")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(params.tasks) == set(raw["tasks"])
    assert set(params.features) == set(raw["features"])
    # every reference resolves, and YAML ints become the string labels the stages compare against
    for task in params.tasks.values():
        fs = params.features[task.features]
        assert fs.dataset in params.datasets
        assert params.backbone_source(fs.backbone).arch
        assert task.classes is None or all(isinstance(c, str) for c in task.classes)


def test_small_params_validate(small_params):
    params = P.parse(small_params)
    assert params.device == "cpu"
    assert params.tasks["fewshot"].classes == ["5", "6", "7", "8", "9"]
    assert params.tasks["parity"].label_map["5"] == "odd"
    assert params.head.epochs == 20 and params.head.kind == "linear"


def test_unknown_key_names_its_path(small_params):
    small_params["head"]["epoch"] = 3
    msg = _error(small_params)
    assert "head.epoch" in msg and "unknown key" in msg


def test_wrong_type_names_its_path(small_params):
    small_params["head"]["epochs"] = "many"
    msg = _error(small_params)
    assert "head.epochs" in msg


def test_bad_literal_names_its_path_and_value(small_params):
    small_params["head"]["kind"] = "cnn"
    msg = _error(small_params)
    assert "head.kind" in msg and "'cnn'" in msg


def test_task_naming_missing_featureset(small_params):
    small_params["tasks"]["x"] = {"features": "nope"}
    msg = _error(small_params)
    assert "tasks.x.features" in msg and "'nope'" in msg


def test_featureset_naming_missing_backbone(small_params):
    small_params["features"]["digits-random"]["backbone"] = "ghost"
    msg = _error(small_params)
    assert "features.digits-random.backbone" in msg and "'ghost'" in msg


def test_pretrain_name_clashing_with_backbone(small_params):
    small_params["pretrain"]["random"] = dict(small_params["pretrain"]["src"])
    msg = _error(small_params)
    assert "pretrain.random" in msg


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "CPU", ""])
def test_bad_device(small_params, device):
    small_params["device"] = device
    msg = _error(small_params)
    assert msg.split(": ", 1)[1].startswith("device")


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_good_devices(small_params, device):
    small_params["device"] = device
    assert P.parse(small_params).device == device


def test_several_problems_still_one_line(small_params):
    small_params["head"]["epoch"] = 3
    small_params["finetune"]["lr"] = "fast"
    msg = _error(small_params)
    assert "more problem" in msg


def test_load_reads_a_file(tmp_path, small_params):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(small_params))
    assert P.load(path) == P.parse(small_params)


def test_load_missing_file(tmp_path):
    with pytest.raises(PipelineError, match="not found"):
        P.load(tmp_path / "nope.yaml")


def test_load_invalid_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: [1, 2\ndevice: cpu\n")
    with pytest.raises(PipelineError, match="not valid YAML at line") as err:
        P.load(path)
    assert "\n" not in str(err.value)


def test_load_validates(tmp_path, small_params):
    small_params["tasks"]["x"] = {"features": "nope"}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(small_params))
    with pytest.raises(PipelineError, match=r"tasks\.x\.features"):
        P.load(path)


def test_default_fewshot_task_draws_over_seeds_and_has_a_curve():
    task = P.load(REPO / "params.yaml").tasks["fewshot-5to9"]
    assert task.shots and len(task.shot_seeds) >= 2 and task.efficiency_shots


@pytest.mark.parametrize("task, key, words", [
    ({"shot_seeds": [0, 1]}, "tasks.t", "shot_seeds needs shots"),
    ({"shots": 2, "shot_seeds": [0]}, "tasks.t.shot_seeds", "at least two seeds"),
    ({"shots": 2, "shot_seeds": [3, 3]}, "tasks.t.shot_seeds", "repeats a value"),
    ({"shots": 2, "shot_seeds": ["a", 1]}, "tasks.t.shot_seeds.0", "integer"),
    ({"efficiency_shots": [0, 5]}, "tasks.t.efficiency_shots", "at least 1"),
    ({"efficiency_shots": [5, 5]}, "tasks.t.efficiency_shots", "repeats a value"),
    ({"efficiency_shots": []}, "tasks.t.efficiency_shots", "at least 1 item"),
    ({"efficiency_shots": 5}, "tasks.t.efficiency_shots", "list"),
])
def test_bad_few_shot_keys_name_their_path(small_params, task, key, words):
    small_params["tasks"]["t"] = {"features": "digits-src", **task}
    msg = _error(small_params)
    assert f"{key}: " in msg and words in msg, msg


def test_few_shot_keys_validate(small_params):
    small_params["tasks"]["t"] = {"features": "digits-src", "shots": 3, "shot_seeds": [4, 0],
                                  "efficiency_shots": [10, 1]}
    task = P.parse(small_params).tasks["t"]
    assert task.shot_seeds == [4, 0] and task.efficiency_shots == [10, 1]


def test_a_dataset_without_validation_images_is_refused_naming_the_key(small_params):
    """val_fraction 0 used to reach pretrain (a raw ValueError), the reference (the first C kept silently) and
    head.json (NaN, not JSON): refused at validate, as one line that says what to do."""
    small_params["datasets"]["digits"]["val_fraction"] = 0
    msg = _error(small_params)
    assert msg.startswith("params.yaml: datasets.digits.val_fraction: 0") and "> 0" in msg, msg


def test_pretrain_method_defaults_to_supervised_and_takes_simclr(small_params):
    assert P.parse(small_params).pretrain["src"].method == "supervised"
    small_params["pretrain"]["src"]["method"] = "simclr"
    assert P.parse(small_params).pretrain["src"].method == "simclr"


def test_an_unknown_pretrain_method_is_one_line_naming_the_key(small_params):
    small_params["pretrain"]["src"]["method"] = "byol"
    msg = _error(small_params)
    assert msg.startswith("params.yaml: pretrain.src.method: 'byol' is not allowed") and "'simclr'" in msg, msg


@pytest.mark.parametrize("key, value, words", [("label_smoothing", 0.1, "ignores the labels"),
                                               ("batch_size", 1, "at least 2")])
def test_simclr_refuses_what_it_cannot_use_naming_the_key(small_params, key, value, words):
    small_params["pretrain"]["src"].update({"method": "simclr", key: value})
    msg = _error(small_params)
    assert msg.startswith("params.yaml: pretrain.src: ") and key in msg and words in msg, msg


def test_the_schema_default_head_is_the_shipped_linear_probe():
    shipped = yaml.safe_load(Path("params.yaml").read_text())["head"]
    assert P.Head().optimizer == shipped["optimizer"] == "lbfgs"


def test_a_stage_entry_not_in_params_names_the_known_ones(small_params):
    with pytest.raises(PipelineError, match=r"^tasks.nope: not defined in params.yaml; known: fewshot, "):
        P.parse(small_params).entry("tasks", "nope")
