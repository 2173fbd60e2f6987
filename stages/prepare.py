"""Stage prepare@<dataset>: list, decode and hash every file once; refuse broken ones by name; fix splits.

Writes data/prepared/<dataset>/: manifest.parquet, rejected.csv and duplicates.csv (transferlab.data.prepare)."""
from __future__ import annotations

import argparse

from transferlab.config import params as P
from transferlab.config.errors import reported_as_one_line
from transferlab.config.paths import Layout
from transferlab.data.prepare import prepare


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset", help="a datasets entry of params.yaml")
    dataset = parser.parse_args(argv).dataset
    with reported_as_one_line():
        layout = Layout()
        params = P.load(layout.params)
        res = prepare(params.entry("datasets", dataset), layout.prepared(dataset), params.seed, dataset)
        print(f"prepare@{dataset}: {res.n_images} images {res.split_counts}, {res.n_rejected} rejected, "
              f"{res.n_duplicates} duplicates ({res.n_dropped} dropped from a second split)")


if __name__ == "__main__":
    main()
