"""Every task and every method side by side: reports/summary.csv and reports/report.md."""
from __future__ import annotations

import json

import pandas as pd

from transferlab.config import params as P
from transferlab.config.paths import HEAD_INFO_FILE, Layout, TaskDir
from transferlab.evaluation import transfer
from transferlab.evaluation.publish import publish_results
from transferlab.io.atomic import write_csv, write_json, write_text

COLUMNS = ["task", "method", "features", "backbone", "backbone_run", "shots", "test_accuracy", "val_accuracy",
           "macro_f1", "n_train", "n_test", "seconds",
           "test_accuracy_mean", "test_accuracy_std", "n_seeds"]
# Whether a method runs the backbone on the task's images (costly) or only reads the cached features.
BACKBONE_RUN = {"head": "no", "reference": "no", "prototype": "no", "zero_shot": "no", "finetune": "yes",
                "scratch": "yes"}


def _seconds(models: TaskDir, head_info: dict) -> dict:
    """Training seconds per metrics kind of one task (head_info: its head.json)."""
    runs = {m: models.run_record(m) for m in ("finetune", "scratch")}
    return {"head": head_info["seconds"], "reference": head_info["reference"].get("seconds"),
            **{m: json.loads(p.read_text())["seconds"] if p.is_file() else None for m, p in runs.items()}}


def _numbers(record: dict) -> dict:
    """The numeric fields of a run record (a DVC metric: where the store lives is not one)."""
    return {k: v for k, v in record.items()
            if (isinstance(v, (int, float)) and not isinstance(v, bool)) or (isinstance(v, dict) and v)}


def runs(params: P.Params, layout: Layout) -> dict:
    """What each features@ and tasks@ run did (tasks computed and reused), and each task's finetune and scratch
    run, from their run records -> reports/runs.json."""
    found = {"features": {name: layout.features_run(name) for name in params.features},
             "tasks": {name: layout.tasks_run(name) for name in params.features},
             **{m: {name: layout.task(t.features, name).run_record(m) for name, t in params.tasks.items()}
                for m in ("finetune", "scratch")}}
    out = {stage: {name: _numbers(json.loads(path.read_text())) for name, path in paths.items() if path.is_file()}
           for stage, paths in found.items()}
    for record in out["tasks"].values():  # the counts; which task was reused is in the record itself
        record.pop("tasks", None)
    return out


def report(params: P.Params, layout: Layout) -> pd.DataFrame:
    """Publish every task's results into results/ (evaluation.publish), collect its metrics.json into
    reports/summary.csv and reports/report.md, and the run records into reports/runs.json -> the table."""
    publish_results(params, layout)
    rows, skipped = [], []
    for name, task in params.tasks.items():
        models = layout.task(task.features, name)
        head_info = json.loads((models.head / HEAD_INFO_FILE).read_text())
        seconds = _seconds(models, head_info)
        if why := head_info["reference"].get("skipped"):
            skipped.append(f"- {name}: no reference row ({why})\n")
        for kind, m in json.loads(layout.metrics(name).read_text()).items():
            method = m.get("mode", kind) if kind == "finetune" else kind
            rows.append({"task": name, "method": method, "features": task.features,
                         "backbone": params.features[task.features].backbone,
                         "backbone_run": BACKBONE_RUN.get(kind),
                         "shots": task.shots if task.shots else "all", **m, "seconds": seconds.get(kind)})
    table = pd.DataFrame(rows).reindex(columns=COLUMNS).astype({"n_seeds": "Int64"})
    write_csv(layout.summary_csv, table)
    write_json(layout.runs_json, runs(params, layout))
    verdicts, numbers = transfer.section(params, layout)
    write_json(layout.transfer_json, numbers)
    write_text(layout.report_md, "# Results\n\nTest and validation accuracy per task and method "
               "(`seconds`: training time of that method; the `prototype` head has no training; "
               "`backbone_run`: whether it ran the backbone on the task's images, or only read the cached "
               "features; `zero_shot`: an OpenCLIP feature set's class names through its text tower, no training "
               "image; `scratch`: the same architecture trained from random init, the no-transfer baseline; "
               "`over seeds`: test accuracy mean ± std over the task's `shot_seeds` draws of its k shots).\n\n"
               + markdown(table) + "\n" + ("\n" + "".join(skipped) if skipped else "") + verdicts
               + efficiency_section(params, layout))
    return table


def markdown(table: pd.DataFrame) -> str:
    shown = table.drop(columns=["test_accuracy_mean", "test_accuracy_std", "n_seeds"], errors="ignore")
    if table["n_seeds"].notna().any():
        shown["over seeds"] = [f"{m:.3f} ± {s:.3f} ({int(n)})" if pd.notna(n) else ""
                               for m, s, n in zip(table["test_accuracy_mean"], table["test_accuracy_std"],
                                                  table["n_seeds"], strict=True)]
    return shown.astype(object).where(shown.notna(), None).to_markdown(index=False, floatfmt=".3f",
                                                                       missingval="")


def efficiency_section(params: P.Params, layout: Layout) -> str:
    """Per task with efficiency_shots: test accuracy (mean ± std over its draws) per method and shots."""
    parts = []
    for name, task in params.tasks.items():
        path = layout.plot(name, "efficiency")
        if not task.efficiency_shots or not path.is_file():
            continue
        curve = pd.read_csv(path)
        cell = curve.assign(value=[f"{a:.3f} ± {s:.3f}" for a, s in zip(curve["test_accuracy"], curve["std"],
                                                                          strict=True)])
        wide = cell.pivot(index="shots", columns="method", values="value").reset_index().fillna("")
        seeds = int(curve["n_seeds"].max())
        parts.append(f"### {name}\n\nTest accuracy against training images per class ({seeds} draw"
                     f"{'s' if seeds > 1 else ''} each; plot: "
                     f"`{layout.figure(name, 'efficiency').relative_to(layout.root)}`, "
                     f"`dvc plots show {path.relative_to(layout.root)}`).\n\n"
                     + wide.to_markdown(index=False) + "\n")
    return "\n## Data efficiency\n\n" + "\n".join(parts) if parts else ""
