"""The typed schema of params.yaml: one place that says what every key means and which values it takes."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from stages.errors import PipelineError
from stages.paths import EMBEDDED_DIGITS_ROOT

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Dataset(_Strict):
    source: Literal["sklearn_digits", "imagefolder", "manifest", "torchvision"]
    root: str = Field(description="imagefolder: root/<class>/<file>; manifest: the CSV/parquet file, or a folder "
                      "holding manifest.csv or manifest.parquet (then DVC also tracks the images in it); "
                      "torchvision: the dataset's local root")
    name: str | None = Field(None, description="torchvision dataset class, for source: torchvision")
    download: bool = Field(False, description="source torchvision: let torchvision download into root")
    label_column: str = Field("label", description="source manifest: the column holding the labels")
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.15, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> Dataset:
        if self.source == "sklearn_digits" and self.root != EMBEDDED_DIGITS_ROOT:
            raise ValueError(f"root must be {EMBEDDED_DIGITS_ROOT!r} for source sklearn_digits "
                             "(the export_digits stage writes it there)")
        if self.source == "torchvision" and not self.name:
            raise ValueError("source torchvision needs `name`, a torchvision dataset class such as CIFAR10")
        if self.source != "torchvision" and (self.name is not None or self.download):
            raise ValueError("`name` and `download` are for source torchvision only")
        if self.source != "manifest" and self.label_column != "label":
            raise ValueError("`label_column` is for source manifest only")
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
    precision: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="what the backbone computes in (autocast; features are stored as float16 either "
        "way); auto: bf16 where the hardware has it (CUDA, or a CPU with AVX512-BF16/AMX), else fp32 (fp16 on "
        "CUDA without bf16). Part of the feature key")
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
    shot_seeds: list[int] | None = Field(None, description="draw the k shots once per seed "
                                         "and report mean +- std over the draws (needs shots)")
    efficiency_shots: list[int] | None = Field(
        None, min_length=1, description="shots per class for the data-efficiency curve (results/<task>/"
        "efficiency.csv), each drawn once per shot seed")
    scratch: bool = Field(False, description="also train the feature set's backbone architecture from random "
                          "init on this task (the no-transfer baseline: did transfer help?)")

    @field_validator("classes", mode="before")
    @classmethod
    def _classes_as_str(cls, v: Any) -> Any:
        return [str(c) for c in v] if isinstance(v, list) else v

    @field_validator("shot_seeds")
    @classmethod
    def _seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and len(v) < 2:
            raise ValueError(f"{v}: give at least two seeds (one draw has no spread), or remove shot_seeds")
        return _unique(v)

    @field_validator("efficiency_shots")
    @classmethod
    def _shots(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and min(v) < 1:
            raise ValueError(f"{v}: shots per class must be at least 1")
        return _unique(v)

    @model_validator(mode="after")
    def _seeds_need_shots(self) -> Task:
        if self.shot_seeds is not None and self.shots is None:
            raise ValueError("shot_seeds needs shots (k training images per class): without shots every "
                             "training image is used and there is nothing to draw; add shots or remove shot_seeds")
        return self

    @field_validator("label_map", mode="before")
    @classmethod
    def _map_as_str(cls, v: Any) -> Any:
        return {str(k): str(x) for k, x in v.items()} if isinstance(v, dict) else v


class Sweep(_Strict):
    """A grid of heads trained together: every kind x lr x weight_decay. An axis left out (or null) takes
    the head section's own single value."""

    kind: list[Literal["linear", "mlp"]] | None = Field(None, min_length=1)
    lr: list[float] | None = Field(None, min_length=1)
    weight_decay: list[float] | None = Field(None, min_length=1)
    C: list[float] | None = Field(None, min_length=1, description="optimizer lbfgs: the inverse regularisation "
                                  "strengths to sweep (scikit-learn's C)")

    @field_validator("lr", "weight_decay", "C")
    @classmethod
    def _unique_in_range(cls, v: list[float] | None, info: Any) -> list[float] | None:
        if v is not None:
            if info.field_name in ("lr", "C") and min(v) <= 0:
                raise ValueError(f"every {info.field_name} must be > 0, got {min(v)}")
            if info.field_name == "weight_decay" and min(v) < 0:
                raise ValueError(f"every weight_decay must be >= 0, got {min(v)}")
            if len(set(v)) != len(v):
                raise ValueError(f"values repeat: {v}")
        return v

    @field_validator("kind")
    @classmethod
    def _unique_kinds(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"values repeat: {v}")
        return v


