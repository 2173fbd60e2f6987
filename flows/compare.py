"""Compare two revisions: `dvc params diff` and `dvc metrics diff`, published as Prefect table artifacts.

    python -m flows.compare REV_A [REV_B] [--repo PATH]     # REV_B: the workspace when left out
"""
from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from tabulate import tabulate

from flows import artifacts, dvc_cli


@flow(name="transferlab-compare")
def compare(rev_a: str, rev_b: str | None = None, repo: str = ".") -> dict[str, list[dict]]:
    """Params and metrics that differ between rev_a and rev_b (default: the workspace), one table each."""
    root = Path(repo).resolve()
    revs = [rev_a, rev_b] if rev_b else [rev_a]
    shown = f"{rev_a} -> {rev_b or 'workspace'}"
    diffs = {kind: dvc_cli.diff(root, kind, revs) for kind in ("params", "metrics")}
    for kind, rows in diffs.items():
        create_table_artifact(rows, key=f"transferlab-{kind}-diff", description=f"`dvc {kind} diff`: {shown}")
        get_run_logger().info("%d %s differ: %s", len(rows), kind, shown)
    return diffs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev_a", metavar="REV_A", help="the old revision (a commit, branch or tag)")
    parser.add_argument("rev_b", metavar="REV_B", nargs="?", help="the new revision (default: the workspace)")
    parser.add_argument("--repo", default=".", help="the DVC repository (default: the current directory)")
    args = parser.parse_args(argv)
    state = compare(args.rev_a, args.rev_b, repo=args.repo, return_state=True)
    if state.is_completed():
        for kind, rows in state.result().items():  # the tables here too: the temporary server keeps nothing
            print(f"## dvc {kind} diff {args.rev_a} {args.rev_b or '(workspace)'}\n")
            print(tabulate(rows, headers="keys", tablefmt="github") if rows else f"no {kind} differ", end="\n\n")
    print(artifacts.where())
    raise SystemExit(0 if state.is_completed() else 1)


if __name__ == "__main__":
    main()
