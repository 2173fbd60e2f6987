"""Stage report: every task's results from models/tasks published into results/ (its DVC metrics and plots, in
git); every task and every method side by side -> reports/summary.csv and reports/report.md; what each features,
finetune and scratch run did -> reports/runs.json (a DVC metric, in git)."""
from __future__ import annotations

import argparse

from transferlab.config import params as P
from transferlab.config.errors import reported_as_one_line
from transferlab.config.paths import Layout
from transferlab.evaluation.report import report


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    with reported_as_one_line():
        layout = Layout()
        table = report(P.load(layout.params), layout)
        # one line, not the table: `make run` prints reports/report.md, and a thousand tasks are 3,000 rows
        print(f"report: {table['task'].nunique()} tasks, {len(table)} rows -> {layout.report_md}, "
              f"{layout.summary_csv}, results/")


if __name__ == "__main__":
    main()
