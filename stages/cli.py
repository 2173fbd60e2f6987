"""What every stage's main() shares: telemetry off, params loaded once, user errors as one line."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
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
