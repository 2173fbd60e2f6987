"""OpenCLIP backbones: an image-text model whose image tower gives the features and whose text tower turns class
names into a zero-shot head. `arch` is an OpenCLIP model name (ViT-B-32, ViT-B-16-SigLIP, ...), an `hf-hub:`
repository holding open_clip_config.json, or a local model config (.json); `weights` a pretrained tag of that
name (OpenCLIP's loader, through the Hugging Face cache), `pretrained` (the hf-hub repository's own weights), a
local state dict, or none. The backbone folder is an OpenCLIP `local-dir:` folder: open_clip_config.json beside
the weights."""
from __future__ import annotations

import difflib
import json
import logging
from contextlib import contextmanager
from pathlib import Path

import open_clip
import torch
from torch import nn

from transferlab.config.errors import PipelineError

CONFIG_FILE = "open_clip_config.json"  # OpenCLIP's name: the folder loads with create_model("local-dir:<folder>")
RESIZE_MODES = {"shortest": "shortest", "squash": "squash"}  # OpenCLIP's resize modes this project reproduces


@contextmanager
def _quiet():
    """OpenCLIP logs its choices and failures on the root logger ("initialized randomly", "Multiple checkpoints
    found", a failed download): expected here, or turned into one PipelineError, so kept out of the output."""
    root = logging.getLogger()
    level, root.level = root.level, logging.CRITICAL
    try:
        yield
    finally:
        root.level = level


def _suggest(arch: str) -> str:
    near = difflib.get_close_matches(arch, open_clip.list_models(), n=5, cutoff=0.6)
    return f"nearest: {', '.join(near)}" if near else "see open_clip.list_models()"


def _tags(arch: str) -> list[str]:
    return open_clip.list_pretrained_tags_by_model(arch)


def check(arch: str, weights: str, key: str) -> None:
    """A PipelineError naming `key` (the entry) and the nearest names when the entry names no OpenCLIP model."""
    if arch.endswith(".json") or arch.startswith("hf-hub:"):
        if weights not in ("none", "pretrained") and not _is_file(weights):
            raise PipelineError(f"{key}.weights: {weights!r}: a model given by config or hf-hub repository takes "
                                "pretrained (hf-hub: the repository's weights), a local file, or none")
        if arch.endswith(".json") and not Path(arch).is_file():
            raise PipelineError(f"{key}.arch: model config {arch} not found")
        return
    if open_clip.get_model_config(arch) is None:
        raise PipelineError(f"{key}.arch: {arch!r} is not an OpenCLIP model; {_suggest(arch)}")
    if weights not in ("none",) and not _is_file(weights) and weights not in _tags(arch):
        known = ", ".join(_tags(arch)) or "none for this model"
        raise PipelineError(f"{key}.weights: {weights!r} is not a pretrained tag of {arch} (known: {known}), a "
                            "local .safetensors/.pth file, or none")


def _is_file(weights: str) -> bool:
    return weights.endswith((".safetensors", ".pth", ".pt", ".bin"))


def _name(arch: str) -> str:
    """The name OpenCLIP's factory takes: a local config is registered under its file stem."""
    if arch.endswith(".json"):
        open_clip.add_model_config(arch)
        return Path(arch).stem
    return arch


def model_config(model_name: str) -> dict:
    """The architecture OpenCLIP built (what rebuilding it needs)."""
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise PipelineError(f"OpenCLIP found no model config for {model_name!r}")
    return cfg


def materialise(arch: str, weights: str, seed: int, read_state_dict) -> tuple[nn.Module, dict]:
    """Build the model an entry names -> (model, source description)."""
    name = _name(arch)
    if weights == "none" or _is_file(weights):
        torch.manual_seed(seed)
        with _quiet():
            model = open_clip.create_model(name, load_weights=False, pretrained_text=False)
        if weights == "none":
            return model, {"kind": "random", "seed": seed}
        try:
            model.load_state_dict(read_state_dict(Path(weights)))
        except RuntimeError as err:
            raise PipelineError(f"{weights}: weights do not fit OpenCLIP model {arch}: "
                                f"{str(err).splitlines()[0]}") from None
        return model, {"kind": "file", "path": weights}
    try:  # OpenCLIP's own loader: the Hugging Face cache first, so offline once cached
        with _quiet():
            model = open_clip.create_model(name, pretrained=None if weights == "pretrained" else weights,
                                           require_pretrained=True)
    except (OSError, RuntimeError, ValueError) as err:
        tag = open_clip.get_pretrained_cfg(name, weights) if weights != "pretrained" else {}
        where = f" (Hugging Face repo {tag['hf_hub'].rstrip('/')})" if tag.get("hf_hub") else ""
        raise PipelineError(f"OpenCLIP weights {arch}/{weights}{where}: not in the Hugging Face cache and not "
                            f"downloadable ({str(err).splitlines()[0][:160]}); fetch them once where there is "
                            "internet (the cache is $HF_HOME/hub; HF_HUB_OFFLINE=1 reads it only), or give a "
                            "local .safetensors file as weights") from None
    return model, {"kind": "open_clip", "weights": weights}


