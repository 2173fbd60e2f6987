"""Where every artifact lives. dvc.yaml spells the same layout (tests/integration/test_dvc_yaml.py checks)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EMBEDDED_DIGITS_ROOT = "data/raw/digits"

# The files inside a task's folders (Layout.head, .finetune, .scratch). They live here, not in the stages that
# write them, so that a stage reading them (evaluate, report) need not import that stage's torch and
# scikit-learn to know a file name.
HEAD_FILE, HEAD_INFO_FILE, REFERENCE_FILE = "head.safetensors", "head.json", "reference.safetensors"
SWEEP_FILE = "sweep.csv"  # the head sweep; evaluate publishes a copy under results/<task>/
ZERO_SHOT_FILE, ZERO_SHOT_INFO_FILE = "class_embeddings.safetensors", "zero_shot.json"
FINETUNE_INFO_FILE, FINETUNE_WEIGHTS_FILE = "finetune.json", "finetuned.safetensors"
SCRATCH_INFO_FILE, SCRATCH_WEIGHTS_FILE = "scratch.json", "scratch.safetensors"
PREDICTIONS_FILE = "predictions.parquet"  # val/test predictions, in the finetune and the scratch folder


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

    def task(self, task: str) -> Path:
        return self.root / "models" / "tasks" / task

    def head(self, task: str) -> Path:
        return self.task(task) / "head"

    def zero_shot(self, task: str) -> Path:
        """The task's zero-shot head: its class names' text embeddings (train_head@ writes it)."""
        return self.task(task) / "zero_shot"

    def finetune(self, task: str) -> Path:
        return self.task(task) / "finetune"

    def scratch(self, task: str) -> Path:
        return self.task(task) / "scratch"

    def run_record(self, task: str, method: str) -> Path:
        """What finetune@ / scratch@ last did (seconds, resumed_from_epoch): a DVC metric beside the method's
        folder, so the folder holds only what the training determines (a forced re-run writes the same bytes)."""
        return self.task(task) / f"{method}.run.json"

    # Outside DVC's outputs (DVC deletes those before a stage re-runs) so an interrupted run can resume.
    def checkpoints(self, task: str, method: str) -> Path:
        return self.root / ".cache" / "checkpoints" / task / method

    # Beside the report: DVC plots of pretrain@, finetune@ and scratch@ (a stage's plots cannot sit inside its
    # cached output folder).
    def curves(self, kind: str, name: str) -> Path:
        """Per-epoch training curves of pretrain@<name>, finetune@<name> or scratch@<name> (kind)."""
        return self.root / "reports" / "curves" / kind / name

    def results(self, task: str) -> Path:
        return self.root / "results" / task

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
