"""timm backbones: any timm model name (with its pretrained tag) as a backbone, its weights from timm's own loader
(through huggingface_hub: the Hugging Face cache and HF_HUB_OFFLINE=1 are honoured), a local state dict, or
seeded random init; preprocessing from the model's pretrained config; features as the pooled pre-logits (what
a linear probe on that model means) or a token / feature-map readout of its last blocks (timm's
forward_intermediates)."""
from __future__ import annotations

import difflib
import math

import timm
import torch
from timm.data import resolve_model_data_config
from torch import nn

from transferlab.config.errors import PipelineError
from transferlab.models.blocks import block_indices

POOLINGS = ("model", "cls", "mean", "cls+mean")


def _suggest(arch: str) -> str:
    names = timm.list_pretrained() if "." in arch else timm.list_models()
    near = difflib.get_close_matches(arch, names, n=5, cutoff=0.6)
    return f"nearest: {', '.join(near)}" if near else "see timm.list_models() / timm.list_pretrained()"


def check_arch(arch: str, key: str) -> None:
    """A PipelineError naming `key` and the nearest timm names when `arch` is none."""
    if not timm.is_model(arch):
        raise PipelineError(f"{key}: {arch!r} is not a timm model; {_suggest(arch)}")
    if "." in arch and timm.models.get_pretrained_cfg(arch) is None:
        raise PipelineError(f"{key}: timm model {arch!r} has no pretrained tag {arch.partition('.')[2]!r}; "
                            f"{_suggest(arch)}")


def model_kwargs(arch: str, image_size: int | None) -> dict:
    """What rebuilding the model needs beyond its name: a ViT-style model fixes its input size (position
    embeddings), so another image size is a constructor argument."""
    cfg = timm.models.get_pretrained_cfg(arch)
    fixed = cfg is not None and cfg.fixed_input_size
    return {"img_size": image_size} if fixed and image_size is not None else {}


def build(arch: str, num_classes: int | None = None, kwargs: dict | None = None) -> nn.Module:
    """A randomly initialised timm model (call torch.manual_seed first)."""
    extra = {} if num_classes is None else {"num_classes": num_classes}
    return timm.create_model(arch, pretrained=False, **extra, **(kwargs or {}))


def pretrained(arch: str, kwargs: dict) -> nn.Module:
    """The model with timm's pretrained weights for its tag, via timm's loader (the Hugging Face cache first)."""
    try:
        return timm.create_model(arch, pretrained=True, **kwargs)
    except (OSError, RuntimeError, ValueError) as err:
        cfg = timm.models.get_pretrained_cfg(arch)
        where = f"Hugging Face repo {cfg.hf_hub_id}" if cfg is not None and cfg.hf_hub_id else "its source"
        raise PipelineError(f"pretrained weights of timm model {arch!r} ({where}): not in the Hugging Face cache "
                            f"and not downloadable ({str(err).splitlines()[0][:160]}); fetch them once where "
                            "there is internet (the cache is $HF_HOME/hub; HF_HUB_OFFLINE=1 reads it only), or "
                            "give a local .safetensors file as weights") from None


def classifier_name(model: nn.Module) -> str:
    """The dotted name of the model's classifier module (timm's pretrained config names it)."""
    name = model.pretrained_cfg.get("classifier")
    if isinstance(name, (list, tuple)):  # distilled models: two heads
        name = name[0]
    if not name:
        raise PipelineError(f"timm model {model.default_cfg.get('architecture')} names no classifier")
    return name


def from_state_dict(arch: str, state: dict[str, torch.Tensor], where: str, kwargs: dict) -> nn.Module:
    """The model holding a local state dict; its classifier sized by the file (none if the file has none)."""
    key = f"{classifier_name(build(arch, 0, kwargs))}.weight"
    num_classes = int(state[key].shape[0]) if key in state else 0
    model = build(arch, num_classes, kwargs)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise PipelineError(f"{where}: weights do not fit timm model {arch}: {str(err).splitlines()[0]}") from None
    return model


