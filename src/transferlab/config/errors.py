"""The one exception type for errors a user can cause (bad params, missing files, bad images)."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class PipelineError(Exception):
    """A problem with the user's input: the message names the thing and says what to do."""


@contextmanager
def reported_as_one_line() -> Iterator[None]:
    """Turn a PipelineError into one line on stderr and exit status 2; bugs keep their traceback."""
    try:
        yield
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
