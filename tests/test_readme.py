"""The README's numbers are the committed JSON's: the results table against results/metrics/<task>.json, the
benchmark table against benchmarks/results/<name>.json. Numbers live in those two tables, so they stay true."""
from __future__ import annotations

import json
import re

import pytest

from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def table_after(heading: str, text: str = README) -> list[list[str]]:
    """The rows (cells stripped) of the first markdown table after `heading`, header and rule dropped."""
    start = text.index(heading)
    rows = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    return rows[2:]


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{round(x, 3):.3f}"


def test_the_results_table_is_every_task_and_method_of_the_committed_metrics():
    rows = table_after("## Results of the default pipeline")
    want = []
    for path in sorted((REPO / "results" / "metrics").glob("*.json")):
        for method, m in json.loads(path.read_text()).items():
            want.append([path.stem, method, _fmt(m["test_accuracy"]), _fmt(m["val_accuracy"]),
                         _fmt(m["macro_f1"])])
    assert want, "no committed results"
    assert sorted(r[:5] for r in rows) == sorted(want)


def _bench(name: str) -> dict:
    return json.loads((REPO / "benchmarks" / "results" / f"{name}.json").read_text())


def test_the_benchmark_table_is_the_committed_json():
    rows = table_after("## Benchmarks")
    assert len(rows) == len(list((REPO / "benchmarks" / "results").glob("*.json")))
    for cells in rows:
        name = re.fullmatch(r"`(\w+)`", cells[0]).group(1)
        r = _bench(name)
        assert cells[1:4] == [f"{r['baseline']['seconds']:.2f}", f"{r['ours']['seconds']:.3f}",
                              f"{r['speedup']:.2f}×"], name
        assert cells[-1] == ("yes" if r["meets_target"] else "**no**"), name


@pytest.mark.parametrize("page", ["README.md", *sorted(p.name for p in (REPO / "docs").glob("*.md"))])
def test_paths_named_in_the_docs_exist(page):
    text = (REPO / page if page == "README.md" else REPO / "docs" / page).read_text()
    named = set(re.findall(r"`((?:src|stages|flows|benchmarks|tests|docs)/[\w./-]+?)`", text))
    missing = sorted(p for p in named if "<" not in p and not (REPO / p).exists())
    assert missing == [], missing
