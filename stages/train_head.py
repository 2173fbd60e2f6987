"""Stage train_head@<task>: train a linear or MLP head (or head.sweep's best on val) and the reference on a
cached feature set; the backbone never runs (transferlab.heads.task_heads)."""
from __future__ import annotations

import argparse

from transferlab.config import params as P
from transferlab.config.errors import reported_as_one_line
from transferlab.config.paths import Layout
from transferlab.heads.task_heads import train_task_head


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("task", help="a tasks entry of params.yaml")
    task = parser.parse_args(argv).task
    with reported_as_one_line():
        layout = Layout()
        params = P.load(layout.params)
        res = train_task_head(task, params.entry("tasks", task), params.head, params.seed, layout.root,
                              layout.head(task))
        print(f"train_head@{task}: val accuracy {res.val_accuracy:.3f} on {res.n_train} "
              f"training images ({res.seconds:.1f}s)")


if __name__ == "__main__":
    main()
