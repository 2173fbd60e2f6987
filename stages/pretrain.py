"""Stage pretrain@<name>: train a backbone on a prepared source dataset; saved like any other backbone."""
from __future__ import annotations

import argparse

import pandas as pd

from transferlab.config import params as P
from transferlab.config.errors import reported_as_one_line
from transferlab.config.paths import Layout
from transferlab.models.devices import resolve
from transferlab.training.pretrain import pretrain


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", help="a pretrain entry of params.yaml")
    name = parser.parse_args(argv).name
    with reported_as_one_line():
        layout = Layout()
        params = P.load(layout.params)
        entry = params.entry("pretrain", name)
        manifest = pd.read_parquet(layout.manifest(entry.dataset))
        seed = params.seed if entry.seed is None else entry.seed
        info = pretrain(name, entry, manifest, layout.backbone(name), seed, resolve(params.device),
                        layout.curves("pretrain", name), layout.checkpoints(name, "pretrain"))
        source, resumed = info.source, info.source["resumed_from_epoch"]
        score = (f"source val NT-Xent loss {source['source_val_loss']:.3f}" if source.get("method") == "simclr"
                 else f"source val accuracy {source['source_val_accuracy']:.3f}")
        print(f"pretrain@{name}: {score}" + (f" (resumed after epoch {resumed})" if resumed else ""))


if __name__ == "__main__":
    main()
