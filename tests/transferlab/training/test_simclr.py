"""pretrain.<n>.method: simclr on 40 real digit images: a resnet18 at 32 px trained for a few epochs by SimCLR
(lightly's projection head and NT-Xent loss) is saved as a backbone that features@ reads like any other; its
labels are never read; its curves are the NT-Xent losses; killed and re-run it ends with the same weights.

The resume test is a real subprocess (`python -m stages.pretrain ssl`), SIGKILLed after its first checkpoint,
as tests/transferlab/training/test_pretrain_resume.py does for supervised pretraining."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.projects import run_stage_until_first_checkpoint, start_stage, subset_imagefolder
from transferlab.config.params import Dataset, FeatureSet, parse
from transferlab.config.paths import Layout
from transferlab.data.prepare import prepare
from transferlab.features.build import build
from transferlab.features.sets import load_features
from transferlab.models import backbones
from transferlab.models.backbones import INFO_FILE, WEIGHTS_FILE
from transferlab.training.pretrain import pretrain

CPU = torch.device("cpu")
SSL = {"arch": "resnet18", "dataset": "tiny", "method": "simclr", "image_size": 32, "epochs": 2, "batch_size": 8,
       "seed": 7}


@pytest.fixture(scope="module")
def project(tmp_path_factory, digits_root):
    tmp = tmp_path_factory.mktemp("simclr")
    images = subset_imagefolder(digits_root, tmp / "raw", [0, 1, 2, 3], 10)
    layout = Layout(tmp / "proj")
    prepare(Dataset(source="imagefolder", root=str(images)), layout.prepared("tiny"), seed=0)
    params = {"seed": 0, "device": "cpu", "datasets": {"tiny": {"source": "imagefolder", "root": str(images)}},
              "pretrain": {"ssl": {**SSL, "epochs": 3, "patience": 2, "augment": "light"}},
              "features": {"f": {"dataset": "tiny", "backbone": "ssl"}}, "tasks": {"t": {"features": "f"}}}
    (layout.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return layout, parse(params), pd.read_parquet(layout.manifest("tiny"))


def _run(layout, entry, manifest, tag: str):
    out, curves = layout.root / "runs" / tag, layout.root / "curves" / tag
    info = pretrain(tag, entry, manifest, out, entry.seed, CPU, curves, layout.root / "ckpt" / tag)
    return info, load_file(out / WEIGHTS_FILE), curves


@pytest.fixture(scope="module")
def trained(project):
    layout, params, manifest = project
    entry = params.pretrain["ssl"].model_copy(update={"epochs": 2, "patience": None, "augment": "none"})
    return (entry, *_run(layout, entry, manifest, "plain"))


@pytest.mark.usefixtures("private_store")
def test_simclr_trains_the_encoder_and_features_reads_it(project, trained):
    layout, _, manifest = project
    entry, info, weights, _ = trained
    torch.manual_seed(entry.seed)
    init = backbones.build("resnet18").state_dict()  # what backbone@ with weights none and this seed saves
    assert weights.keys() == init.keys()  # the encoder alone: no projection head
    assert torch.equal(weights["fc.weight"], init["fc.weight"])  # the classifier is left untrained
    for key in ("conv1.weight", "layer1.0.conv1.weight", "layer4.1.conv2.weight", "bn1.running_mean"):
        assert not torch.equal(weights[key], init[key]), key
    recorded = json.loads((layout.root / "runs" / "plain" / INFO_FILE).read_text())["source"]
    assert recorded["method"] == "simclr" and "source_val_accuracy" not in recorded
    assert recorded["images"] == (manifest["split"] == "train").sum() and recorded["classes"] is None
    assert (info.feature_dim, info.classifier) == (512, "fc")

    fs = FeatureSet(dataset="tiny", backbone="plain", pooling="mean", blocks=(-3, -2))
    res = build("fplain", fs, manifest, layout.root / "runs" / "plain", layout.features("fplain"), CPU)
    feats, index = load_features("fplain", layout.root)
    assert (res.n, res.dim, feats.shape) == (40, 384, (40, 384)) and np.isfinite(feats).all()
    assert list(index["image_id"]) == list(manifest["image_id"])
    trunk, _ = backbones.load_trunk(layout.root / "runs" / "plain")
    assert trunk(torch.zeros(2, 3, 32, 32)).shape == (2, 512)


def test_the_curves_are_the_val_nt_xent_loss(trained):
    _, info, _, curves = trained
    metrics = curves / "plots" / "metrics"
    assert sorted(p.name for p in metrics.iterdir()) == ["lr.tsv", "train_loss.tsv", "val_loss.tsv"]
    rows = [line.split("\t") for line in (metrics / "val_loss.tsv").read_text().splitlines()]
    assert rows[0] == ["step", "val_loss"] and [r[0] for r in rows[1:]] == ["0", "1"]
    losses = [float(r[1]) for r in rows[1:]]
    # NT-Xent of a batch of 8 pairs starts near ln(2 * 8 - 1), the loss of features that tell no image apart
    assert all(0 < v < 2 * math.log(15) for v in losses) and losses[0] != losses[1]
    assert info.source["source_val_loss"] == round(losses[-1], 4)  # no patience: the last epoch is kept


def test_labels_are_ignored_and_classes_only_select_images(project, trained):
    layout, _, manifest = project
    entry, _, weights, _ = trained
    shuffled = manifest.assign(label=np.random.default_rng(0).permutation(manifest["label"].to_numpy()))
    for tag, relabelled in (("shuffled", shuffled), ("one-label", manifest.assign(label="unlabelled"))):
        again = _run(layout, entry, relabelled, tag)[1]
        assert again.keys() == weights.keys()
        for key, tensor in weights.items():
            assert torch.equal(again[key], tensor), (tag, key)
    two = entry.model_copy(update={"classes": ["0", "1"], "epochs": 1})
    info = _run(layout, two, manifest, "two-classes")[0]
    assert info.source["images"] == ((manifest["split"] == "train") & manifest["label"].isin(["0", "1"])).sum()


def test_killed_simclr_pretraining_resumes_to_the_same_weights(project):
    layout, params, manifest = project
    entry, ckpt_root, out = params.pretrain["ssl"], layout.checkpoints("ssl", "pretrain"), layout.backbone("ssl")
    whole = pretrain("ssl", entry, manifest, out, entry.seed, CPU, layout.curves("pretrain", "ssl"), ckpt_root)
    assert whole.source["resumed_from_epoch"] is None and not ckpt_root.exists()
    weights = load_file(out / WEIGHTS_FILE)
    shutil.rmtree(out)

    killed_at = run_stage_until_first_checkpoint(layout.root, "pretrain", "ssl", ckpt_root)
    assert 1 <= killed_at < entry.epochs
    proc = start_stage(layout.root, "pretrain", "ssl")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert f"source val NT-Xent loss {whole.source['source_val_loss']:.3f} (resumed after epoch {killed_at})" \
        in stdout
    source = json.loads((out / INFO_FILE).read_text())["source"]
    assert (source["epochs_run"], source["best_epoch"], source["source_val_loss"]) == (
        whole.source["epochs_run"], whole.source["best_epoch"], whole.source["source_val_loss"])
    resumed = load_file(out / WEIGHTS_FILE)
    for name, tensor in weights.items():
        assert torch.equal(resumed[name], tensor), name
    assert not ckpt_root.exists()
