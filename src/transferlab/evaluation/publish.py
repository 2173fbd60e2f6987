"""Every task's results, from its TaskDir under Layout.task (a cached output of tasks@<set>, which DVC's run-cache
carries between machines), to results/<kind>/ (outputs of the report stage, in git): the DVC metrics and plots
that `dvc metrics diff`, `dvc plots diff` and `dvc exp show` read at any commit without DVC's cache."""
from __future__ import annotations

import shutil

from transferlab.config import params as P
from transferlab.config.errors import PipelineError
from transferlab.config.paths import FIGURE_KINDS, METRICS_FILE, PLOT_KINDS, Layout
from transferlab.io.atomic import atomic_path

RESULT_KINDS = ("metrics", *PLOT_KINDS, "figures")  # the folders of results/


def publish_results(params: P.Params, layout: Layout) -> None:
    """Empty results/<kind>/ (a task params.yaml no longer has leaves nothing behind), then copy each task's
    metrics.json, plot CSVs and figures into it; each folder is left existing, as DVC expects its outputs."""
    for kind in RESULT_KINDS:
        shutil.rmtree(layout.results(kind), ignore_errors=True)
        layout.results(kind).mkdir(parents=True)
    for name, task in params.tasks.items():
        src = layout.task(task.features, name).results
        if not (src / METRICS_FILE).is_file():
            raise PipelineError(f"{src / METRICS_FILE} not found; run `dvc repro tasks@{task.features}` first")
        pairs = [(src / METRICS_FILE, layout.metrics(name)),
                 *((src / f"{kind}.csv", layout.plot(name, kind)) for kind in PLOT_KINDS),
                 *((src / f"{kind}.png", layout.figure(name, kind)) for kind in FIGURE_KINDS)]
        for source, dest in pairs:
            if source.is_file():
                with atomic_path(dest) as tmp:
                    shutil.copyfile(source, tmp)
