"""Stage tasks@<feature set>: every task of params.yaml on the feature set, in one process
(transferlab.tasks.featureset): the head (or head.sweep's best on val) and the reference, the zero-shot head on
an OpenCLIP set, finetune and scratch where a task asks for them, and the evaluation. A task whose inputs did not
change since it was last computed is copied from the task cache (.cache/tasks), not recomputed."""
from __future__ import annotations

import argparse

from transferlab.config import params as P
from transferlab.config.errors import reported_as_one_line
from transferlab.config.paths import Layout
from transferlab.tasks.featureset import run_featureset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("features", help="a features entry of params.yaml")
    featureset = parser.parse_args(argv).features
    with reported_as_one_line():
        layout = Layout()
        params = P.load(layout.params)
        record = run_featureset(featureset, params, layout)
        print(f"tasks@{featureset}: {len(record.computed)} computed ({sum(record.computed.values()):.1f}s), "
              f"{len(record.reused)} reused from the task cache")


if __name__ == "__main__":
    main()
