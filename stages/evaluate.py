"""Stage evaluate@<task>: metrics.json per method (head, reference, prototype, finetune, scratch), the
confusion matrix and the data-efficiency curve as CSV (DVC plots) and PNG (transferlab.evaluation.results)."""
from __future__ import annotations

import argparse

from transferlab.config import params as P
from transferlab.config.errors import reported_as_one_line
from transferlab.config.paths import Layout
from transferlab.evaluation.results import evaluate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("task", help="a tasks entry of params.yaml")
    task = parser.parse_args(argv).task
    with reported_as_one_line():
        layout = Layout()
        params = P.load(layout.params)
        metrics = evaluate(task, params.entry("tasks", task), params.evaluate, params.seed, layout, params.head)
        print(f"evaluate@{task}: " + ", ".join(f"{k} test accuracy {m['test_accuracy']:.3f}"
                                               for k, m in metrics.items()))


if __name__ == "__main__":
    main()