class Head(_Strict):
    kind: Literal["linear", "mlp"] = "linear"
    hidden_dim: int = Field(256, ge=1, description="width of the mlp head's hidden layer")
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-2, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    standardize: bool = True
    optimizer: Literal["adamw", "lbfgs"] = Field(
        "adamw", description="adamw: mini-batch AdamW + warmup-cosine for `epochs` (lr, weight_decay; linear or "
        "mlp); lbfgs: full-batch L-BFGS to convergence on the L2-regularised cross-entropy, strength `C` as in "
        "scikit-learn (the linear-probe protocol of Kornblith et al. 2019; linear heads only)")
    C: float = Field(1.0, gt=0, description="optimizer lbfgs: inverse regularisation strength")
    sweep: Sweep | None = Field(None, description="train a grid of heads together and keep the best on val; "
                                "null: the one head above")

    @model_validator(mode="after")
    def _decay_below_one(self) -> Head:
        s = self.sweep or Sweep()
        if self.optimizer == "lbfgs":
            if "mlp" in (s.kind or [self.kind]):
                raise ValueError("optimizer lbfgs trains linear heads only; set kind: linear (and sweep.kind)")
            if s.lr or s.weight_decay:
                raise ValueError("optimizer lbfgs sweeps C, not lr or weight_decay; use sweep.C")
            return self
        if s.C:
            raise ValueError("sweep.C is for optimizer lbfgs; optimizer adamw sweeps lr and weight_decay")
        worst = max((h.lr * h.weight_decay, h.lr, h.weight_decay) for h in self.grid())
        if worst[0] >= 1:
            raise ValueError(f"lr {worst[1]} x weight_decay {worst[2]} >= 1: AdamW's decoupled decay "
                             "(weights *= 1 - lr * weight_decay each step) would zero or flip them; lower one")
        return self

    def grid(self) -> list[Head]:
        """The heads this section asks for, each a single-head Head (sweep None), in grid order: kind, then
        lr, then weight decay, each in the order written."""
        s = self.sweep or Sweep()
        if self.optimizer == "lbfgs":  # C in the order written
            return [self.model_copy(update={"C": c, "sweep": None}) for c in s.C or [self.C]]
        return [self.model_copy(update={"kind": k, "lr": lr, "weight_decay": wd, "sweep": None})
                for k in s.kind or [self.kind] for lr in s.lr or [self.lr]
                for wd in s.weight_decay or [self.weight_decay]]


class Finetune(_Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0, description="learning rate of the head")
    backbone_lr_mult: float = Field(0.1, ge=0, description="backbone lr = lr * backbone_lr_mult")
    weight_decay: float = Field(1e-4, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    freeze_norm: bool = Field(True, description="keep batch-norm statistics fixed while fine-tuning")
    freeze_epochs: int = Field(0, ge=0, description="first epochs that train the head only (backbone frozen)")
    augment: Literal["none", "light"] = Field("none", description="training-image augmentation; light: small "
                                              "rotation/shift/scale, no flips (safe for digits and text)")
    patience: int | None = Field(None, ge=1, description="early stopping: stop after this many epochs "
                                 "without a better val accuracy and keep the best epoch; null: off")
    class_weight: Literal["none", "balanced"] = Field("none", description="balanced: weight the loss by "
                                                      "inverse class frequency (imbalanced tasks)")

    @field_validator("freeze_epochs")
    @classmethod
    def _freeze_within_epochs(cls, v: int, info: ValidationInfo) -> int:
        epochs = info.data.get("epochs")
        if epochs is not None and v >= epochs:
            raise ValueError(f"{v} must be below epochs ({epochs}), or the backbone is never fine-tuned")
        return v


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


def _unique(values: list[int] | None) -> list[int] | None:
    if values is not None and len(set(values)) != len(values):
        raise ValueError(f"{values} repeats a value; list each one once")
    return values


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
