"""Serve the pipeline flow as a scheduled deployment: this process polls the Prefect server and runs each run.

    python -m flows.deploy --cron "0 2 * * *" | --interval SECONDS [--targets STAGE ...] [--repo PATH]
                           [--name NAME] [--limit N]

Needs a real Prefect server (`prefect server start`, then PREFECT_API_URL): schedules do not fire on the
temporary one. For workers on a work pool instead, `prefect deploy` reads prefect.yaml.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from prefect.settings import PREFECT_API_URL

from flows.pipeline import pipeline


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.deploy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help='a cron schedule, e.g. "0 2 * * *" (02:00 every day)')
    when.add_argument("--interval", type=float, metavar="SECONDS", help="run every SECONDS seconds")
    parser.add_argument("--targets", nargs="+", metavar="STAGE", help="stages to reproduce; default: every stage")
    parser.add_argument("--repo", default=".", help="the DVC repository (default: the current directory)")
    parser.add_argument("--name", default="scheduled", help="the deployment's name (default: scheduled)")
    # Runs of one workspace take turns at every DVC command anyway (flows.dvc_cli.run).
    parser.add_argument("--limit", type=int, default=1, help="most runs at once from this process (default: 1)")
    args = parser.parse_args(argv)
    if not PREFECT_API_URL.value():
        parser.error("PREFECT_API_URL is not set: start a server (`prefect server start`) and point "
                     "PREFECT_API_URL at it (e.g. http://127.0.0.1:4200/api); schedules do not fire without one")
    pipeline.serve(name=args.name, cron=args.cron, interval=args.interval, limit=args.limit,
                   parameters={"targets": args.targets, "repo": str(Path(args.repo).resolve())})


if __name__ == "__main__":
    main()
