"""Stage validate: check params.yaml against the schema before any other stage runs.

Every stage depends on its marker, so a bad key, type or reference fails first, as one line naming the key,
rather than as a missing-path error from DVC. The marker's content never changes, so a valid edit re-runs only
the stages whose own params changed. For tasks@<feature set>, whose params are its tasks' entries, it writes
them per feature set (data/tasks/<feature set>.json)."""
from __future__ import annotations

import argparse

from transferlab.config import params as P
from transferlab.config.errors import reported_as_one_line
from transferlab.config.paths import Layout
from transferlab.io.atomic import write_json, write_text


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    with reported_as_one_line():
        layout = Layout()
        params = P.load(layout.params)
        for name in params.features:
            write_json(layout.task_entries(name), {t: task.model_dump(mode="json")
                                                   for t, task in params.tasks.items() if task.features == name})
        write_text(layout.params_ok, "params.yaml is valid\n")
        print("params.yaml is valid")


if __name__ == "__main__":
    main()
