"""The typed schema of params.yaml: one place that says what every key means and which values it takes."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stages.errors import PipelineError
from stages.paths import EMBEDDED_DIGITS_ROOT

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Dataset(_Strict):
    source: Literal["sklearn_digits", "imagefolder", "manifest", "torchvision"]
    root: str
    name: str | None = Field(None, description="torchvision dataset class, for source: torchvision")
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.15, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> Dataset:
        if self.source == "sklearn_digits" and self.root != EMBEDDED_DIGITS_ROOT:
            raise ValueError(f"root must be {EMBEDDED_DIGITS_ROOT!r} for source sklearn_digits "
                             "(the export_digits stage writes it there)")
        if self.source == "torchvision" and not self.name:
            raise ValueError("source torchvision needs `name`, a torchvision dataset class such as CIFAR10")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must leave some images for training (< 1)")
        return self


class Preprocessing(_Strict):
    """How images become tensors, for backbones whose weights do not bring their own transforms."""

    image_size: int = Field(224, ge=8, description="center-crop size fed to the model")
    resize_size: int | None = Field(None, description="shorter side before the crop; default image_size")
    interpolation: Literal["nearest", "bilinear", "bicubic"] = "bilinear"
    antialias: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


class Backbone(Preprocessing):
    arch: str = Field(description="a torchvision classification model name, e.g. resnet50")
    weights: str = Field("none", description="a torchvision weights enum name, a local "
                         ".safetensors/.pth file, or none (seeded random init)")


class Pretrain(Preprocessing):
    arch: str
    dataset: str
    classes: list[str] | None = None
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)

    @field_validator("classes", mode="before")
    @classmethod
    def _labels_as_str(cls, v: Any) -> Any:
        return [str(c) for c in v] if isinstance(v, list) else v


class FeatureSet(_Strict):
    dataset: str
    backbone: str
    batch_size: int = Field(64, ge=1)
    num_workers: int = Field(0, ge=0)
    store: str | None = Field(None, description="folder of the per-image feature store shared across runs "
                              "and checkouts; default $TRANSFERLAB_FEATURE_STORE, else .cache/features")
    import_from: list[str] = Field([], description="feature sets of this repository (e.g. pulled from a DVC "
                                   "remote) whose rows of the same key fill this set's store before extracting")
    executor: Literal["local", "dask"] = Field("local", description="local: extract in the stage's process; "
                                               "dask: in shards on a Dask cluster (stages/feature_shards.py)")
    scheduler: str | None = Field(None, description="executor dask: a running scheduler's address, e.g. "
                                  "tcp://gpu-head:8786; default $DASK_SCHEDULER_ADDRESS, else a local cluster")
    workers: int = Field(2, ge=1, description="executor dask: worker processes of a local cluster")
    shard_images: int = Field(2048, ge=1, description="executor dask: images per shard (one Dask task each)")

    @model_validator(mode="after")
    def _dask_only(self) -> FeatureSet:
        if self.executor == "local" and self.scheduler:
            raise ValueError("scheduler is for executor: dask; set executor: dask or leave scheduler out")
        return self


class Task(_Strict):
    features: str
    classes: list[str] | None = None
    label_map: dict[str, str] | None = None
    shots: int | None = Field(None, ge=1, description="k training images per class (few-shot)")
    finetune: Literal["none", "full", "lpft"] = "none"

    @field_validator("classes", mode="before")
    @classmethod
    def _classes_as_str(cls, v: Any) -> Any:
        return [str(c) for c in v] if isinstance(v, list) else v

    @field_validator("label_map", mode="before")
    @classmethod
    def _map_as_str(cls, v: Any) -> Any:
        return {str(k): str(x) for k, x in v.items()} if isinstance(v, dict) else v


class Head(_Strict):
    kind: Literal["linear", "mlp"] = "linear"
    hidden_dim: int = Field(256, ge=1, description="width of the mlp head's hidden layer")
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-2, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    standardize: bool = True


class Finetune(_Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0, description="learning rate of the head")
    backbone_lr_mult: float = Field(0.1, ge=0, description="backbone lr = lr * backbone_lr_mult")
    weight_decay: float = Field(1e-4, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    freeze_norm: bool = Field(True, description="keep batch-norm statistics fixed while fine-tuning")


class Evaluate(_Strict):
    normalize_confusion: bool = False


class Params(_Strict):
    seed: int = 0
    device: str = "auto"
    datasets: dict[str, Dataset]
    backbones: dict[str, Backbone] = {}
    pretrain: dict[str, Pretrain] = {}
    features: dict[str, FeatureSet]
    tasks: dict[str, Task]
    head: Head = Head()
    finetune: Finetune = Finetune()
    evaluate: Evaluate = Evaluate()

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v):
            raise ValueError(f"{v!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
        return v

    @model_validator(mode="after")
    def _references(self) -> Params:
        for section in ("datasets", "backbones", "pretrain", "features", "tasks"):
            for name in getattr(self, section):
                if not _NAME.match(str(name)):
                    raise ValueError(f"{section}.{name}: names may use letters, digits, '_', '.', '-'")
        clash = set(self.backbones) & set(self.pretrain)
        if clash:
            raise ValueError(f"pretrain.{sorted(clash)[0]}: the name is also a backbones entry; "
                             "backbones and pretrain share one namespace")
        models = {**self.backbones, **self.pretrain}
        for name, p in self.pretrain.items():
            _known(f"pretrain.{name}.dataset", p.dataset, self.datasets, "datasets")
        for name, f in self.features.items():
            _known(f"features.{name}.dataset", f.dataset, self.datasets, "datasets")
            _known(f"features.{name}.backbone", f.backbone, models, "backbones or pretrain")
        for name, t in self.tasks.items():
            _known(f"tasks.{name}.features", t.features, self.features, "features")
        return self

    def backbone_source(self, name: str) -> Backbone | Pretrain:
        return {**self.backbones, **self.pretrain}[name]


def _known(where: str, value: str, table: dict, section: str) -> None:
    if value not in table:
        allowed = ", ".join(sorted(table)) or "(none defined)"
        raise ValueError(f"{where}: {value!r} is not defined in {section}; known: {allowed}")


def _one_line(err: ValidationError, source: Path) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see stages/params.py for the allowed keys)"
    elif first["type"] == "literal_error":
        msg = f"{first['input']!r} is not allowed: {msg}"
    more = len(err.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {where + ': ' if where else ''}{msg}{tail}"


def parse(data: Any, source: Path | str = "params.yaml") -> Params:
    """Validate a params mapping; raise PipelineError with one line naming the bad key."""
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise PipelineError(_one_line(err, Path(source))) from None


def load(path: Path | str = "params.yaml") -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: not found; run from the repository root, where params.yaml lives")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise PipelineError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse(data or {}, path)
