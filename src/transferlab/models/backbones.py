"""Backbones: build, materialise weights (enum or pretrained tag / local file / random), save, and load as a trunk.

Torchvision classification models are the default library (`source: torchvision`); timm models
(transferlab.models.timm_backbones) and OpenCLIP image-text models (transferlab.models.clip_backbones) go through
the same steps, each library imported only for a backbone of its own."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision import models

from transferlab.config.errors import PipelineError
from transferlab.config.sections import POOLINGS, Backbone, Preprocessing
from transferlab.io.atomic import atomic_path, write_json
from transferlab.io.hashing import file_sha256
from transferlab.models import cnn_blocks

WEIGHTS_FILE = "weights.safetensors"
INFO_FILE = "backbone.json"


@dataclass(frozen=True)
class BackboneInfo:
    """What backbone.json records: enough to rebuild the model and to key its features."""

    name: str
    arch: str
    num_classes: int
    classifier: str
    feature_dim: int
    preprocessing: dict
    source: dict
    fingerprint: str
    library: str = "torchvision"  # torchvision | timm | open_clip: which library builds `arch`
    # what rebuilding it needs beyond the name (timm: img_size; open_clip: its open_clip_config.json as `config`)
    model_kwargs: dict = field(default_factory=dict)


def build(arch: str, num_classes: int | None = None, library: str = "torchvision",
          kwargs: dict | None = None) -> nn.Module:
    """A randomly initialised classification model of `library` (call torch.manual_seed first)."""
    if library == "timm":
        from transferlab.models import timm_backbones

        return timm_backbones.build(arch, num_classes, kwargs)
    if library == "open_clip":
        from transferlab.models import clip_backbones

        return clip_backbones.build((kwargs or {})["config"], num_classes)
    if arch not in models.list_models(module=models):
        raise PipelineError(f"backbone arch {arch!r} is not a torchvision classification model; "
                            "see torchvision.models.list_models(torchvision.models)")
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    return models.get_model(arch, weights=None, **kwargs)


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The classifier: the model's last nn.Linear, whose input is the penultimate feature."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise PipelineError(f"{type(model).__name__} has no linear classifier to take features before")
    return found[-1]


def _set_module(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def preprocessing(pre: Preprocessing) -> dict:
    """The preprocessing dict for backbones configured by hand (random init, local file, pretrain)."""
    return {"crop_size": pre.image_size, "resize_size": pre.resize_size or pre.image_size,
            "interpolation": pre.interpolation, "antialias": pre.antialias,
            "mean": list(pre.mean), "std": list(pre.std)}


def _enum_weights(arch: str, name: str):
    try:
        enum = models.get_model_weights(arch)
    except (ValueError, KeyError):
        raise PipelineError(f"backbone arch {arch!r} is not a torchvision classification model") from None
    try:
        return enum[name]
    except KeyError:
        known = ", ".join(w.name for w in enum)
        raise PipelineError(f"weights {name!r} are not a {enum.__name__} enum name; known: {known}, "
                            "or a local .safetensors/.pth file, or none") from None


def _weights_preprocessing(weights) -> dict:
    tf = weights.transforms()
    return {"crop_size": int(tf.crop_size[0]), "resize_size": int(tf.resize_size[0]),
            "interpolation": tf.interpolation.value, "antialias": bool(tf.antialias),
            "mean": list(tf.mean), "std": list(tf.std)}


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise PipelineError(f"weights file {path} not found; give an existing .safetensors or .pth file")
    if path.suffix == ".safetensors":
        return load_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
    except Exception as err:
        raise PipelineError(f"{path}: not a loadable state dict ({err}); save it with "
                            "torch.save(model.state_dict()) or as .safetensors") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PipelineError(f"{path}: holds no state dict of tensors")
    return obj


def _from_state_dict(arch: str, state: dict[str, torch.Tensor], where: str) -> nn.Module:
    cls_name, _ = last_linear(build(arch))
    key = f"{cls_name}.weight"
    num_classes = int(state[key].shape[0]) if key in state else None
    model = build(arch, num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise PipelineError(f"{where}: weights do not fit {arch}: {str(err).splitlines()[0]}") from None
    return model


def materialise(arch: str, weights: str, pre: Preprocessing, seed: int) -> tuple[nn.Module, dict, dict]:
    """Build the model an entry names -> (model, preprocessing dict, source description)."""
    if weights == "none":
        torch.manual_seed(seed)
        return build(arch), preprocessing(pre), {"kind": "random", "seed": seed}
    if weights.endswith((".safetensors", ".pth", ".pt")):
        path = Path(weights)
        model = _from_state_dict(arch, _read_state_dict(path), str(path))
        digest = file_sha256(path)
        return model, preprocessing(pre), {"kind": "file", "path": str(path), "sha256": digest}
    enum = _enum_weights(arch, weights)
    try:  # torchvision's own loader: honours the torch hub cache, so it works offline once cached
        state = enum.get_state_dict(progress=False, check_hash=True)
    except OSError as err:
        raise PipelineError(f"weights {arch}/{enum.name}: not in the torch hub cache "
                            f"({torch.hub.get_dir()}) and cannot be downloaded ({err}); "
                            "place the file there or allow network access") from None
    model = build(arch, len(enum.meta["categories"]))
    model.load_state_dict(state)
    return model, _weights_preprocessing(enum), {"kind": "torchvision", "weights": str(enum), "url": enum.url}


def _classifier(model: nn.Module, library: str) -> tuple[str, int, int]:
    """(the classifier's dotted name, its classes, the pooled feature width it reads)."""
    if library == "timm":
        from transferlab.models import timm_backbones

        width = getattr(model, "head_hidden_size", None) or model.num_features
        return timm_backbones.classifier_name(model), int(model.num_classes), int(width)
    if library == "open_clip":  # no classifier: the image tower's embedding is what the text tower is compared to
        return "", 0, int(model.visual.output_dim)
    cls_name, cls = last_linear(model)
    return cls_name, cls.out_features, cls.in_features


def save(model: nn.Module, out_dir: Path, name: str, arch: str, pre: dict, source: dict,
         library: str = "torchvision", model_kwargs: dict | None = None) -> BackboneInfo:
    """Write weights.safetensors and backbone.json atomically; return what was recorded."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / WEIGHTS_FILE) as tmp:
        save_file(state, tmp)
    fingerprint = file_sha256(out_dir / WEIGHTS_FILE)
    cls_name, num_classes, width = _classifier(model, library)
    info = BackboneInfo(name=name, arch=arch, num_classes=num_classes, classifier=cls_name,
                        feature_dim=width, preprocessing=pre, source=source,
                        fingerprint=fingerprint, library=library, model_kwargs=dict(model_kwargs or {}))
    write_json(out_dir / INFO_FILE, info.__dict__)
    return info


def _materialise_timm(name: str, entry: Backbone, seed: int) -> tuple[nn.Module, dict, dict, dict]:
    """The timm model an entry names -> (model, preprocessing dict, source description, model kwargs)."""
    from transferlab.models import timm_backbones as tb

    tb.check_arch(entry.arch, f"backbones.{name}.arch")
    overrides = _overrides(entry)
    kwargs = tb.model_kwargs(entry.arch, overrides.get("image_size"))
    if entry.weights == "none":
        torch.manual_seed(seed)
        model, source = tb.build(entry.arch, kwargs=kwargs), {"kind": "random", "seed": seed}
    elif entry.weights == "pretrained":
        model = tb.pretrained(entry.arch, kwargs)
        source = {"kind": "timm", "weights": entry.arch, "hf_hub_id": model.pretrained_cfg.get("hf_hub_id")}
    else:
        path = Path(entry.weights)
        model = tb.from_state_dict(entry.arch, _read_state_dict(path), str(path), kwargs)
        source = {"kind": "file", "path": str(path), "sha256": file_sha256(path)}
    return model, tb.preprocessing(model, overrides), source, kwargs


def _overrides(entry: Backbone) -> dict:
    """The preprocessing keys the entry sets explicitly: they override the model's own config."""
    return entry.model_dump(include=set(Preprocessing.model_fields) & entry.model_fields_set)


def _create_clip(name: str, entry: Backbone, out_dir: Path, seed: int) -> BackboneInfo:
    from transferlab.models import clip_backbones as cb

    cb.check(entry.arch, entry.weights, f"backbones.{name}")
    model, source = cb.materialise(entry.arch, entry.weights, seed, _read_state_dict)
    if source["kind"] == "file":
        source["sha256"] = file_sha256(Path(entry.weights))
    pre, config = cb.preprocessing(model, _overrides(entry)), cb.full_config(model, entry.arch)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / cb.CONFIG_FILE, config)  # the folder loads in OpenCLIP as local-dir:<folder>
    return save(model, out_dir, name, entry.arch, pre, source, "open_clip", {"config": config})


