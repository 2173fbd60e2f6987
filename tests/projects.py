"""Small real projects for the tests: image datasets cut from the exported digits, and a feature set of real
digits as raw pixels (no backbone to run). The fixtures are registered in tests/conftest.py."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import SMALL_PARAMS
from transferlab.config import params as P
from transferlab.config.params import Backbone, Dataset
from transferlab.config.paths import Layout, TaskDir
from transferlab.data.prepare import prepare
from transferlab.features import sets, store
from transferlab.models import backbones


def subset_imagefolder(src: Path, dest: Path, classes, per_class: int) -> Path:
    """Copy the first `per_class` images of each class folder of an ImageFolder to dest (same layout)."""
    for c in classes:
        files = sorted((Path(src) / str(c)).glob("*.png"))[:per_class]
        assert len(files) == per_class, f"class {c} has only {len(files)} images"
        (dest / str(c)).mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy(f, dest / str(c) / f.name)
    return dest


@pytest.fixture(scope="session")
def tiny_digits(tmp_path_factory, digits_root) -> Path:
    """40 real digit images: 4 of each class, as an ImageFolder at an absolute path."""
    return subset_imagefolder(digits_root, tmp_path_factory.mktemp("tiny_digits"), range(10), 4)


@pytest.fixture(scope="module")
def private_store(tmp_path_factory):
    """A feature store of this test module's own, so its extracted/reused counts see no other module's runs."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(store.STORE_ENV, str(tmp_path_factory.mktemp("store")))
        yield


def tiny_layout(root: Path, tiny_digits: Path) -> Layout:
    """A project root with dataset `tiny` prepared and backbones bb32 / bb24 (same seed, other image size)."""
    layout = Layout(root)
    prepare(Dataset(source="imagefolder", root=str(tiny_digits)), layout.prepared("tiny"), seed=0)
    for name, size in (("bb32", 32), ("bb24", 24)):
        entry = Backbone(arch="resnet18", weights="none", image_size=size)
        backbones.create(name, entry, layout.backbone(name), 0)
    return layout


# The smallest OpenCLIP model worth the name (OpenCLIP ships none under 43M parameters): 2-block towers, 32 px
# images, 32-d embeddings; the text tower keeps CLIP's tokenizer and vocabulary (49,408 tokens), bundled.
TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


def tiny_clip_config(folder: Path) -> Path:
    """TINY_CLIP as an OpenCLIP model config file (backbones.<n>.arch of a source open_clip entry)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    return folder / "tiny-clip.json"


def plant_hf_repo(cache: Path, repo_id: str, files: dict) -> Path:
    """A Hugging Face cache entry as huggingface_hub reads it offline: models--<org>--<name>/snapshots/<sha>/,
    each of `files` (name -> writer(path)) written into the snapshot. -> the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for name, write in files.items():
        write(snapshot / name)
    return snapshot


@pytest.fixture(scope="module")
def tiny_prepared(tmp_path_factory, tiny_digits) -> Path:
    """A project root with tiny_digits prepared as dataset `tiny` (no backbone yet)."""
    root = tmp_path_factory.mktemp("tiny-prepared")
    prepare(Dataset(source="imagefolder", root=str(tiny_digits)), Layout(root).prepared("tiny"), seed=0)
    return root


def pixels_features(root: Path, head: dict | None = None,
                    split_p: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> tuple[Layout, P.Params]:
    """A project whose feature set is 600 of scikit-learn's real digits as 64 raw pixels (no backbone to
    run), with task `pixels` (5 classes, no shot seeds); `head`: its params.head (SMALL_PARAMS' otherwise);
    `split_p`: the chances of train, val and test."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = data.data[:600].astype(np.float16), data.target[:600]
    split = np.random.default_rng(0).choice(["train", "val", "test"], len(y), p=list(split_p))
    index = pd.DataFrame({"image_id": [f"d{i}" for i in range(len(y))], "label": y.astype(str), "split": split})
    layout = Layout(root)
    writer = sets.ShardWriter(layout.features("pixels"))
    writer.add(x)
    sets.write(layout.features("pixels"), index, writer.close(), {"dim": x.shape[1]})
    raw = {**SMALL_PARAMS, "features": {**SMALL_PARAMS["features"],
                                        "pixels": {"dataset": "digits", "backbone": "random"}},
           "tasks": {"pixels": {"features": "pixels", "classes": ["0", "1", "2", "3", "4"]}},
           "head": head or SMALL_PARAMS["head"]}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return layout, P.load(root / "params.yaml")


def out_dir(layout: Layout, task: str) -> TaskDir:
    """Where a test computes a task's methods by hand: a TaskDir, as a task cache entry holds it."""
    return TaskDir(layout.root / "computed" / task)


def pixels_project(root: Path, **kwargs) -> tuple[Layout, P.Params]:
    """pixels_features(root, **kwargs), with its head trained and finetune (none) recorded into
    out_dir(layout, "pixels")."""
    from transferlab.heads.task_heads import train_task_head
    from transferlab.training.task_run import train_on_images

    layout, params = pixels_features(root, **kwargs)
    task = params.tasks["pixels"]
    train_task_head("pixels", task, params.head, params.seed, root, out_dir(layout, "pixels").head)
    train_on_images("finetune", "pixels", task, params.finetune, params.seed, layout, out_dir(layout, "pixels"),
                    params.device)
    return layout, params


@pytest.fixture(scope="module")
def raw_digits() -> tuple[np.ndarray, pd.DataFrame]:
    """(1797 x 64 raw pixels as features, index with image_id, label, split): 20% val, 20% test, seeded."""
    from sklearn.datasets import load_digits

    data = load_digits()
    split = np.random.default_rng(0).choice(["train", "val", "test"], len(data.target), p=[0.6, 0.2, 0.2])
    index = pd.DataFrame({"image_id": [f"d{i}" for i in range(len(data.target))],
                          "label": data.target.astype(str), "split": split})
    return data.data.astype(np.float16), index


def start_stage(root: Path, stage: str, name: str):
    """`python -m stages.<stage> <name>` in root, this checkout's code first on the path (a subprocess.Popen)."""
    import os
    import subprocess
    import sys

    from tests.conftest import ENV, REPO

    env = {**ENV, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}"}
    return subprocess.Popen([sys.executable, "-m", f"stages.{stage}", name], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_stage_until_first_checkpoint(root: Path, stage: str, name: str, checkpoints: Path) -> int:
    """Start the stage (start_stage), SIGKILL it as soon as its first checkpoint exists under `checkpoints`
    (mid-way through a later epoch) -> the epoch that checkpoint holds."""
    import os
    import signal
    import time

    import torch

    from transferlab.training.checkpoints import STATE_FILE

    proc = start_stage(root, stage, name)
    deadline = time.monotonic() + 240
    while not list(checkpoints.glob(f"*/{STATE_FILE}")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    [saved] = list(checkpoints.glob(f"*/{STATE_FILE}"))
    return torch.load(saved, map_location="cpu", weights_only=True)["epoch"]