def full_config(model: nn.Module, arch: str) -> dict:
    """open_clip_config.json of the backbone folder: the architecture and the preprocessing it was built with."""
    name = _name(arch)
    if name.startswith("hf-hub:"):
        from huggingface_hub import hf_hub_download

        cfg = json.loads(Path(hf_hub_download(name.removeprefix("hf-hub:"), CONFIG_FILE)).read_text())["model_cfg"]
    else:
        cfg = model_config(name)
    return {"model_cfg": cfg, "preprocess_cfg": dict(model.visual.preprocess_cfg)}


def preprocessing(model: nn.Module, overrides: dict) -> dict:
    """The image tower's preprocessing (OpenCLIP's eval transform: resize, center crop, normalise), with the
    entry's explicitly set keys taking precedence, as a preprocessing dict (transferlab.data.transforms)."""
    cfg = model.visual.preprocess_cfg
    size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][-1]
    if cfg.get("resize_mode", "shortest") not in RESIZE_MODES:
        raise PipelineError(f"OpenCLIP resize_mode {cfg['resize_mode']!r}: only shortest and squash are supported")
    if overrides.get("image_size", size) != size:
        raise PipelineError(f"image_size {overrides['image_size']}: this OpenCLIP model takes {size} px images "
                            "(its position embeddings); leave image_size out, or set it in a model config (.json)")
    crop = int(size)
    pre = {"crop_size": crop, "resize_size": int(overrides.get("resize_size") or crop),
           "interpolation": overrides.get("interpolation", cfg["interpolation"]),
           "antialias": overrides.get("antialias", True),
           "mean": list(overrides.get("mean", cfg["mean"])), "std": list(overrides.get("std", cfg["std"]))}
    if cfg.get("resize_mode") == "squash":
        pre["resize_mode"] = "squash"  # resize to crop x crop without keeping the aspect ratio (SigLIP)
    return pre


def build(config: dict, num_classes: int | None = None) -> nn.Module:
    """A randomly initialised model of an open_clip_config.json (call torch.manual_seed first); with
    num_classes, its image tower and a linear classifier (Scratch)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:  # OpenCLIP builds from a local-dir: folder or a registered name
        (Path(folder) / CONFIG_FILE).write_text(json.dumps(config))
        with _quiet():
            model = open_clip.create_model(f"local-dir:{folder}", load_weights=False, pretrained_text=False)
    return Scratch(model, num_classes) if num_classes else model


def read_config(backbone_dir: Path) -> dict:
    return json.loads((Path(backbone_dir) / CONFIG_FILE).read_text())


def image_tower(model: nn.Module) -> tuple[nn.Module, int]:
    """(the image tower: encode_image without normalising, i.e. the embedding zero-shot compares; its width)."""
    return model.visual, int(model.visual.output_dim)


class Scratch(nn.Module):
    """The image tower with a linear classifier: the architecture trained from random init (the scratch method)."""

    def __init__(self, model: nn.Module, num_classes: int):
        super().__init__()
        self.visual, width = image_tower(model)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.visual(x))


@torch.inference_mode()
def class_embeddings(model: nn.Module, tokenizer, texts: list[list[str]]) -> torch.Tensor:
    """One L2-normalised text embedding per class: the mean of its prompts' normalised embeddings, normalised
    again (the CLIP paper's prompt ensembling). Runs the text tower only."""
    model.eval()
    rows = []
    for prompts in texts:
        emb = model.encode_text(tokenizer(prompts), normalize=True)
        rows.append(torch.nn.functional.normalize(emb.mean(dim=0), dim=-1))
    return torch.stack(rows).float()


def tokenizer(backbone_dir: Path):
    """The model's tokenizer (the bundled BPE vocabulary of CLIP models works offline; a Hugging Face tokenizer
    such as SigLIP's needs the transformers package and its files in the Hugging Face cache)."""
    try:
        return open_clip.get_tokenizer(f"local-dir:{Path(backbone_dir).resolve()}")
    except (OSError, ImportError, ValueError) as err:
        raise PipelineError(f"{backbone_dir}: cannot load the OpenCLIP tokenizer "
                            f"({str(err).splitlines()[0][:160]}); a Hugging Face tokenizer needs `pip install "
                            "transformers` and its files in the Hugging Face cache") from None


def versions() -> dict:
    return {"open_clip": open_clip.__version__}
