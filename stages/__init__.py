"""The DVC stage entry points, one script per stage: `python -m stages.<name> [ENTRY]` (see dvc.yaml).

Each reads its key, loads params, calls the library (transferlab), writes outputs and prints one line. Nothing
imports a stage, and a stage imports no other stage (tests/test_architecture.py)."""
import os

# Before any library import: the stages themselves send nothing, but the libraries they load must not either.
for _name, _value in {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                      "DVC_NO_ANALYTICS": "1"}.items():
    os.environ.setdefault(_name, _value)
