"""Prefect flows over the DVC stage graph. Thin: DVC decides what is stale, the stages know nothing of Prefect."""
import os

# Before anything imports prefect or dvc: both read these once, at import or start-up. The temporary server
# (no PREFECT_API_URL) can take more than Prefect's default 20 s to start on two busy cores.
for _name, _value in {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1",
                      "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}.items():
    os.environ.setdefault(_name, _value)
