"""Stage scratch@<task>: the no-transfer baseline. The feature set's backbone architecture from a seeded
random init, trained on the task's training images with the finetune recipe, so every report answers "did
transfer help?". Opt-in per task (tasks.<t>.scratch); otherwise it records that it was skipped, without torch."""
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
        info = train_on_images("scratch", task, params.entry("tasks", task), params.finetune, params.seed, layout,
                               params.device)
        if not info["ran"]:
            print(f"scratch@{task}: skipped (set tasks.{task}.scratch: true to train the no-transfer baseline)")
            return
        resumed = f" (resumed after epoch {info['resumed_from_epoch']})" if info["resumed_from_epoch"] else ""
        print(f"scratch@{task}: {info['arch']} from random init, {info['epochs_run']} epochs{resumed}")


if __name__ == "__main__":
    main()
