"""Every task's results, from its TaskDir under Layout.task (a cached output of tasks@<set>, which DVC's run-cache
carries between machines), to results/<kind>/ (outputs of the report stage, in git): the DVC metrics and plots
that `dvc metrics diff`, `dvc plots diff` and `dvc exp show` read at any commit without DVC's cache."""
from __future__ import annotations

import shutil
from contextlib import ExitStack

from transferlab.config import params as P
from transferlab.config.errors import PipelineError
from transferlab.config.paths import FIGURE_KINDS, METRICS_FILE, PLOT_KINDS, Layout
from transferlab.io.atomic import atomic_dir

RESULT_KINDS = ("metrics", *PLOT_KINDS, "figures")  # the folders of results/


def publish_results(params: P.Params, layout: Layout) -> None:
    """Replace results/<kind>/ by each task's metrics.json, plot CSVs and figures: every folder is filled beside
    its place and then swapped in (io.atomic.atomic_dir), so a task params.yaml no longer has leaves nothing
    behind, and a task without results fails before any folder changed. Each folder exists afterwards, as DVC
    expects its outputs to."""
    pairs = []  # (source file, its kind: the folder of results/ it goes to, its path there)
    for name, task in params.tasks.items():
        src = layout.task(task.features, name).results
        if not (src / METRICS_FILE).is_file():
            raise PipelineError(f"{src / METRICS_FILE} not found; run `dvc repro tasks@{task.features}` first")
        pairs += [(src / METRICS_FILE, "metrics", layout.metrics(name)),
                  *((src / f"{kind}.csv", kind, layout.plot(name, kind)) for kind in PLOT_KINDS),
                  *((src / f"{kind}.png", "figures", layout.figure(name, kind)) for kind in FIGURE_KINDS)]
    with ExitStack() as stack:
        staged = {kind: stack.enter_context(atomic_dir(layout.results(kind))) for kind in RESULT_KINDS}
        for source, kind, dest in pairs:
            if source.is_file():
                target = staged[kind] / dest.relative_to(layout.results(kind))
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
