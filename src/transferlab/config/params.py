"""params.yaml as one typed, validated object (sections in transferlab.config.sections), with one-line errors."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError, field_validator, model_validator

from transferlab.config.errors import PipelineError
from transferlab.config.methods import Evaluate, Finetune, Head, Sweep  # noqa: F401  (re-exported)
from transferlab.config.sections import (  # noqa: F401  (re-exported: P.Task, P.Head, ... for the stages)
    IMAGENET_MEAN,
    IMAGENET_STD,
    POOLINGS,
    Backbone,
    Dataset,
    FeatureSet,
    Preprocessing,
    Pretrain,
    Strict,
    Task,
)

# libyaml's parser where PyYAML has it: the same documents, ~10x faster on a params.yaml of 1,000 tasks
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Params(Strict):
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
            source = getattr(models[f.backbone], "source", "torchvision")  # pretrain entries: torchvision
            allowed = POOLINGS[source]
            if f.pooling not in allowed:
                raise ValueError(f"features.{name}.pooling: {f.pooling!r} does not read {f.backbone}, a {source} "
                                 f"model; it takes pooling {' or '.join(allowed)}")
        for name, t in self.tasks.items():
            _known(f"tasks.{name}.features", t.features, self.features, "features")
        return self

    def entry(self, section: str, name: str) -> Any:
        """The named entry of a section (datasets, backbones, pretrain, features, tasks); a PipelineError naming
        the known entries when there is none (a stage called with a name params.yaml does not define)."""
        table = getattr(self, section)
        if name not in table:
            known = ", ".join(sorted(table)) or "(none defined)"
            raise PipelineError(f"{section}.{name}: not defined in params.yaml; known: {known}")
        return table[name]

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
        msg = "unknown key (check the spelling; see src/transferlab/config/sections.py for the allowed keys)"
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


def load(path: Path | str) -> Params:
    """Read and validate a params file (the stages pass Layout().params)."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: not found; run from the repository root, where params.yaml lives")
    try:
        data = yaml.load(path.read_text(), Loader=SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise PipelineError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse(data or {}, path)
