"""The zero-shot head (transferlab.heads.zero_shot) on a real (tiny, random-init) OpenCLIP feature set: class
prompts through the text tower only, predictions by cosine similarity, a k = 0 point in metrics.json and the
efficiency curve; other feature sets get none."""
from __future__ import annotations

import json

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from open_clip.transformer import VisionTransformer

from tests.projects import out_dir, subset_imagefolder, tiny_clip_config
from transferlab.config.errors import PipelineError
from transferlab.config.params import parse
from transferlab.config.paths import Layout
from transferlab.data.prepare import prepare
from transferlab.evaluation.results import evaluate
from transferlab.features import sets
from transferlab.features.build import build
from transferlab.heads import zero_shot
from transferlab.heads.task_heads import train_task_head
from transferlab.models import backbones
from transferlab.training.task_run import train_on_images

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def project(tmp_path_factory, digits_root, private_store):
    tmp = tmp_path_factory.mktemp("zero-shot")
    images = subset_imagefolder(digits_root, tmp / "raw", [0, 1, 2], 14)
    layout = Layout(tmp / "proj")
    config = tiny_clip_config(tmp / "configs")
    params = parse({
        "device": "cpu", "datasets": {"tiny": {"source": "imagefolder", "root": str(images)}},
        "backbones": {"clip": {"source": "open_clip", "arch": str(config)},
                      "r18": {"arch": "resnet18", "image_size": 32}},
        "features": {"clip": {"dataset": "tiny", "backbone": "clip"},
                     "r18": {"dataset": "tiny", "backbone": "r18"}},
        "tasks": {"digits": {"features": "clip", "shots": 3, "efficiency_shots": [1, 3],
                             "class_text": {"0": "zero", "1": "one", "2": "two"}},
                  "plain": {"features": "r18"}},
        "head": {"epochs": 5, "prompt_templates": ["a photo of the number {}.", "a handwritten {}."]}})
    prepare(params.datasets["tiny"], layout.prepared("tiny"), seed=0)
    for name in ("clip", "r18"):
        backbones.create(name, params.backbones[name], layout.backbone(name), 0)
        build(name, params.features[name], pd.read_parquet(layout.manifest("tiny")), layout.backbone(name),
              layout.features(name), CPU)
    return layout, params


def image_tower_calls(fn):
    """(fn's result, how many forward passes of an OpenCLIP image tower it ran)."""
    calls = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: calls.append(1) if isinstance(module, VisionTransformer) else None)
    try:
        return fn(), len(calls)
    finally:
        hook.remove()


def test_class_prompts_run_the_text_tower_only(project):
    layout, params = project
    task = params.tasks["digits"]
    info, passes = image_tower_calls(
        lambda: zero_shot.write_zero_shot("digits", task, params.head.prompt_templates, 0, layout,
                                          out_dir(layout, "digits").zero_shot))
    assert passes == 0
    assert info["ran"] and info["classes"] == ["0", "1", "2"]
    assert info["prompts"][1] == ["a photo of the number one.", "a handwritten one."]
    _, emb = zero_shot.read(out_dir(layout, "digits").zero_shot)
    # what the text tower gives these prompts, averaged over the templates and normalised
    model, _ = backbones.load_classifier(layout.backbone("clip"))
    tokenizer = open_clip.get_tokenizer(f"local-dir:{layout.backbone('clip')}")
    with torch.no_grad():
        mean = model.eval().encode_text(tokenizer(info["prompts"][2]), normalize=True).mean(0)
    np.testing.assert_allclose(emb[2], torch.nn.functional.normalize(mean, dim=0).numpy(), atol=1e-6)
    assert emb.shape == (3, 32) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)


def test_predictions_are_the_most_similar_class():
    emb = np.eye(3, 4, dtype=np.float32)
    feats = np.array([[0, 5, 0.1, 0], [2, 0, 3, 1], [-1, -1, 0, 0]], dtype=np.float16)
    assert zero_shot.predict(emb, feats).argmax(1).tolist() == [1, 2, 2]  # the third: similarity 0 beats < 0


