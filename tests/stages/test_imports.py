"""Stages that never run a network start without loading one.

Each DVC stage is a fresh process, and importing torch + torchvision costs seconds, scikit-learn more: report,
validate and the finetune / scratch stages of a task with nothing to train must not pay for them, and the
stages that read cached features must not load torchvision (the backbones) to do so. Checked in a fresh
interpreter on this checkout (PYTHONPATH: the venv's editable install may point at another one), since
this test process has them all loaded already."""
from __future__ import annotations

import ast
import subprocess
import sys

import pytest
import yaml

from stages.paths import Layout
from tests.conftest import ENV, REPO, SMALL_PARAMS

HEAVY = ("torch", "torchvision", "sklearn")


def loaded_after(code: str, cwd=REPO, watch: tuple[str, ...] = HEAVY) -> tuple[list[str], str]:
    """Run `code` in a fresh interpreter -> (which of `watch` it left loaded, what it printed before that)."""
    probe = f"\nimport sys\nprint(sorted(m for m in {watch!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code + probe], cwd=cwd, env={**ENV, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    *printed, last = proc.stdout.splitlines()
    return ast.literal_eval(last), "\n".join(printed)


@pytest.mark.parametrize("module", ["report", "validate"])
def test_stage_without_a_network_imports_none(module):
    assert loaded_after(f"import stages.{module}")[0] == []


def test_validate_runs_without_pandas(tmp_path):
    """validate re-runs on every params.yaml edit: it needs pydantic and yaml, not pandas (0.4 s of import)."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(SMALL_PARAMS, sort_keys=False))
    loaded, printed = loaded_after("from stages import validate\nvalidate.main([])", cwd=tmp_path,
                                   watch=(*HEAVY, "pandas"))
    assert printed == "params.yaml is valid"
    assert (Layout(tmp_path).params_ok).is_file()
    assert loaded == []


@pytest.mark.parametrize("module", ["train_head", "evaluate"])
def test_stage_reading_cached_features_does_not_load_the_backbones(module):
    loaded, _ = loaded_after(f"import stages.{module}")
    assert "torchvision" not in loaded, loaded
    assert "torch" in loaded  # heads are torch modules: the check above is not vacuous


# Today's bytes: the record a skipped stage writes is an output DVC caches and evaluate reads.
NOTHING_TO_DO = {
    "finetune": (b'{\n  "task": "parity",\n  "mode": "none"\n}\n', "finetune@parity: mode none"),
    "scratch": (b'{\n  "task": "parity",\n  "method": "scratch",\n  "ran": false\n}\n',
                "scratch@parity: skipped (set tasks.parity.scratch: true to train the no-transfer baseline)"),
}


@pytest.mark.parametrize("stage", sorted(NOTHING_TO_DO))
def test_stage_with_nothing_to_do_records_it_without_torch_or_pandas(tmp_path, stage):
    # SMALL_PARAMS' task parity neither fine-tunes nor trains from scratch; device cpu as in params
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(SMALL_PARAMS, sort_keys=False))
    loaded, printed = loaded_after(f"from stages import {stage}\n{stage}.main(['parity'])", cwd=tmp_path,
                                   watch=(*HEAVY, "pandas"))
    record, line = NOTHING_TO_DO[stage]
    assert printed == line
    out_dir = getattr(Layout(tmp_path), stage)("parity")
    assert sorted(p.name for p in out_dir.iterdir()) == [f"{stage}.json"]
    assert (out_dir / f"{stage}.json").read_bytes() == record
    assert loaded == []
