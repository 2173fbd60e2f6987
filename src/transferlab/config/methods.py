"""The sections of params.yaml that say how a task's models are trained and evaluated: the head (and its sweep),
the fine-tune, the zero-shot head, the evaluation."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from transferlab.config.sections import Strict


class Sweep(Strict):
    """A grid of heads trained together: every kind x lr x weight_decay. An axis left out (or null) takes
    the head section's own single value."""

    kind: list[Literal["linear", "mlp"]] | None = Field(None, min_length=1)
    lr: list[float] | None = Field(None, min_length=1)
    weight_decay: list[float] | None = Field(None, min_length=1)
    C: list[float] | None = Field(None, min_length=1, description="optimizer lbfgs: the inverse regularisation "
                                  "strengths to sweep (scikit-learn's C)")
    refine: int = Field(0, ge=0, le=6, description="optimizer lbfgs: rounds of a coarse-to-fine search after the "
                        "C grid, each fitting the geometric midpoints between the best C on val and its "
                        "neighbours (1 over a decade grid: the half-decades either side of the best)")

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
    prompt_templates: list[str] = Field(["a photo of a {}."], min_length=1, description="the zero-shot head of a "
                                        "task on an OpenCLIP feature set: each class's text ({} in each template; "
                                        "tasks.<t>.class_text, else its name) through the text tower, averaged "
                                        "over the templates (the CLIP paper's prompt ensemble)")
    reference: Literal["auto", "always", "never"] = Field(
        "auto", description="the scikit-learn reference row, a check on the head that costs about as much as the "
        "linear probe: always, never, or auto: where the task's training features hold at most "
        "heads.reference.AUTO_MAX_VALUES values (rows x dimensions), where it takes seconds")

    @field_validator("prompt_templates")
    @classmethod
    def _one_slot(cls, v: list[str]) -> list[str]:
        for t in v:
            if t.count("{}") != 1:
                raise ValueError(f"{t!r}: a template holds {{}} exactly once, where the class text goes")
        if len(set(v)) != len(v):
            raise ValueError(f"templates repeat: {v}")
        return v

    @model_validator(mode="after")
    def _decay_below_one(self) -> Head:
        s = self.sweep or Sweep()
        if self.optimizer == "lbfgs":
            if "mlp" in (s.kind or [self.kind]):
                raise ValueError("optimizer lbfgs trains linear heads only; set kind: linear (and sweep.kind)")
            if s.lr or s.weight_decay:
                raise ValueError("optimizer lbfgs sweeps C, not lr or weight_decay; use sweep.C")
            if s.refine and len(s.C or []) < 2:
                raise ValueError("sweep.refine searches between the Cs of sweep.C; give it at least two")
            return self
        if s.C or s.refine:
            raise ValueError("sweep.C and sweep.refine are for optimizer lbfgs; optimizer adamw sweeps lr and "
                             "weight_decay")
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
    augment: Literal["none", "light", "crop", "crop+flip"] = Field(
        "none", description="training-image augmentation; light: small rotation/shift/scale, no flips (safe for "
        "digits and text); crop: a random resized crop (scale 0.5-1); crop+flip: and horizontal flips")
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
