"""The stage graph over Prefect work pools: stages that run the backbone on pool `gpu`, the rest on pool `cpu`.

    python -m flows.pools [--targets STAGE ...] [--repo PATH] [--sync]
    python -m flows.pipeline --pools ...                     # the same

The driver flow walks the DVC graph in rounds. Each round sends the stages whose upstream stages are done to
the `transferlab-stages/gpu` and `transferlab-stages/cpu` deployments (prefect.yaml) at once, one flow run per
pool, and waits for both; pretrain, features, and tasks@<feature set> where one of its tasks fine-tunes
(finetune not `none`) or trains the scratch baseline (scratch: true) are GPU stages. Workers of the two pools
run the `stages` flow below.

- One shared checkout (a shared filesystem): without --sync, workers run `dvc repro --single-item` in it.
- A checkout per machine (--sync): each worker runs in its own checkout (TRANSFERLAB_REPO, at the same commit)
  and the DVC remote carries the results: `dvc repro --pull STAGE` (upstream stages another pool ran come back
  from the remote's run-cache instead of running), then `dvc push --run-cache`.
"""
from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from graphlib import TopologicalSorter
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.deployments import run_deployment

from flows import dvc_cli
from transferlab.config import params as P
from transferlab.config.errors import PipelineError

POOLS = ("gpu", "cpu")
GPU_KINDS = {"pretrain", "features", "tasks"}
DEPLOYMENT = "transferlab-stages/{pool}"
REPO_ENV = "TRANSFERLAB_REPO"
_RUNNING = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)


def pool_of(stage: str, params: P.Params) -> str:
    """gpu for stages that run the backbone, else cpu."""
    kind, _, name = stage.partition("@")
    if kind == "tasks" and not any(t.trains_images for t in params.tasks.values() if t.features == name):
        return "cpu"  # heads on cached features only: the backbone never runs
    return "gpu" if kind in GPU_KINDS else "cpu"


def rounds(order: list[str], upstream: dict[str, set[str]], pool: Callable[[str], str]) -> list[dict]:
    """Stages (in graph order) in rounds: per pool, every stage whose upstream stages are done or earlier in
    the same pool's group; a stage below another pool's stage of this round waits for the next round."""
    pending, done, out = list(order), set(), []
    while pending:
        batch = {}
        for name in POOLS:
            group = []
            for stage in pending:
                if pool(stage) == name and all(u in done or u in group or u not in pending
                                               for u in upstream[stage]):
                    group.append(stage)
            if group:
                batch[name] = group
        out.append(batch)
        done |= {s for group in batch.values() for s in group}
        pending = [s for s in pending if s not in done]
    return out


@flow(name="transferlab-stages")
def run_stages(stages: list[str], repo: str | None = None, sync: bool = False) -> list[str]:
    """Reproduce stages in order in this worker's checkout (repo, else $TRANSFERLAB_REPO, else the working
    directory); with sync, through the DVC remote. Returns the stages whose command ran here."""
    root = Path(repo or os.environ.get(REPO_ENV) or ".").resolve()
    logger, ran = get_run_logger(), []
    for stage in stages:
        # --pull: the remote's run-cache and the outputs of every upstream stage found in it, which then does
        # not run here; without sync the workspace is shared and holds the upstream outputs already
        if sync:  # which stages ran, rather than came back from the run-cache, only DVC's output tells
            output = dvc_cli.run(root, "repro", "--pull", stage)
            ran += [s for s in _RUNNING.findall(output) if s not in ran]
        else:
            did_run, output = dvc_cli.reproduce(root, stage)
            ran += [stage] if did_run else []
        logger.info("%s", output.strip())
    if sync:
        logger.info("%s", dvc_cli.run(root, "push", "--run-cache").strip())
    logger.info("ran in %s: %s", root, ", ".join(ran) or "nothing (up to date or restored from the run-cache)")
    return ran


@task(task_run_name="{pool}: {stages}", cache_policy=NO_CACHE)
def dispatch(pool: str, stages: list[str], repo: str | None, sync: bool) -> list[str]:
    """One flow run of the pool's deployment; waits for it and fails with it."""
    run = run_deployment(DEPLOYMENT.format(pool=pool), parameters={"stages": stages, "repo": repo, "sync": sync},
                         timeout=None, poll_interval=2)
    if not run.state or not run.state.is_completed():
        raise PipelineError(f"pool {pool}: flow run {run.name} for {', '.join(stages)} ended "
                            f"{run.state.name if run.state else 'without a state'}; see its logs in Prefect")
    return stages


@flow(name="transferlab-pools")
def route(targets: list[str] | None = None, repo: str = ".", sync: bool = False) -> list[dict]:
    """Reproduce targets (default: every stage) over the gpu and cpu pools, in rounds; returns the rounds."""
    root = Path(repo).resolve()
    params = P.load(root / "params.yaml")
    upstream = dvc_cli.graph(root, targets or ())
    # With a checkout per machine this one cannot tell what is stale there: every stage goes, and each worker's
    # DVC skips what is up to date or in the run-cache.
    order = list(TopologicalSorter(upstream).static_order()) if sync else dvc_cli.stale(root, upstream)
    plan = rounds(order, upstream, lambda stage: pool_of(stage, params))
    logger = get_run_logger()
    for i, batch in enumerate(plan, 1):
        shown = "; ".join(f"{pool}: {', '.join(group)}" for pool, group in batch.items())
        logger.info("round %d of %d: %s", i, len(plan), shown)
        where = None if sync else str(root)
        futures = [dispatch.submit(pool, group, where, sync) for pool, group in batch.items()]
        for future in futures:
            future.result()
    return plan


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.pools", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    raise SystemExit(run_cli(args))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--targets", nargs="+", metavar="STAGE", help="stages to reproduce, with everything they "
                        "depend on; default: every stage")
    parser.add_argument("--repo", default=".", help="the DVC repository (default: the current directory)")
    parser.add_argument("--sync", action="store_true", help="workers have a checkout each (TRANSFERLAB_REPO) and "
                        "exchange results through the DVC remote and its run-cache")


def run_cli(args: argparse.Namespace) -> int:
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise SystemExit("error: PREFECT_API_URL is not set: work pools need a Prefect server "
                         "(`prefect server start`) with workers on pools gpu and cpu; see the README, Scale out")
    state = route(targets=args.targets, repo=args.repo, sync=args.sync, return_state=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    main()
