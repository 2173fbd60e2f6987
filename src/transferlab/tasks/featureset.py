"""tasks@<feature set>: every task on one feature set, in one process. A task whose fingerprint has an entry in
the task cache is published from it; the others are computed into the cache, then published. So adding or
changing a task computes only that task, while DVC still versions every task's outputs (one stage per
feature set rather than four per task: DVC's own cost grows with the number of stages in dvc.lock)."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from transferlab.config import params as P
from transferlab.config.paths import Layout
from transferlab.io.atomic import write_json
from transferlab.tasks import publish
from transferlab.tasks.cache import TaskCache, task_fingerprint


@dataclass
class Record:
    """What the run did per task (the stage's run record, Layout.tasks_run)."""

    computed: dict[str, float] = field(default_factory=dict)  # task -> seconds
    reused: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"computed": len(self.computed), "reused": len(self.reused),
                "seconds": round(sum(self.computed.values()), 3),
                "tasks": {**{t: {"computed": True, "seconds": round(s, 3)} for t, s in self.computed.items()},
                          **{t: {"computed": False} for t in self.reused}}}


def tasks_of(params: P.Params, featureset: str) -> dict[str, P.Task]:
    return {name: task for name, task in params.tasks.items() if task.features == featureset}


def run_featureset(featureset: str, params: P.Params, layout: Layout,
                   log: Callable[[str], None] = print) -> Record:
    """Publish every task of the feature set (computing those the cache lacks) -> the record, also written to
    layout.tasks_run(featureset)."""
    params.entry("features", featureset)  # an unknown name fails as one line naming the known ones
    cache, record = TaskCache(layout.task_cache()), Record()
    publish.clear_outputs(layout, featureset)
    for name, task in tasks_of(params, featureset).items():
        key = task_fingerprint(name, task, params, layout)
        if (entry := cache.entry(key)) is None:
            # here, not at the top: the compute stack (torch, scikit-learn, matplotlib) costs a second or two of
            # imports that a run publishing only cached tasks does not pay
            from transferlab.tasks.run import run_task

            start = time.perf_counter()
            staged = cache.staging(key)
            summary = run_task(name, task, params, layout, staged)
            entry = cache.commit(key, staged)
            record.computed[name] = time.perf_counter() - start
            log(f"  {summary.line()} ({record.computed[name]:.1f}s)")
        else:
            record.reused.append(name)
        publish.publish(entry, layout, featureset, name)
    write_json(layout.tasks_run(featureset), record.as_json())
    return record
