"""What every stage's main() shares: telemetry off, params loaded once, user errors as one line."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from stages.errors import PipelineError

TELEMETRY_OFF = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1"}
for _k, _v in TELEMETRY_OFF.items():
    os.environ.setdefault(_k, _v)


@contextmanager
def reporting_errors() -> Iterator[None]:
    """Turn a PipelineError into one line on stderr and exit status 2; let bugs keep their traceback."""
    try:
        yield
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def stage_main(doc: str | None, body: Callable, argv: list[str] | None = None, entry: str | None = "name") -> None:
    """A stage's CLI: parse the entry name (if the stage is a foreach group), load params, call
    `body(params, name)` (or `body(params)`), print the line it returns."""
    from stages import params as P

    parser = argparse.ArgumentParser(description=doc)
    if entry:
        parser.add_argument(entry)
    args = parser.parse_args(argv)
    with reporting_errors():
        params = P.load()
        print(body(params, getattr(args, entry)) if entry else body(params))
