"""One task, every method, into one folder (a TaskDir): the head (or head.sweep's best on val) and the reference
on the cached features, the zero-shot head on an OpenCLIP feature set, the finetune and scratch methods where
the task asks for them, then the evaluation of all of them. The image tower runs only for finetune and scratch."""
from __future__ import annotations

from dataclasses import dataclass

from transferlab.config import params as P
from transferlab.config.paths import Layout, TaskDir
from transferlab.evaluation.results import evaluate
from transferlab.heads.task_heads import train_task_head
from transferlab.heads.zero_shot import write_zero_shot
from transferlab.training.task_run import train_on_images


@dataclass(frozen=True)
class TaskSummary:
    """What one line of the stage's log says about a computed task."""

    name: str
    val_accuracy: float
    n_train: int
    test_accuracy: dict[str, float]
    notes: tuple[str, ...]

    def line(self) -> str:
        scores = ", ".join(f"{k} {v:.3f}" for k, v in self.test_accuracy.items())
        extra = "".join(f"; {n}" for n in self.notes)
        return (f"{self.name}: head val accuracy {self.val_accuracy:.3f} on {self.n_train} training images; "
                f"test accuracy {scores}{extra}")


def run_task(name: str, task: P.Task, params: P.Params, layout: Layout, out: TaskDir) -> TaskSummary:
    """Compute the task into `out` (its inputs from `layout`) -> the summary."""
    res = train_task_head(name, task, params.head, params.seed, layout.root, out.head)
    notes = []
    if write_zero_shot(name, task, params.head.prompt_templates, params.seed, layout, out.zero_shot)["ran"]:
        notes.append("zero-shot head encoded")
    for method in ("finetune", "scratch"):
        info = train_on_images(method, name, task, params.finetune, params.seed, layout, out, params.device)
        if info.get("epochs_run"):
            after = info.get("resumed_from_epoch")
            resumed = f", resumed after epoch {after}" if after else ""
            notes.append(f"{method} {info.get('mode', info.get('arch'))}: {info['epochs_run']} epochs{resumed}")
    metrics = evaluate(name, task, params.evaluate, params.seed, layout, out, params.head)
    return TaskSummary(name, res.val_accuracy, res.n_train,
                       {k: m["test_accuracy"] for k, m in metrics.items()}, tuple(notes))
