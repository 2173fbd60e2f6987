"""transferlab: transfer learning as versioned, reusable stages. The library the DVC stages (stages/) call.

Public reader (contract): `from transferlab import load_features`; load_features(name, root=".") ->
(features N×D float16, DataFrame[image_id, label, split]). Imported on first use, so that `import transferlab`
(which every stage does) loads neither numpy nor pandas."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["load_features"]

if TYPE_CHECKING:
    from transferlab.features.sets import load_features


def __getattr__(name: str) -> Any:
    if name == "load_features":
        from transferlab.features.sets import load_features

        return load_features
    raise AttributeError(f"module 'transferlab' has no attribute {name!r}")
