"""Stage report: every task's results from models/tasks published into results/ (its DVC metrics and plots, in
git); every task and every method side by side -> reports/summary.csv and reports/report.md; what each features,
finetune and scratch run did -> reports/runs.json (a DVC metric, in git)."""
from __future__ import annotations

import argparse

from transferlab.config import params as P
from transferlab.config.errors import reported_as_one_line
from transferlab.config.paths import Layout
from transferlab.evaluation.report import markdown, report


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    with reported_as_one_line():
        layout = Layout()
        print(markdown(report(P.load(layout.params), layout)))


if __name__ == "__main__":
    main()
