"""The architecture, checked: the import contract (pyproject.toml's [tool.importlinter], run by import-linter),
each stage's code deps in dvc.yaml equal to what it imports, and files of a readable size."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest
import yaml

from tests.conftest import ENV, REPO

LINT_IMPORTS = Path(os.path.abspath(sys.executable)).with_name("lint-imports")
STAGE_LINES, MODULE_LINES = 80, 300
LIBRARY = "src/transferlab"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter over the project copy at root (its pyproject.toml, its code first on the path)."""
    env = {**ENV, "PYTHONPATH": f"{root}{os.pathsep}{root / 'src'}", "COLUMNS": "400"}  # one line a contract
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True)


def copy_code(dest: Path) -> Path:
    for folder in ("src", "stages", "flows", "benchmarks"):
        shutil.copytree(REPO / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info",
                                                                                     "results", "work"))
    shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_the_import_contract_holds():
    proc = lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout, proc.stdout


PLANTS = {  # file, line appended, the contract it breaks
    "reverse": ("src/transferlab/io/atomic.py", "import stages.validate", "imports no stage"),
    "stage to stage": ("stages/report.py", "import stages.tasks", "No stage imports another stage"),
    "flow to stage": ("flows/compare.py", "from stages import report", "only through the dvc CLI"),
    "circle": ("src/transferlab/config/paths.py", "from transferlab.config import params", "No import circles"),
    "upward": ("src/transferlab/features/sets.py", "from transferlab.heads import reference", "layers"),
}


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_the_import_contract_fails_on_a_planted_import(tmp_path, plant):
    path, line, contract = PLANTS[plant]
    root = copy_code(tmp_path)
    with open(root / path, "a") as f:
        f.write(f"\n{line}  # planted\n")
    proc = lint_imports(root)
    assert proc.returncode != 0, proc.stdout
    broken = [row for row in proc.stdout.splitlines() if row.endswith("BROKEN")]
    # a planted import may break more than one contract (a stage then reaches another through the library)
    assert any(contract in row for row in broken), proc.stdout
    planted_in = path.removeprefix("src/").removesuffix(".py").replace("/", ".")
    named = f"{planted_in} -> " if plant != "circle" else ".paths -> .params"  # cycles: relative to the package
    assert named in proc.stdout, proc.stdout  # the report names the planted import


# ---- dvc.yaml: each stage's code deps are its own script and the library sub-packages it imports ---------

def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("transferlab", "stages", cache_dir=None)


def needed_code_deps(graph: grimp.ImportGraph, stage: str) -> set[str]:
    """stages/<stage>.py and the folder of every library sub-package its process may import (lazy imports too)."""
    used = graph.find_upstream_modules(f"stages.{stage}")
    packages = {m.split(".")[1] for m in used if m.startswith("transferlab.") and m.count(".") >= 1}
    return {f"stages/{stage}.py"} | {f"{LIBRARY}/{p}" for p in packages}


def declared_code_deps(definition: dict) -> set[str]:
    body = definition.get("do", definition)
    return {d for d in body.get("deps", []) if d.startswith(("stages/", "src/"))}


def code_dep_problems(dvc_yaml: dict, graph: grimp.ImportGraph) -> list[str]:
    problems = []
    for name, definition in dvc_yaml["stages"].items():
        declared, needed = declared_code_deps(definition), needed_code_deps(graph, name)
        problems += [f"{name}: missing {d}" for d in sorted(needed - declared)]
        problems += [f"{name}: needless {d}" for d in sorted(declared - needed)]
    return problems


@pytest.fixture(scope="module")
def dvc_yaml() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return _graph()


def test_every_stage_declares_exactly_the_code_it_runs(dvc_yaml, graph):
    assert code_dep_problems(dvc_yaml, graph) == []


def test_a_missing_and_a_needless_code_dep_both_fail(dvc_yaml, graph):
    planted = yaml.safe_load(yaml.safe_dump(dvc_yaml))
    deps = planted["stages"]["features"]["do"]["deps"]
    deps.remove(f"{LIBRARY}/models")
    deps.append(f"{LIBRARY}/heads")
    assert code_dep_problems(planted, graph) == [f"features: missing {LIBRARY}/models",
                                                 f"features: needless {LIBRARY}/heads"]


def test_no_stage_but_tasks_lists_more_than_a_handful_of_code_deps(dvc_yaml):
    counts = {name: len(declared_code_deps(d)) for name, d in dvc_yaml["stages"].items()}
    # tasks@ runs a task end to end (heads, fine-tuning, evaluation): every sub-package; the others are narrow
    assert max(n for name, n in counts.items() if name != "tasks") <= 9, counts


def test_bytecode_is_not_a_dvc_dependency():
    ignored = (REPO / ".dvcignore").read_text().split()
    assert "__pycache__/" in ignored and "*.pyc" in ignored


# ---- the layout -------------------------------------------------------------------------------------------

def test_stages_holds_only_entry_points_and_the_library_no_entry_point():
    for path in (REPO / "stages").glob("*.py"):
        if path.name != "__init__.py":
            assert "def main(argv" in path.read_text(), path
    for path in (REPO / LIBRARY).rglob("*.py"):
        text = path.read_text()
        assert "argparse" not in text and "sys.argv" not in text, path  # the library never parses argv
        assert "P.load(" not in text and "params.load(" not in text, path  # nor reads params.yaml itself


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_files_have_a_readable_size():
    big_stages = {p.name: _lines(p) for p in (REPO / "stages").glob("*.py") if _lines(p) > STAGE_LINES}
    big_modules = {str(p.relative_to(REPO)): _lines(p) for p in (REPO / LIBRARY).rglob("*.py")
                   if _lines(p) > MODULE_LINES}
    assert big_stages == {} and big_modules == {}
