"""Where a flow's artifacts went, in one line: a real Prefect server keeps them, the temporary one does not."""
from __future__ import annotations

from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL


def where() -> str:
    api = PREFECT_API_URL.value()
    if api:
        ui = PREFECT_UI_URL.value() or api.removesuffix("/api")
        return f"artifacts: on the Prefect server at {api} (UI: {ui}/artifacts)"
    return ("artifacts: on a temporary Prefect server, gone when this command exits; to keep them, start one "
            "(`prefect server start`) and set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)")
