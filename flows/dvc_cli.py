"""DVC through its command line, its stable interface: the stage graph, what is stale, diffs between revisions."""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from graphlib import TopologicalSorter
from pathlib import Path

from filelock import FileLock

from transferlab.config.errors import PipelineError

_NODE = re.compile(r'^"(?P<stage>[^"]+)";$')
_EDGE = re.compile(r'^"(?P<upstream>[^"]+)" -> "(?P<downstream>[^"]+)";$')


def executable() -> str:
    """The dvc beside this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("dvc")
    return str(beside) if beside.is_file() else shutil.which("dvc") or "dvc"


def run(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """`dvc --wait-for-lock ARGS` in repo, holding the workspace lock -> stdout. Failure raises PipelineError.
    env: variables to add for DVC and the stage commands it runs."""
    # Stage commands say `python`: make that this interpreter, as `make run` does by putting the venv on PATH.
    env = {**os.environ, **(env or {}),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with _workspace_lock(repo):
        proc = subprocess.run([executable(), "--wait-for-lock", *args], cwd=repo, env=env, capture_output=True,
                              text=True)
    if proc.returncode:
        message = (proc.stderr.strip() or proc.stdout.strip())[-4000:]
        raise PipelineError(f"`dvc {' '.join(args)}` failed in {repo} (exit {proc.returncode}):\n{message}")
    return proc.stdout


def _workspace_lock(repo: Path) -> FileLock:
    """One DVC command at a time in a workspace, from every flow run: each waits for the one before.

    `--wait-for-lock` alone is not enough: DVC releases its repository lock while a stage's command runs, and
    then `dvc status` or `dvc repro` of a stage touching the same outputs fails at once ("is busy").
    """
    if not (repo / ".dvc").is_dir():
        raise PipelineError(f"{repo} is not the root of a DVC repository (no .dvc folder): pass --repo with one")
    (repo / ".dvc" / "tmp").mkdir(exist_ok=True)
    return _lock(str((repo / ".dvc" / "tmp" / "flows.lock").resolve()))


@functools.cache
def _lock(path: str) -> FileLock:
    # One object per file: a thread that holds it may take it again (reproduce holds it around status + repro);
    # filelock keeps the count per thread, so other threads still wait.
    return FileLock(path)


def graph(repo: Path, targets: Iterable[str] = ()) -> dict[str, set[str]]:
    """Stage -> the stages it depends on, for every stage that reproducing targets (default: all) involves."""
    upstream: dict[str, set[str]] = {}
    for target in list(targets) or [None]:
        for line in run(repo, "dag", "--dot", *([target] if target else [])).splitlines():
            if edge := _EDGE.match(line.strip()):
                upstream.setdefault(edge["upstream"], set())
                upstream.setdefault(edge["downstream"], set()).add(edge["upstream"])
            elif node := _NODE.match(line.strip()):
                upstream.setdefault(node["stage"], set())
    return upstream


def stale(repo: Path, upstream: dict[str, set[str]]) -> list[str]:
    """The stages of the graph to reproduce, in graph order: those `dvc status` reports and all downstream of them.

    `dvc status` judges each stage against its dependencies as they are now, so a stage below a stale one
    reads as up to date until that one has run; anything downstream of a stale stage is left to `dvc repro`.
    """
    changed = set(json.loads(run(repo, "status", "--json") or "{}"))
    chosen: set[str] = set()
    order = list(TopologicalSorter(upstream).static_order())
    for stage in order:
        if stage in changed or upstream[stage] & chosen:
            chosen.add(stage)
    return [stage for stage in order if stage in chosen]


def is_stale(repo: Path, stage: str) -> bool:
    """Whether `dvc status --json STAGE` (DVC's machine-readable answer, not its English output) lists the stage:
    changed deps, params, outputs or command, judged against its dependencies as they are now."""
    return stage in json.loads(run(repo, "status", "--json", stage) or "{}")


def reproduce(repo: Path, stage: str, env: dict[str, str] | None = None) -> tuple[bool, str]:
    """`dvc repro --single-item STAGE` when `dvc status` finds it stale -> (whether it ran; DVC's output).
    Both under the workspace lock, so no other flow run changes the stage in between."""
    with _workspace_lock(repo):
        if not is_stale(repo, stage):
            return False, f"Stage '{stage}' is up to date (dvc status): nothing to run"
        return True, run(repo, "repro", "--single-item", stage, env=env)


def diff(repo: Path, kind: str, revs: Sequence[str]) -> list[dict]:
    """`dvc {params,metrics} diff REVS --json` as rows: file, key, old, new, diff (None where DVC gives none)."""
    result = json.loads(run(repo, kind, "diff", *revs, "--json") or "{}")
    return [{"file": file, "key": key, **{field: change.get(field) for field in ("old", "new", "diff")}}
            for file, keys in result.items() for key, change in keys.items()]
