"""flows.dvc_cli decides whether a stage ran from DVC's machine-readable status (`dvc status --json`), not by
matching the words DVC prints, on a real DVC repository with one stage that counts its runs."""
from __future__ import annotations

from pathlib import Path

from flows import dvc_cli
from tests.conftest import sh

STAGE = """stages:
  count:
    cmd: python count.py
    deps: [in.txt, count.py]
    outs: [out.txt]
"""
COUNT = """from pathlib import Path
log = Path("runs.log")
log.write_text((log.read_text() if log.exists() else "") + "x")
Path("out.txt").write_text(Path("in.txt").read_text())
"""


def _repo(root: Path) -> Path:
    root.mkdir()
    (root / "in.txt").write_text("1\n")
    (root / "dvc.yaml").write_text(STAGE)
    (root / "count.py").write_text(COUNT)
    (root / ".gitignore").write_text("runs.log\n")
    sh("git", "init", "-q", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    return root


def test_reproduce_runs_a_stale_stage_once_and_reports_an_up_to_date_one(tmp_path):
    repo = _repo(tmp_path / "repo")
    assert dvc_cli.is_stale(repo, "count")
    ran, _ = dvc_cli.reproduce(repo, "count")
    assert ran and (repo / "runs.log").read_text() == "x"
    assert not dvc_cli.is_stale(repo, "count")
    ran, output = dvc_cli.reproduce(repo, "count")
    assert not ran and "up to date" in output and (repo / "runs.log").read_text() == "x"  # nothing ran
    (repo / "in.txt").write_text("2\n")
    assert dvc_cli.is_stale(repo, "count")
    ran, _ = dvc_cli.reproduce(repo, "count")
    assert ran and (repo / "runs.log").read_text() == "xx" and (repo / "out.txt").read_text() == "2\n"