def create(name: str, entry: Backbone, out_dir: Path, seed: int) -> BackboneInfo:
    """What backbone@<name> does: materialise the entry's model and save it into out_dir."""
    if entry.source == "open_clip":
        return _create_clip(name, entry, out_dir, seed)
    if entry.source == "timm":
        model, pre, source, kwargs = _materialise_timm(name, entry, seed)
        return save(model, out_dir, name, entry.arch, pre, source, "timm", kwargs)
    model, pre, source = materialise(entry.arch, entry.weights, entry, seed)
    return save(model, out_dir, name, entry.arch, pre, source)


def read_info(backbone_dir: Path) -> BackboneInfo:
    path = Path(backbone_dir) / INFO_FILE
    if not path.is_file():
        raise PipelineError(f"{path} not found; run `dvc repro` for the backbone or pretrain stage first")
    return BackboneInfo(**json.loads(path.read_text()))


def load_classifier(backbone_dir: Path) -> tuple[nn.Module, BackboneInfo]:
    """The saved model with its original classifier."""
    info = read_info(backbone_dir)
    model = build(info.arch, info.num_classes, info.library, info.model_kwargs)
    model.load_state_dict(load_file(Path(backbone_dir) / WEIGHTS_FILE))
    return model, info


def _check_pooling(info: BackboneInfo, pooling: str) -> None:
    if pooling not in (allowed := POOLINGS[info.library]):
        raise PipelineError(f"pooling {pooling!r} does not read a {info.library} model ({info.name}); it takes "
                            f"{' or '.join(allowed)}")


