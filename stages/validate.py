"""Stage validate: check params.yaml against the schema before any other stage runs.

Every stage depends on its marker, so a bad key, type or reference fails first, as one line naming the key,
rather than as a missing-path error from DVC. The marker's content never changes, so a valid edit
re-runs only the stages whose own params changed."""
from __future__ import annotations

from pathlib import Path

from stages import cli
from stages.atomic import write_text
from stages.paths import Layout


def run(marker: Path) -> None:
    write_text(marker, "params.yaml is valid\n")


def main(argv: list[str] | None = None) -> None:
    cli.stage_main(__doc__, lambda params: run(Layout().params_ok) or "params.yaml is valid", argv, entry=None)


if __name__ == "__main__":
    main()
