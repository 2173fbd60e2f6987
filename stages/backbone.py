"""Stage backbone@<name>: materialise a backbone (torchvision enum, local file, or seeded random init)."""
from __future__ import annotations

from pathlib import Path

from stages import backbones, cli
from stages import params as P
from stages.paths import Layout


def run(name: str, entry: P.Backbone, out_dir: Path, seed: int) -> backbones.BackboneInfo:
    model, pre, source = backbones.materialise(entry.arch, entry.weights, entry, seed)
    return backbones.save(model, out_dir, name, entry.arch, pre, source)


def _main(params: P.Params, name: str) -> str:
    info = run(name, params.backbones[name], Layout().backbone(name), params.seed)
    return f"backbone@{name}: {info.arch} ({info.source['kind']}), {info.feature_dim}-d features"


def main(argv: list[str] | None = None) -> None:
    cli.stage_main(__doc__, _main, argv)


if __name__ == "__main__":
    main()
