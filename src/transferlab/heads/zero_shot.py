"""The zero-shot head of a task on an OpenCLIP feature set: no training image, only the class names. Each class's
text goes into every prompt template; the text tower encodes them once, the normalised embeddings are averaged
per class (the CLIP paper's prompt ensemble), and a test image's class is the one whose embedding is most
cosine-similar to its cached image embedding. The image tower never runs here: a new label set on a cached
CLIP feature set costs one pass of the text tower over its prompts.

models/tasks/<task>/zero_shot/ holds class_embeddings.safetensors and zero_shot.json; a task on another kind of
feature set gets a zero_shot.json saying so, and no zero_shot results."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from transferlab.config import params as P
from transferlab.config.errors import PipelineError
from transferlab.config.paths import ZERO_SHOT_FILE, ZERO_SHOT_INFO_FILE, Layout
from transferlab.data.tasks import select
from transferlab.features import sets
from transferlab.io.atomic import atomic_path, write_json


def prompts(classes: list[str], task_name: str, task: P.Task, templates: list[str]) -> list[list[str]]:
    """Per class, its text in every template."""
    text = dict(task.class_text or {})
    unknown = sorted(set(text) - set(classes))
    if unknown:
        raise PipelineError(f"tasks.{task_name}.class_text: {unknown[0]!r} is not a class of the task; its "
                            f"classes are {', '.join(classes)}")
    return [[t.format(text.get(c, c)) for t in templates] for c in classes]


def write_zero_shot(task_name: str, task: P.Task, templates: list[str], seed: int, layout: Layout,
                    out_dir: Path) -> dict:
    """Encode the task's class prompts (head.prompt_templates) with its feature set's text tower into out_dir
    (the task's TaskDir.zero_shot) -> what zero_shot.json records ({"ran": false, ...} where the feature set
    has no text tower)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    meta, index = sets.read_index(layout.features(task.features))
    if meta.get("key", {}).get("open_clip") is None:  # the key names the versions of the library that made it
        (out_dir / ZERO_SHOT_FILE).unlink(missing_ok=True)
        info = {"ran": False, "why": f"feature set {task.features} is not from an OpenCLIP backbone (no text "
                                     "tower)"}
        write_json(out_dir / ZERO_SHOT_INFO_FILE, info)
        return info
    from safetensors.torch import save_file

    from transferlab.models import backbones, clip_backbones

    backbone_dir = layout.backbone(meta["backbone"])
    model, info = backbones.load_classifier(backbone_dir)
    if info.fingerprint != meta["key"]["backbone_fingerprint"]:
        raise PipelineError(f"{backbone_dir} holds other weights than the ones feature set {task.features} was "
                            f"extracted with; run `dvc repro features@{task.features}` (or `dvc pull`) first")
    classes = select(index, task, seed, task_name).classes
    texts = prompts(classes, task_name, task, templates)
    weight = clip_backbones.class_embeddings(model, clip_backbones.tokenizer(backbone_dir), texts)
    with atomic_path(out_dir / ZERO_SHOT_FILE) as tmp:
        save_file({"weight": weight.contiguous()}, tmp)
    record = {"ran": True, "task": task_name, "features": task.features, "classes": classes, "prompts": texts,
              "backbone_fingerprint": info.fingerprint}
    write_json(out_dir / ZERO_SHOT_INFO_FILE, record)
    return record


def read(zero_shot_dir: Path) -> tuple[dict, np.ndarray | None]:
    """(zero_shot.json, the class embeddings or None where it did not run)."""
    info = json.loads((Path(zero_shot_dir) / ZERO_SHOT_INFO_FILE).read_text())
    if not info["ran"]:
        return info, None
    from safetensors.numpy import load_file

    return info, load_file(Path(zero_shot_dir) / ZERO_SHOT_FILE)["weight"]


def predict(class_embeddings: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """Cosine similarity of each image embedding to each class embedding -> (n, classes)."""
    x = np.asarray(feats, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x @ class_embeddings.T