def test_metrics_and_the_efficiency_curve_start_at_zero_shots(project):
    layout, params = project
    for name, task in params.tasks.items():
        train_task_head(name, task, params.head, 0, layout.root, out_dir(layout, name).head)
        zero_shot.write_zero_shot(name, task, params.head.prompt_templates, 0, layout,
                                  out_dir(layout, name).zero_shot)
        train_on_images("finetune", name, task, params.finetune, 0, layout, out_dir(layout, name), CPU)
        evaluate(name, task, params.evaluate, 0, layout, out_dir(layout, name), params.head)
    metrics = json.loads((out_dir(layout, "digits").results / "metrics.json").read_text())
    zero = metrics["zero_shot"]
    assert zero["n_train"] == 0 and 0 <= zero["test_accuracy"] <= 1 and "macro_f1" in zero
    curve = pd.read_csv(out_dir(layout, "digits").results / "efficiency.csv")
    assert curve.iloc[0][["shots", "method", "n_train"]].tolist() == [0, "zero_shot", 0]
    assert sorted(curve["shots"].unique()) == [0, 1, 3]
    # by hand: cosine similarity of the cached test features to the class embeddings
    feats, index = sets.read(layout.features("clip"))
    _, emb = zero_shot.read(out_dir(layout, "digits").zero_shot)
    test = index[index["split"] == "test"]
    pred = zero_shot.predict(emb, np.asarray(feats)[test.index.to_numpy()]).argmax(1)
    assert zero["test_accuracy"] == pytest.approx(float((pred == test["label"].astype(int)).mean()), abs=1e-6)
    # a feature set without a text tower: no zero-shot head
    assert json.loads((out_dir(layout, "plain").zero_shot / "zero_shot.json").read_text())["ran"] is False
    assert "zero_shot" not in json.loads((out_dir(layout, "plain").results / "metrics.json").read_text())


def test_class_text_must_name_classes_of_the_task(project):
    layout, params = project
    task = params.tasks["digits"].model_copy(update={"class_text": {"7": "seven"}})
    with pytest.raises(PipelineError, match="tasks.digits.class_text: '7' is not a class"):
        zero_shot.write_zero_shot("digits", task, params.head.prompt_templates, 0, layout,
                                  out_dir(layout, "digits").zero_shot)


def test_templates_hold_one_slot():
    with pytest.raises(PipelineError, match="exactly once"):
        parse({"datasets": {}, "backbones": {}, "features": {}, "tasks": {},
               "head": {"prompt_templates": ["a {} {}"]}})


def test_the_image_tower_fine_tunes_and_trains_from_scratch(project):
    """finetune (LP-FT from the probe) and scratch on an OpenCLIP backbone: the image tower is the trunk."""
    layout, params = project
    task = params.tasks["digits"].model_copy(update={"finetune": "lpft", "scratch": True})
    train_task_head("clip-ft", task, params.head, 0, layout.root, out_dir(layout, "clip-ft").head)
    ft = train_on_images("finetune", "clip-ft", task, params.finetune.model_copy(update={"epochs": 1}), 0,
                         layout, out_dir(layout, "clip-ft"), CPU)
    sc = train_on_images("scratch", "clip-ft", task, params.finetune.model_copy(update={"epochs": 1}), 0,
                         layout, out_dir(layout, "clip-ft"), CPU)
    assert ft["mode"] == "lpft" and ft["epochs_run"] == 1 and sc["ran"] and sc["epochs_run"] == 1
    for folder in (out_dir(layout, "clip-ft").finetune, out_dir(layout, "clip-ft").scratch):
        preds = pd.read_parquet(folder / "predictions.parquet")
        assert set(preds["split"]) == {"val", "test"} and preds["pred"].between(0, 2).all()
