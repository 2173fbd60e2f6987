"""The one code path of a task's finetune and scratch methods: train the whole network on the task's images when
the task asks for it (transferlab.training.whole_network), else record that the method was skipped.

A skipped method imports neither torch nor torchvision (nor pandas): the record is all its stage writes."""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from transferlab.config import params as P
from transferlab.config.paths import FINETUNE_INFO_FILE, SCRATCH_INFO_FILE, Layout, TaskDir
from transferlab.io.atomic import write_json

if TYPE_CHECKING:
    import torch

Method = Literal["finetune", "scratch"]


def skip_record(method: Method, task_name: str, task: P.Task) -> dict | None:
    """What a method writes for a task that does not ask for it; None when the task does."""
    if method == "finetune":
        return {"task": task_name, "mode": "none"} if task.finetune == "none" else None
    return None if task.scratch else {"task": task_name, "method": "scratch", "ran": False}


def train_on_images(method: Method, task_name: str, task: P.Task, cfg: P.Finetune, seed: int, layout: Layout,
                    out: TaskDir, device: torch.device | str) -> dict:
    """Run `method` for the task into its folder (out.finetune / out.scratch), its curves and its run record
    -> the info it recorded, with the run record's fields. layout: where the inputs are.
    device: a torch.device, or a params spec (auto, cuda, ...) resolved only if there is something to train
    (a skipped stage runs anywhere, e.g. on a pool without the GPU that `device: cuda` asks for)."""
    out_dir = out.finetune if method == "finetune" else out.scratch
    out_dir.mkdir(parents=True, exist_ok=True)
    if (info := skip_record(method, task_name, task)) is not None:  # no curves: there was no epoch
        write_json(out_dir / (FINETUNE_INFO_FILE if method == "finetune" else SCRATCH_INFO_FILE), info)
        write_json(out.run_record(method), {"seconds": None, "resumed_from_epoch": None})
        return info
    from transferlab.training import whole_network  # torch, torchvision: only a method that trains loads them

    train = whole_network.finetune if method == "finetune" else whole_network.scratch
    return train(task_name, task, cfg, seed, layout, out, device)
