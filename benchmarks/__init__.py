"""The project's benchmark suite: every speed claim measured side by side on the machine at hand.

`python -m benchmarks [names...] [--quick]` (or `make bench`) runs them and writes one JSON per benchmark to
benchmarks/results/<name>.json (`baseline` and `ours`, each with `seconds` and a description, `speedup` =
baseline seconds / ours seconds, `machine`), then prints a summary table (also benchmarks/results/summary.md).
Not timed tests: CI does not run them; tests/benchmarks/test_benchmarks.py only smoke-runs `--quick`.

Each benchmark is a module with `TARGET` (the claim it checks) and `run(work: Path, quick: bool) -> dict`.
"""
from __future__ import annotations

BENCHMARKS = ("head_vs_frozen", "extraction", "task_reuse", "incremental", "scaling", "head_sweep",
              "prepare_memory", "model_zoo", "head_scale", "many_tasks", "transfer")
NOT_BUILT: dict[str, str] = {}
