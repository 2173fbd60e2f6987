"""Stage report: every task and every method side by side -> reports/summary.csv and reports/report.md."""
from __future__ import annotations

import json

import pandas as pd

from stages import cli
from stages import params as P
from stages.atomic import write_csv, write_text
from stages.errors import PipelineError
from stages.finetune import INFO_FILE as FT_INFO
from stages.paths import Layout
from stages.scratch import INFO_FILE as SCRATCH_INFO
from stages.train_head import INFO_FILE as HEAD_INFO

COLUMNS = ["task", "method", "features", "backbone", "backbone_run", "shots", "test_accuracy", "val_accuracy",
           "macro_f1", "n_train", "n_test", "seconds"]
# Whether a method runs the backbone on the task's images (costly) or only reads the cached features.
BACKBONE_RUN = {"head": "no", "reference": "no", "finetune": "yes", "scratch": "yes"}


def _seconds(layout: Layout, name: str) -> dict:
    """Training seconds per metrics kind of one task."""
    head_info = json.loads((layout.head(name) / HEAD_INFO).read_text())
    scratch = layout.scratch(name) / SCRATCH_INFO
    return {"head": head_info["seconds"], "reference": head_info["reference"]["seconds"],
            "finetune": json.loads((layout.finetune(name) / FT_INFO).read_text()).get("seconds"),
            "scratch": json.loads(scratch.read_text()).get("seconds") if scratch.is_file() else None}


def run(params: P.Params, layout: Layout) -> pd.DataFrame:
    rows = []
    for name, task in params.tasks.items():
        path = layout.results(name) / "metrics.json"
        if not path.is_file():
            raise PipelineError(f"{path} not found; run `dvc repro evaluate@{name}` first")
        seconds = _seconds(layout, name)
        for kind, m in json.loads(path.read_text()).items():
            method = m.get("mode", kind) if kind == "finetune" else kind
            rows.append({"task": name, "method": method, "features": task.features,
                         "backbone": params.features[task.features].backbone,
                         "backbone_run": BACKBONE_RUN.get(kind),
                         "shots": task.shots if task.shots else "all", **m, "seconds": seconds[kind]})
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    write_csv(layout.summary_csv, table)
    write_text(layout.report_md, "# Results\n\nTest and validation accuracy per task and method "
               "(`seconds`: training time of that method; `backbone_run`: whether it ran the backbone on the "
               "task's images, or only read the cached features; `scratch`: the same architecture trained "
               "from random init, the no-transfer baseline).\n\n" + markdown(table) + "\n")
    return table


def markdown(table: pd.DataFrame) -> str:
    return table.to_markdown(index=False, floatfmt=".3f")


def main(argv: list[str] | None = None) -> None:
    cli.stage_main(__doc__, lambda params: markdown(run(params, Layout())), argv, entry=None)


if __name__ == "__main__":
    main()
