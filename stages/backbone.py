"""Stage backbone@<name>: materialise a backbone (torchvision enum, local file, or seeded random init)."""
from __future__ import annotations

import argparse
from pathlib import Path

from stages import backbones, cli, params as P
from stages.paths import Layout


def run(name: str, entry: P.Backbone, out_dir: Path, seed: int) -> backbones.BackboneInfo:
    model, pre, source = backbones.materialise(entry.arch, entry.weights, entry, seed)
    return backbones.save(model, out_dir, name, entry.arch, pre, source)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("name")
    args = ap.parse_args(argv)
    with cli.reporting_errors():
        params = P.load()
        info = run(args.name, params.backbones[args.name], Layout().backbone(args.name), params.seed)
        print(f"backbone@{args.name}: {info.arch} ({info.source['kind']}), {info.feature_dim}-d features")


if __name__ == "__main__":
    main()
