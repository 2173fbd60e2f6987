"""Stage scratch@<task>: the no-transfer baseline. The feature set's backbone architecture from a seeded
random init, trained on the task's training images with the finetune recipe, so every report answers
"did transfer help?". Opt-in per task (tasks.<t>.scratch); otherwise it records that it was skipped."""
from __future__ import annotations

import torch

from stages import backbones, cli, devices, finetune
from stages import params as P
from stages.atomic import write_json
from stages.paths import Layout

INFO_FILE, WEIGHTS_FILE = "scratch.json", "scratch.safetensors"
PREDICTIONS_FILE = finetune.PREDICTIONS_FILE


def run(task_name: str, task: P.Task, cfg: P.Finetune, seed: int, layout: Layout, device: torch.device) -> dict:
    out_dir = layout.scratch(task_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not task.scratch:
        info = {"task": task_name, "method": "scratch", "ran": False}
        write_json(out_dir / INFO_FILE, info)
        return info
    imgs = finetune.task_images(task_name, task, seed, layout)
    arch = backbones.read_info(imgs.backbone).arch
    torch.manual_seed(seed)
    model = backbones.build(arch, len(imgs.classes))  # every layer random, the classifier sized to the task
    # One learning rate for all: backbone_lr_mult protects pretrained weights, and these have none.
    groups = [{"params": list(model.parameters()), "lr": cfg.lr}]
    rec = finetune.recipe(cfg, seed, imgs, scratch=True)
    preds, stats, store = finetune.train_and_predict("scratch", imgs, model, groups, None, rec, cfg,
                                                     {"arch": arch, "seed": seed}, layout, device)
    info = {"task": task_name, "method": "scratch", "ran": True, "arch": arch,
            **finetune.run_summary(imgs, cfg, stats)}
    finetune.save_outputs(out_dir, WEIGHTS_FILE, model, preds, info, INFO_FILE)
    store.clear()
    return info


def _main(params: P.Params, task: str) -> str:
    info = run(task, params.tasks[task], params.finetune, params.seed, Layout(), devices.resolve(params.device))
    if not info["ran"]:
        return f"scratch@{task}: skipped (set tasks.{task}.scratch: true to train the no-transfer baseline)"
    resumed = f" (resumed after epoch {info['resumed_from_epoch']})" if info["resumed_from_epoch"] else ""
    return f"scratch@{task}: {info['arch']} from random init, {info['epochs_run']} epochs{resumed}"


def main(argv: list[str] | None = None) -> None:
    cli.stage_main(__doc__, _main, argv)


if __name__ == "__main__":
    main()