def load_trunk(backbone_dir: Path, pooling: str = "model",
               blocks: int | tuple[int, ...] = 1) -> tuple[nn.Module, BackboneInfo]:
    """The saved model without its classifier: it outputs its pooled penultimate features (pooling: model), or
    a readout of `blocks` (timm_backbones.Readout; for a torchvision CNN, cnn_blocks.StageReadout)."""
    model, info = load_classifier(backbone_dir)
    _check_pooling(info, pooling)
    if info.library == "timm":
        from transferlab.models import timm_backbones

        return timm_backbones.trunk(model, pooling, blocks)[0], info
    if info.library == "open_clip":
        return model.visual, info
    if pooling == "mean":
        return cnn_blocks.StageReadout(model, blocks), info
    _set_module(model, info.classifier, nn.Identity())
    return model, info


def readout(info: BackboneInfo, pooling: str = "model", blocks: int | tuple[int, ...] = 1) -> tuple[str, int]:
    """(what the features are, for the feature key; their width), without the weights. A tuple of blocks is
    keyed by its indices from 0, so [-2] and [2] of a 4-block model share their rows."""
    _check_pooling(info, pooling)
    if pooling == "model":
        layer = {"timm": "pre_logits", "open_clip": "image embedding (encode_image)"}.get(
            info.library, f"input of {info.classifier}")
        return layer, info.feature_dim
    with torch.device("meta"):  # the architecture only: no memory, no init
        model = build(info.arch, 0 if info.library == "timm" else info.num_classes, info.library,
                      info.model_kwargs)
    indices, depth, dim = cnn_blocks.describe(model, info.library, pooling, blocks)
    if isinstance(blocks, int):  # the keys written before block lists existed
        return f"{pooling} of the last {blocks} blocks", dim
    return f"{pooling} of blocks {indices} of {depth}", dim


def versions(library: str = "torchvision") -> dict:
    """The library versions that determine a backbone's numbers (part of the feature key)."""
    found = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    if library == "timm":
        from transferlab.models import timm_backbones

        found |= timm_backbones.versions()
    if library == "open_clip":
        from transferlab.models import clip_backbones

        found |= clip_backbones.versions()
    return found