def preprocessing(model: nn.Module, overrides: dict) -> dict:
    """The model's own data config (timm's resolution: input size, crop pct, interpolation, mean, std), with the
    entry's explicitly set keys taking precedence, as a preprocessing dict (transferlab.data.transforms)."""
    cfg = resolve_model_data_config(model)
    if cfg.get("crop_mode", "center") != "center":
        raise PipelineError(f"timm model crop_mode {cfg['crop_mode']!r}: only center crops are supported")
    crop = int(overrides.get("image_size", cfg["input_size"][-1]))
    resize = overrides.get("resize_size") or int(math.floor(crop / cfg.get("crop_pct", 1.0)))
    return {"crop_size": crop, "resize_size": int(resize),
            "interpolation": overrides.get("interpolation", cfg["interpolation"]),
            "antialias": overrides.get("antialias", True),
            "mean": list(overrides.get("mean", cfg["mean"])), "std": list(overrides.get("std", cfg["std"]))}


def drop_classifier(model: nn.Module) -> nn.Module:
    """The model outputs its pooled pre-logits features."""
    model.reset_classifier(0)
    return model


def is_token_model(model: nn.Module) -> bool:
    """A transformer whose intermediates are tokens (prefix tokens such as the class token, then patches)."""
    return hasattr(model, "num_prefix_tokens") and hasattr(model, "embed_dim")


class Readout(nn.Module):
    """Features from the last `blocks` blocks of a timm model, through forward_intermediates (normalised as the
    final norm does):
    - cls: the class tokens of the `blocks` (an int n: the last n; a tuple: those, cnn_blocks.block_indices),
      concatenated (transformers);
    - mean: the mean patch token (transformers) or the spatially averaged map (CNNs) of each of the blocks,
      concatenated;
    - cls+mean: the DINOv2 linear-evaluation input: the class tokens of the blocks and the mean patch token of
      the deepest."""

    def __init__(self, model: nn.Module, pooling: str, blocks: int | tuple[int, ...]):
        super().__init__()
        tokens = is_token_model(model)
        if pooling in ("cls", "cls+mean") and not (tokens and model.num_prefix_tokens > 0):
            raise PipelineError(f"pooling {pooling!r} needs a transformer with a class token; "
                                f"{type(model).__name__} has none: use pooling mean or model")
        self.depth = len(model.blocks) if tokens else len(model.feature_info)
        self.indices = block_indices(blocks, self.depth, type(model).__name__)  # from 0, ascending
        self.model, self.pooling, self.tokens = model, pooling, tokens
        if tokens:
            width = model.embed_dim
            self.dim = width * (len(self.indices) + (pooling == "cls+mean"))
        else:
            self.dim = sum(int(model.feature_info[i]["num_chs"]) for i in self.indices)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.tokens:
            maps = self.model.forward_intermediates(x, indices=self.indices, intermediates_only=True)
            return torch.cat([m.mean(dim=(2, 3)) for m in maps], dim=1)
        out = self.model.forward_intermediates(x, indices=self.indices, return_prefix_tokens=True, norm=True,
                                               output_fmt="NLC", intermediates_only=True)
        cls = [prefix[:, 0] for _, prefix in out]
        if self.pooling == "cls":
            return torch.cat(cls, dim=1)
        if self.pooling == "mean":
            return torch.cat([patches.mean(dim=1) for patches, _ in out], dim=1)
        return torch.cat([*cls, out[-1][0].mean(dim=1)], dim=1)


def trunk(model: nn.Module, pooling: str, blocks: int | tuple[int, ...]) -> tuple[nn.Module, int]:
    """(the module that computes the features, their width)."""
    if pooling == "model":
        return drop_classifier(model), int(model.num_features)
    readout = Readout(drop_classifier(model), pooling, blocks)
    return readout, readout.dim


def versions() -> dict:
    return {"timm": timm.__version__}
