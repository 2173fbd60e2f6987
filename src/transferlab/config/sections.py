"""The sections of params.yaml, one typed model each: what every key means and which values it takes."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from transferlab.config.paths import EMBEDDED_DIGITS_ROOT

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# the feature-set poolings each backbone library's models can be read with (FeatureSet.pooling)
POOLINGS = {"torchvision": ("model", "mean"), "timm": ("model", "cls", "mean", "cls+mean"),
            "open_clip": ("model",)}


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
    source: Literal["torchvision", "timm", "open_clip"] = Field(
        "torchvision", description="the library whose model `arch` names")
    arch: str = Field(description="torchvision: a classification model name, e.g. resnet50; timm: a model name "
                      "with its pretrained tag, e.g. vit_small_patch14_dinov2.lvd142m; open_clip: a model name "
                      "(ViT-B-32), an hf-hub:<repo>, or a model config .json")
    weights: str = Field("none", description="torchvision: a weights enum name; timm: pretrained (timm's loader, "
                         "through the Hugging Face cache); open_clip: a pretrained tag (laion2b_s34b_b79k), or "
                         "pretrained for an hf-hub repository's own; any: a local .safetensors/.pth state dict, "
                         "or none (seeded random init)")

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
    method: Literal["supervised", "simclr"] = Field(
        "supervised", description="supervised: a classifier of the dataset's labels (classes); simclr: "
        "self-supervised SimCLR on its images, labels ignored (classes, if given, still selects the images): two "
        "random views of each train image, lightly's projection head and NT-Xent loss; the val images' NT-Xent "
        "loss is the curve patience judges, and the encoder alone is saved (no projection head)")
    classes: list[str] | None = None
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    augment: Literal["none", "light", "crop", "crop+flip"] = Field(
        "none", description="training-image augmentation: light: small rotation/shift/scale; crop: a random "
        "resized crop (scale 0.5-1) instead of the centre crop; crop+flip: and horizontal flips (natural images "
        "only: a flip changes what a digit or a letter means). Method simclr always crops (scale 0.2-1) and "
        "jitters colour; light and crop+flip add their affine jitter or flips")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    patience: int | None = Field(None, ge=1, description="early stopping on source-val accuracy (method "
                                 "simclr: val NT-Xent loss), keeping the best epoch; null: every epoch, the "
                                 "last kept")
    seed: int | None = Field(None, description="the seed of this pretraining (init, batches); default the "
                             "top-level seed. Entries that differ only in seed are one configuration, whose "
                             "spread over seeds the report's \"did transfer help?\" measures")

    @field_validator("classes", mode="before")
    @classmethod
    def _labels_as_str(cls, v: Any) -> Any:
        return [str(c) for c in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _simclr(self) -> Pretrain:
        if self.method == "simclr" and self.label_smoothing:
            raise ValueError("label_smoothing is for method supervised: simclr ignores the labels; remove it")
        if self.method == "simclr" and self.batch_size < 2:
            raise ValueError(f"batch_size {self.batch_size}: method simclr contrasts each image with the others "
                             "of its batch; give at least 2 (SimCLR gains from large batches, e.g. 256)")
        return self


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
        "model", description="which features: model: the pooled pre-logits (the classifier's input); mean: the "
        "averaged feature map of a CNN's blocks (torchvision or timm) or the mean patch token (timm "
        "transformers); timm transformers also: cls (class tokens), cls+mean (the DINOv2 linear-evaluation "
        "input). Part of the feature key")
    blocks: int | tuple[int, ...] = Field(1, description="pooling cls / mean / cls+mean: which blocks, their "
                                          "features concatenated: n, the last n; or a list of blocks from 0, "
                                          "negative from the end ([-2]: the block before the last, whose "
                                          "features transfer better to a target unlike the source)")

    @model_validator(mode="after")
    def _dask_only(self) -> FeatureSet:
        if self.executor == "local" and self.scheduler:
            raise ValueError("scheduler is for executor: dask; set executor: dask or leave scheduler out")
        if self.pooling == "model" and self.blocks != 1:
            raise ValueError("blocks is for pooling cls, mean or cls+mean; pooling model reads the last block")
        if isinstance(self.blocks, int) and self.blocks < 1:
            raise ValueError(f"blocks {self.blocks}: the number of last blocks is at least 1")
        if isinstance(self.blocks, tuple) and not self.blocks:
            raise ValueError("blocks []: name at least one block")
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
    class_text: dict[str, str] | None = Field(None, description="zero-shot (OpenCLIP feature sets): the text "
                                              "standing for a class (after label_map) in the prompt templates; "
                                              "default the class name")

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

    @field_validator("label_map", "class_text", mode="before")
    @classmethod
    def _map_as_str(cls, v: Any) -> Any:
        return {str(k): str(x) for k, x in v.items()} if isinstance(v, dict) else v

    @property
    def trains_images(self) -> bool:
        """Whether the task runs the backbone on its images (finetune or scratch): then params.finetune and the
        device determine its results, and its feature set's tasks@ stage is GPU work (flows/pools.py)."""
        return self.finetune != "none" or self.scratch


def _unique(values: list[int] | None) -> list[int] | None:
    if values is not None and len(set(values)) != len(values):
        raise ValueError(f"{values} repeats a value; list each one once")
    return values
