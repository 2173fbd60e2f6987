"""Stage finetune@<task>: optionally train the whole network on the task (full: new head; lpft: from the
trained head), then predict val and test. With mode none it records that it was skipped. Checkpoints every
epoch under .cache/checkpoints/<task>/finetune: an interrupted run resumes where it stopped.

The training is stages.whole_network, imported only by a task that fine-tunes: a skipped stage starts and
ends without torch and torchvision."""
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
    """device: a torch.device, or a params spec (auto, cuda, ...) resolved only if the task fine-tunes (a
    skipped stage runs anywhere, e.g. on a pool without the GPU that `device: cuda` asks for)."""
    out_dir = layout.finetune(task_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    if task.finetune == "none":
        info = {"task": task_name, "mode": "none"}
        write_json(out_dir / paths.FINETUNE_INFO_FILE, info)
        return info
    from stages import whole_network  # torch, torchvision: only a task that fine-tunes loads them

    return whole_network.finetune(task_name, task, cfg, seed, layout, device)


def _main(params: P.Params, task: str) -> str:
    info = run(task, params.tasks[task], params.finetune, params.seed, Layout(), params.device)
    resumed = f" (resumed after epoch {info['resumed_from_epoch']})" if info.get("resumed_from_epoch") else ""
    return f"finetune@{task}: mode {info['mode']}{resumed}"


def main(argv: list[str] | None = None) -> None:
    cli.stage_main(__doc__, _main, argv)


if __name__ == "__main__":
    main()
