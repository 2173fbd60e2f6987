"""Stage train_head@<task>: train a linear or MLP head (or head.sweep's best on val) and the reference on a
cached feature set; the image tower never runs (transferlab.heads.task_heads). On an OpenCLIP feature set, also
the zero-shot head: the class names through the text tower (transferlab.heads.zero_shot)."""
from __future__ import annotations

import argparse

from transferlab.config import params as P
from transferlab.config.errors import reported_as_one_line
from transferlab.config.paths import Layout
from transferlab.heads.task_heads import train_task_head
from transferlab.heads.zero_shot import write_zero_shot


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("task", help="a tasks entry of params.yaml")
    task = parser.parse_args(argv).task
    with reported_as_one_line():
        layout = Layout()
        params = P.load(layout.params)
        entry = params.entry("tasks", task)
        res = train_task_head(task, entry, params.head, params.seed, layout.root, layout.head(task))
        zero = write_zero_shot(task, entry, params.head.prompt_templates, params.seed, layout)
        print(f"train_head@{task}: val accuracy {res.val_accuracy:.3f} on {res.n_train} "
              f"training images ({res.seconds:.1f}s)" + (", zero-shot head encoded" if zero["ran"] else ""))


if __name__ == "__main__":
    main()
