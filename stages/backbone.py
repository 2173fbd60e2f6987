"""Stage backbone@<name>: materialise a backbone (torchvision enum, timm pretrained tag, local file, or seeded
random init)."""
from __future__ import annotations

import argparse

from transferlab.config import params as P
from transferlab.config.errors import reported_as_one_line
from transferlab.config.paths import Layout
from transferlab.models import backbones


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", help="a backbones entry of params.yaml")
    name = parser.parse_args(argv).name
    with reported_as_one_line():
        layout = Layout()
        params = P.load(layout.params)
        info = backbones.create(name, params.entry("backbones", name), layout.backbone(name), params.seed)
        print(f"backbone@{name}: {info.arch} ({info.source['kind']}), {info.feature_dim}-d features")


if __name__ == "__main__":
    main()
