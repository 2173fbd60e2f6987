"""The DVC stage graph as a Prefect flow: each stale stage a task with retries, in graph order; results published.

    python -m flows.pipeline [--targets STAGE ...] [--repo PATH] [--dask ADDRESS | local:N] [--pools [--sync]]

Runs against PREFECT_API_URL when set, else on a temporary local (ephemeral) Prefect server.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, wait
from prefect.states import Completed, State
from prefect.tasks import exponential_backoff

from flows import artifacts, dvc_cli
from transferlab.config.paths import Layout


# DVC, not Prefect, decides what is up to date: no Prefect caching. Retries cover a stage that fails for a passing
# reason (memory; a DVC process started outside these flows writing the same outputs); jitter spreads out retries.
@task(task_run_name="{stage}", retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=10),
      retry_jitter_factor=0.5, cache_policy=NO_CACHE)
def reproduce(stage: str, repo: Path) -> State | None:
    """`dvc repro --single-item STAGE`: DVC runs the stage's command unless the stage is up to date."""
    worker = _dask_worker()
    if worker is None:
        ran, output = dvc_cli.reproduce(repo, stage)
    else:  # under prefect-dask's DaskTaskRunner (--dask): feature sets with executor: dask shard onto this cluster
        from distributed import rejoin, secede

        secede()  # give this worker's thread to the shards while DVC runs the stage
        try:
            ran, output = dvc_cli.reproduce(repo, stage, env={"DASK_SCHEDULER_ADDRESS": worker.scheduler.address})
        finally:
            rejoin()
    get_run_logger().info("%s", output.strip())
    # A stage below a changed one is often unchanged itself: say so in the run's states.
    return None if ran else Completed(name="Up to date", message="DVC found the stage up to date: nothing ran")


def _dask_worker():
    """The Dask worker running this task (the flow runs on prefect-dask's DaskTaskRunner), else None."""
    try:
        from distributed import get_worker
    except ImportError:
        return None
    try:
        return get_worker()
    except ValueError:  # not in a Dask task
        return None


def dask_runner(spec: str):
    """prefect-dask's task runner: on the scheduler at `spec`, or `local:N`, a local cluster of N processes."""
    from prefect_dask import DaskTaskRunner

    if spec.startswith("local"):
        workers = int(spec.partition(":")[2] or 2)
        return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                              cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                              "dashboard_address": None})
    return DaskTaskRunner(address=spec)


@task(cache_policy=NO_CACHE)
def publish(repo: Path) -> list[dict]:
    """The report stage's summary as a table artifact and its report as a markdown artifact."""
    layout = Layout(repo)
    if not layout.summary_csv.is_file():
        get_run_logger().info("%s does not exist (the report stage has not run): nothing to publish",
                              layout.summary_csv)
        return []
    with layout.summary_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    create_table_artifact(rows, key="transferlab-metrics",
                          description=f"Every task and method: {layout.summary_csv}")
    if layout.report_md.is_file():
        create_markdown_artifact(layout.report_md.read_text(), key="transferlab-report",
                                 description=str(layout.report_md))
    return rows


@flow(name="transferlab-pipeline")
def pipeline(targets: list[str] | None = None, repo: str = ".") -> list[dict]:
    """Reproduce targets (default: every stage) as DVC would, a task per stale stage; returns the summary rows."""
    root = Path(repo).resolve()
    upstream = dvc_cli.graph(root, targets or ())
    to_run = dvc_cli.stale(root, upstream)
    logger = get_run_logger()
    logger.info("%d of %d stages to reproduce: %s", len(to_run), len(upstream), ", ".join(to_run) or "none")
    futures: dict[str, PrefectFuture] = {}
    for stage in to_run:  # graph order, so every upstream future already exists
        waits_for = [futures[u] for u in upstream[stage] if u in futures]
        futures[stage] = reproduce.submit(stage, root, wait_for=waits_for)
    wait(list(futures.values()))
    for future in futures.values():
        future.result()  # raises the first stage failure, failing the flow run
    return publish(root)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", metavar="STAGE", help="stages to reproduce, with everything they "
                        "depend on (as `dvc repro STAGE ...`); default: every stage")
    parser.add_argument("--repo", default=".", help="the DVC repository (default: the current directory)")
    parser.add_argument("--dask", metavar="ADDRESS", help="run the stage tasks on a Dask cluster (prefect-dask): "
                        "a scheduler's address, or local:N for N local worker processes; feature sets with "
                        "executor: dask shard their extraction onto the same cluster")
    parser.add_argument("--pools", action="store_true", help="send GPU stages to work pool gpu and the rest to "
                        "pool cpu (flows.pools; needs a Prefect server and workers)")
    parser.add_argument("--sync", action="store_true", help="with --pools: workers have a checkout each and "
                        "exchange results through the DVC remote (see flows/pools.py)")
    args = parser.parse_args(argv)
    if args.pools:
        from flows import pools

        raise SystemExit(pools.run_cli(args))
    flow_ = pipeline.with_options(task_runner=dask_runner(args.dask)) if args.dask else pipeline
    state = flow_(targets=args.targets, repo=args.repo, return_state=True)
    print(f"report: {Layout(Path(args.repo)).report_md}; {artifacts.where()}")
    raise SystemExit(0 if state.is_completed() else 1)


if __name__ == "__main__":
    main()
