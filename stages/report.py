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
from stages.train_head import INFO_FILE as HEAD_INFO

COLUMNS = ["task", "method", "features", "backbone", "shots", "test_accuracy", "val_accuracy",
           "macro_f1", "n_train", "n_test", "seconds"]


def run(params: P.Params, layout: Layout) -> pd.DataFrame:
    rows = []
    for name, task in params.tasks.items():
        path = layout.results(name) / "metrics.json"
        if not path.is_file():
            raise PipelineError(f"{path} not found; run `dvc repro evaluate@{name}` first")
        head_info = json.loads((layout.head(name) / HEAD_INFO).read_text())
        seconds = {"head": head_info["seconds"], "reference": head_info["reference"]["seconds"],
                   "finetune": json.loads((layout.finetune(name) / FT_INFO).read_text()).get("seconds")}
        for kind, m in json.loads(path.read_text()).items():
            method = m.get("mode", kind) if kind == "finetune" else kind
            rows.append({"task": name, "method": method, "features": task.features,
                         "backbone": params.features[task.features].backbone,
                         "shots": task.shots if task.shots else "all", **m, "seconds": seconds[kind]})
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    write_csv(layout.summary_csv, table)
    write_text(layout.report_md, "# Results\n\nTest and validation accuracy per task and method "
               "(`seconds`: training time of that method).\n\n" + markdown(table) + "\n")
    return table


def markdown(table: pd.DataFrame) -> str:
    return table.to_markdown(index=False, floatfmt=".3f")


def main(argv: list[str] | None = None) -> None:
    cli.stage_main(__doc__, lambda params: markdown(run(params, Layout())), argv, entry=None)


if __name__ == "__main__":
    main()
