"""Stage features@<set>: run a backbone over a prepared dataset; cache float16 features to disk.

Incremental: only images the per-image store lacks under this feature key are computed, chunk by chunk, so a
killed run resumes where it stopped; the feature set (data/features/<set>/, the DVC output) is then assembled
from the store in manifest order (transferlab.features.build). Read it with `from transferlab import
load_features`."""
from __future__ import annotations

import argparse

import pandas as pd

from transferlab.config import params as P
from transferlab.config.errors import reported_as_one_line
from transferlab.config.paths import Layout
from transferlab.features.build import build


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("featureset", help="a features entry of params.yaml")
    featureset = parser.parse_args(argv).featureset
    with reported_as_one_line():
        layout = Layout()
        params = P.load(layout.params)
        fs = params.entry("features", featureset)
        manifest = pd.read_parquet(layout.manifest(fs.dataset))
        res = build(featureset, fs, manifest, layout.backbone(fs.backbone), layout.features(featureset),
                    params.device)
        print(f"features@{featureset}: {res.n} x {res.dim} in {res.seconds:.1f}s "
              f"({res.extracted} extracted, {res.reused} reused)")


if __name__ == "__main__":
    main()
