"""Where every artifact lives. dvc.yaml spells the same layout (tests/integration/test_dvc_yaml.py checks)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EMBEDDED_DIGITS_ROOT = "data/raw/digits"

# The files inside a task's folders (TaskDir.head, .finetune, .scratch). They live here, not in the stages that
# write them, so that a stage reading them (evaluate, report) need not import that stage's torch and
# scikit-learn to know a file name.
HEAD_FILE, HEAD_INFO_FILE, REFERENCE_FILE = "head.safetensors", "head.json", "reference.safetensors"
SWEEP_FILE = "sweep.csv"  # the head sweep; evaluate copies it into the task's results (a DVC plot)
ZERO_SHOT_FILE, ZERO_SHOT_INFO_FILE = "class_embeddings.safetensors", "zero_shot.json"
FINETUNE_INFO_FILE, FINETUNE_WEIGHTS_FILE = "finetune.json", "finetuned.safetensors"
SCRATCH_INFO_FILE, SCRATCH_WEIGHTS_FILE = "scratch.json", "scratch.safetensors"
PREDICTIONS_FILE = "predictions.parquet"  # val/test predictions, in the finetune and the scratch folder
# A feature set's own files (transferlab.features.sets): here too, so that the task cache can fingerprint a set
# without importing its pandas reader
FEATURES_META, FEATURES_INDEX = "meta.json", "index.parquet"


@dataclass(frozen=True)
class Layout:
    """The project's artifact paths, relative to one repository root."""

    root: Path = Path(".")

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def params_ok(self) -> Path:
        return self.root / "data" / "params.ok"

    def task_entries(self, featureset: str) -> Path:
        """The feature set's tasks as params.yaml has them (validate writes it): what tasks@<featureset> depends
        on in place of the whole tasks section, so that editing one task re-runs its own feature set's stage."""
        return self.root / "data" / "tasks" / f"{featureset}.json"

    def prepared(self, dataset: str) -> Path:
        return self.root / "data" / "prepared" / dataset

    def manifest(self, dataset: str) -> Path:
        return self.prepared(dataset) / "manifest.parquet"

    def backbone(self, name: str) -> Path:
        return self.root / "models" / "backbones" / name

    def features(self, featureset: str) -> Path:
        return self.root / "data" / "features" / featureset

    def features_run(self, featureset: str) -> Path:
        """What the features stage's last run did (transferlab.features.sets.run_path): a DVC metric."""
        return self.root / "data" / "features" / f"{featureset}.run.json"

    # tasks@<feature set>: every task on the set, each published from its content-addressed cache entry
    # (TaskDir below, under .cache/tasks) into the paths that follow, one folder per feature set and all of it
    # cached, so that DVC's run-cache carries the stage to another machine (`dvc push --run-cache` pushes no
    # file of an output of cache: false).
    def task(self, featureset: str, task: str) -> TaskDir:
        """A task's trained models (head, zero_shot, finetune, scratch) and their run records."""
        return TaskDir(self.tasks(featureset) / task)

    def tasks(self, featureset: str) -> Path:
        return self.root / "models" / "tasks" / featureset

    def tasks_run(self, featureset: str) -> Path:
        """What tasks@<featureset> last did (each task computed or reused, seconds): beside its folder."""
        return self.root / "models" / "tasks" / f"{featureset}.run.json"

    def task_cache(self) -> Path:
        """Every task's outputs by fingerprint (transferlab.tasks.cache): outside DVC's outputs, which DVC
        deletes before a stage re-runs, so a task that did not change is copied back, not recomputed."""
        return self.root / ".cache" / "tasks"

    def results(self, kind: str) -> Path:
        """results/<kind>: metrics (a DVC metrics folder), confusion, efficiency, sweep (DVC plots folders) or
        figures (the PNGs). Outputs of the report stage, in git: it copies them from each task's
        TaskDir.results under Layout.task, cached outputs of tasks@<set> that DVC's run-cache carries."""
        return self.root / "results" / kind

    def metrics(self, task: str) -> Path:
        """The task's metrics.json: one object per method that ran (DVC metrics)."""
        return self.results("metrics") / f"{task}.json"

    def plot(self, task: str, kind: str) -> Path:
        """The task's confusion, efficiency or sweep CSV (DVC plots)."""
        return self.results(kind) / f"{task}.csv"

    def figure(self, task: str, kind: str) -> Path:
        """The task's confusion or efficiency PNG."""
        return self.results("figures") / task / f"{kind}.png"

    def tasks_curves(self, featureset: str) -> Path:
        """Per-epoch curves of the feature set's finetune and scratch runs (DVC plots of tasks@<featureset>)."""
        return self.root / "reports" / "curves" / "tasks" / featureset

    def task_curves(self, featureset: str, task: str) -> Path:
        """<task>/finetune and <task>/scratch: each a DVCLive folder."""
        return self.tasks_curves(featureset) / task

    # Outside DVC's outputs (DVC deletes those before a stage re-runs) so an interrupted run can resume.
    def checkpoints(self, name: str, method: str) -> Path:
        return self.root / ".cache" / "checkpoints" / name / method

    def curves(self, kind: str, name: str) -> Path:
        """Per-epoch training curves of pretrain@<name> (kind pretrain): beside the report, since a stage's
        plots cannot sit inside its cached output folder."""
        return self.root / "reports" / "curves" / kind / name

    # The report lives beside results/, not in it: a DVC stage cannot depend on a folder holding its outputs.
    @property
    def summary_csv(self) -> Path:
        return self.root / "reports" / "summary.csv"

    @property
    def report_md(self) -> Path:
        return self.root / "reports" / "report.md"

    @property
    def runs_json(self) -> Path:
        """Every run record's numbers in one git-tracked file: the DVC metric that diffs across commits (the
        records themselves are cached outputs, so that DVC's run-cache carries them with their stage)."""
        return self.root / "reports" / "runs.json"

    @property
    def transfer_json(self) -> Path:
        """The "did transfer help?" comparisons' numbers (evaluation.transfer): a DVC metric in git."""
        return self.root / "reports" / "transfer.json"


# The files of a task's results (TaskDir.results), published by the report to Layout.metrics, .plot and .figure.
METRICS_FILE = "metrics.json"
PLOT_KINDS, FIGURE_KINDS = ("confusion", "efficiency", "sweep"), ("confusion", "efficiency")


@dataclass(frozen=True)
class TaskDir:
    """One task's outputs in one folder. tasks@<feature set> computes a task into one of these under
    Layout.task_cache, then publishes it: everything but curves/ to Layout.task (itself a TaskDir without
    curves/), curves/ to Layout.task_curves; the report stage copies results/ on to Layout.metrics, .plot and
    .figure."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def head(self) -> Path:
        return self.path / "head"

    @property
    def zero_shot(self) -> Path:
        """The task's zero-shot head: its class names' text embeddings."""
        return self.path / "zero_shot"

    @property
    def finetune(self) -> Path:
        return self.path / "finetune"

    @property
    def scratch(self) -> Path:
        return self.path / "scratch"

    def run_record(self, method: str) -> Path:
        """What the finetune or scratch run did (seconds, resumed_from_epoch), beside the method's folder, so
        the folder holds only what the training determines."""
        return self.path / f"{method}.run.json"

    def curves(self, method: str) -> Path:
        return self.path / "curves" / method

    @property
    def results(self) -> Path:
        """metrics.json, <kind>.csv for each PLOT_KINDS, <kind>.png for each FIGURE_KINDS."""
        return self.path / "results"
