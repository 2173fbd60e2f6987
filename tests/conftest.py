"""Shared fixtures: a small real-data params set, and a real git + DVC repository holding this project."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# Tests never write into the developer's own feature store (.cache/features); tests of the store pass theirs.
os.environ.setdefault("TRANSFERLAB_FEATURE_STORE", tempfile.mkdtemp(prefix="transferlab-store-"))
# abspath, not resolve(): the venv python is a symlink out of the venv
BIN = Path(os.path.abspath(sys.executable)).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
       "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "GIT_AUTHOR_NAME": "t",
       "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}

# The embedded default, made small enough for tests: one epoch of source pretraining and fine-tuning.
SMALL_PARAMS = {
    "seed": 0, "device": "cpu",
    "datasets": {"digits": {"source": "sklearn_digits", "root": "data/raw/digits"}},
    "backbones": {"random": {"arch": "resnet18", "weights": "none", "image_size": 32}},
    "pretrain": {"src": {"arch": "resnet18", "dataset": "digits", "classes": [0, 1, 2, 3, 4],
                         "image_size": 32, "epochs": 1}},
    "features": {"digits-src": {"dataset": "digits", "backbone": "src"},
                 "digits-random": {"dataset": "digits", "backbone": "random"}},
    "tasks": {"fewshot": {"features": "digits-src", "classes": [5, 6, 7, 8, 9], "shots": 5, "finetune": "lpft",
                          "shot_seeds": [0, 1], "efficiency_shots": [1, 5]},
              "parity": {"features": "digits-src",
                         "label_map": {5: "odd", 6: "even", 7: "odd", 8: "even", 9: "odd"}},
              "fewshot-random": {"features": "digits-random", "classes": [5, 6, 7, 8, 9], "shots": 5}},
    # Sections spelled out in full, as in params.yaml: `dvc exp run -S head.lr=...` overrides existing keys only.
    "head": {"kind": "linear", "hidden_dim": 256, "epochs": 20, "batch_size": 256, "lr": 0.01,
             "weight_decay": 0.0001, "standardize": True, "optimizer": "adamw", "C": 1.0, "reference": "always",
             "prompt_templates": ["a photo of a {}."],
             "sweep": {"kind": ["linear"], "lr": [0.01, 0.05], "weight_decay": [0.0001, 1.0]}},
    "finetune": {"epochs": 1, "batch_size": 32, "lr": 0.0003, "backbone_lr_mult": 0.1, "weight_decay": 0.0001,
                 "label_smoothing": 0.0, "freeze_norm": True, "freeze_epochs": 0, "augment": "none",
                 "patience": None, "class_weight": "none"},
    "evaluate": {"normalize_confusion": False},
}


def sh(*cmd: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command with the venv's executables first on PATH; return its output (text)."""
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def make_project(dest: Path, params: dict) -> Path:
    """A real git + DVC repository with this project's stages, dvc.yaml and the given params."""
    dest.mkdir(parents=True, exist_ok=True)
    for folder in ("stages", "src"):  # the stages' code deps (dvc.yaml) are these folders
        shutil.copytree(REPO / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, dest / name)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", cwd=dest)
    sh("dvc", "init", "-q", cwd=dest)
    shutil.copytree(REPO / ".dvc" / "plots", dest / ".dvc" / "plots")
    sh("git", "add", "-A", cwd=dest)
    sh("git", "commit", "-qm", "init", cwd=dest)
    return dest


@pytest.fixture
def small_params() -> dict:
    import copy

    return copy.deepcopy(SMALL_PARAMS)


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory) -> Path:
    """The embedded digits exported once as an ImageFolder."""
    from transferlab.data.digits import export_digits

    root = tmp_path_factory.mktemp("digits")
    export_digits(root)
    return root


# Fixtures of tests/projects.py, for every test folder (its helper functions are imported from it directly).
from tests.projects import private_store, raw_digits, tiny_digits, tiny_prepared  # noqa: E402, F401
