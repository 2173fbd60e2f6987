"""Stage finetune@<task>: optionally train the whole network on the task (full: new head; lpft: from the
trained head), then predict val and test. With mode none it records that it was skipped, without loading torch.
Checkpoints every epoch under .cache/checkpoints/<task>/finetune: an interrupted run resumes where it stopped."""
from __future__ import annotations

import argparse

from transferlab.config import params as P
from transferlab.config.errors import reported_as_one_line
from transferlab.config.paths import Layout
from transferlab.training.task_run import train_on_images


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("task", help="a tasks entry of params.yaml")
    task = parser.parse_args(argv).task
    with reported_as_one_line():
        layout = Layout()
        params = P.load(layout.params)
        info = train_on_images("finetune", task, params.entry("tasks", task), params.finetune, params.seed, layout,
                               params.device)
        resumed = f" (resumed after epoch {info['resumed_from_epoch']})" if info.get("resumed_from_epoch") else ""
        print(f"finetune@{task}: mode {info['mode']}{resumed}")


if __name__ == "__main__":
    main()
