"""Stage scratch@<task>: the no-transfer baseline. The feature set's backbone architecture from a seeded
random init, trained on the task's training images with the finetune recipe, so every report answers
"did transfer help?". Opt-in per task (tasks.<t>.scratch); otherwise it records that it was skipped.

The training is stages.whole_network, imported only by a task that trains the baseline: a skipped stage
starts and ends without torch and torchvision."""
from __future__ import annotations

from typing import TYPE_CHECKING

from stages import cli, paths
from stages import params as P
from stages.atomic import write_json
from stages.paths import Layout

if TYPE_CHECKING:
    import torch



def run(task_name: str, task: P.Task, cfg: P.Finetune, seed: int, layout: Layout,
        device: torch.device | str) -> dict:
    """device: a torch.device, or a params spec (auto, cuda, ...) resolved only if the task trains."""
    out_dir = layout.scratch(task_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not task.scratch:
        info = {"task": task_name, "method": "scratch", "ran": False}
        write_json(out_dir / paths.SCRATCH_INFO_FILE, info)
        return info
    from stages import whole_network  # torch, torchvision: only a task that trains the baseline loads them

    return whole_network.scratch(task_name, task, cfg, seed, layout, device)


def _main(params: P.Params, task: str) -> str:
    info = run(task, params.tasks[task], params.finetune, params.seed, Layout(), params.device)
    if not info["ran"]:
        return f"scratch@{task}: skipped (set tasks.{task}.scratch: true to train the no-transfer baseline)"
    resumed = f" (resumed after epoch {info['resumed_from_epoch']})" if info["resumed_from_epoch"] else ""
    return f"scratch@{task}: {info['arch']} from random init, {info['epochs_run']} epochs{resumed}"


def main(argv: list[str] | None = None) -> None:
    cli.stage_main(__doc__, _main, argv)


if __name__ == "__main__":
    main()
