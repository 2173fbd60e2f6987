"""The sections of params.yaml, one typed model each: what every key means and which values it takes."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from transferlab.config.paths import EMBEDDED_DIGITS_ROOT

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Strict(BaseModel):
    """A params section: unknown keys fail, values are frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Dataset(Strict):
    source: Literal["sklearn_digits", "imagefolder", "manifest", "torchvision", "huggingface"]
    root: str = Field(description="imagefolder: root/<class>/<file>; manifest: the CSV/parquet file, or a folder "
                      "holding manifest.csv or manifest.parquet (then DVC also tracks the images in it); "
                      "torchvision: the dataset's local root; huggingface: a save_to_disk folder, a .parquet file "
                      "or folder of them, or (with name) the cache folder holding the Hub dataset")
    name: str | None = Field(None, description="torchvision: the dataset class (e.g. CIFAR10); huggingface: a "
                             "Hub dataset id (owner/dataset), read offline from the cache folder root")
    download: bool = Field(False, description="source torchvision: let torchvision download into root")
    label_column: str = Field("label", min_length=1, description="sources manifest and huggingface: the column "
                              "holding the labels")
    image_column: str = Field("image", min_length=1, description="source huggingface: the column holding the "
                              "images")
    val_fraction: float = Field(0.15, lt=1.0, description="share of each class drawn into val (where the source "
                                "fixes no split): heads, the reference and early stopping choose on it")
    test_fraction: float = Field(0.15, gt=0.0, lt=1.0)

    @field_validator("val_fraction")
    @classmethod
    def _some_val(cls, v: float) -> float:
        if v <= 0:
            raise ValueError(f"{v} leaves no validation images, and the head sweep, the reference's C and early "
                             "stopping are chosen on them; give a fraction > 0 such as 0.15")
        return v

    @model_validator(mode="after")
    def _check(self) -> Dataset:
        if self.source == "sklearn_digits" and self.root != EMBEDDED_DIGITS_ROOT:
            raise ValueError(f"root must be {EMBEDDED_DIGITS_ROOT!r} for source sklearn_digits "
                             "(the export_digits stage writes it there)")
        if self.source == "torchvision" and not self.name:
            raise ValueError("source torchvision needs `name`, a torchvision dataset class such as CIFAR10")
        if self.source not in ("torchvision", "huggingface") and self.name is not None:
            raise ValueError("`name` is for sources torchvision and huggingface only")
        if self.download and self.source != "torchvision":
            raise ValueError("`download` is for source torchvision only" + (
                " (huggingface reads its cache offline: fill the cache folder where there is internet)"
                if self.source == "huggingface" else ""))
        if self.source == "huggingface" and self.name is not None and (
                self.name.count("/") > 1 or not self.name.strip("/ ") or self.name.startswith((".", "/", "~"))):
            raise ValueError(f"`name` {self.name!r} is not a Hub dataset id such as owner/dataset; a local "
                             "save_to_disk or parquet dataset goes in root, without name")
        if self.source not in ("manifest", "huggingface") and self.label_column != "label":
            raise ValueError("`label_column` is for source huggingface or manifest only")
        if self.source != "huggingface" and self.image_column != "image":
            raise ValueError("`image_column` is for source huggingface only")
        if self.image_column == self.label_column:
            raise ValueError(f"`image_column` and `label_column` are both {self.label_column!r}; name two columns")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must leave some images for training (< 1)")
        return self


class Preprocessing(Strict):
    """How images become tensors, for backbones whose weights do not bring their own transforms. A timm model
    brings its own (its pretrained config); the keys set here override it."""

    image_size: int = Field(224, ge=8, description="center-crop size fed to the model")
    resize_size: int | None = Field(None, description="shorter side before the crop; default image_size")
    interpolation: Literal["nearest", "bilinear", "bicubic"] = "bilinear"
    antialias: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


class Backbone(Preprocessing):
    source: Literal["torchvision", "timm"] = Field("torchvision", description="the library whose model `arch` "
                                                   "names")
    arch: str = Field(description="torchvision: a classification model name, e.g. resnet50; timm: a model name "
                      "with its pretrained tag, e.g. vit_small_patch14_dinov2.lvd142m")
    weights: str = Field("none", description="torchvision: a weights enum name; timm: pretrained (timm's loader, "
                         "through the Hugging Face cache); either: a local .safetensors/.pth state dict, or none "
                         "(seeded random init)")

    @model_validator(mode="after")
    def _weights_of_source(self) -> Backbone:
        if self.source == "torchvision" and self.weights == "pretrained":
            raise ValueError("weights pretrained is for source timm; a torchvision model names its weights enum, "
                             "e.g. IMAGENET1K_V1 (or DEFAULT)")
        if self.source == "timm" and self.weights not in ("none", "pretrained") and not self.weights.endswith(
                (".safetensors", ".pth", ".pt")):
            raise ValueError(f"weights {self.weights!r}: a timm backbone takes pretrained (the tag in arch), a "
                             "local .safetensors/.pth file, or none")
        return self


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


class FeatureSet(Strict):
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
                                               "dask: in shards on a Dask cluster (features.dask_executor)")
    scheduler: str | None = Field(None, description="executor dask: a running scheduler's address, e.g. "
                                  "tcp://gpu-head:8786; default $DASK_SCHEDULER_ADDRESS, else a local cluster")
    workers: int = Field(2, ge=1, description="executor dask: worker processes of a local cluster")
    shard_images: int = Field(2048, ge=1, description="executor dask: images per shard (one Dask task each)")
    pooling: Literal["model", "cls", "mean", "cls+mean"] = Field(
        "model", description="which features: model: the pooled pre-logits (the classifier's input); timm "
        "backbones also: cls (class tokens), mean (mean patch token, or averaged feature map of a CNN), cls+mean "
        "(the DINOv2 linear-evaluation input), each from the last `blocks` blocks. Part of the feature key")
    blocks: int = Field(1, ge=1, description="pooling cls / mean / cls+mean: how many of the last blocks "
                        "(concatenated)")

    @model_validator(mode="after")
    def _dask_only(self) -> FeatureSet:
        if self.executor == "local" and self.scheduler:
            raise ValueError("scheduler is for executor: dask; set executor: dask or leave scheduler out")
        if self.pooling == "model" and self.blocks != 1:
            raise ValueError("blocks is for pooling cls, mean or cls+mean; pooling model reads the last block")
        return self


class Task(Strict):
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


class Sweep(Strict):
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


class Head(Strict):
    kind: Literal["linear", "mlp"] = "linear"
    hidden_dim: int = Field(256, ge=1, description="width of the mlp head's hidden layer")
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-2, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    standardize: bool = True
    optimizer: Literal["adamw", "lbfgs"] = Field(
        "lbfgs", description="adamw: mini-batch AdamW + warmup-cosine for `epochs` (lr, weight_decay; linear or "
        "mlp); lbfgs: full-batch L-BFGS to convergence on the L2-regularised cross-entropy, strength `C` as in "
        "scikit-learn (the linear-probe protocol of Kornblith et al. 2019; linear heads only)")
    C: float = Field(1.0, gt=0, description="optimizer lbfgs: inverse regularisation strength")
    sweep: Sweep | None = Field(None, description="fit a grid of heads (lbfgs: one per C, warm-started; adamw: "
                                "all together in one pass) and keep the best on val; null: the one head above")

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


class Finetune(Strict):
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


class Evaluate(Strict):
    normalize_confusion: bool = False


def _unique(values: list[int] | None) -> list[int] | None:
    if values is not None and len(set(values)) != len(values):
        raise ValueError(f"{values} repeats a value; list each one once")
    return values
