"""Did transfer help? Each task on a trained backbone (pretrained here, or with loaded weights) is set beside a
comparable task on a random-init backbone (weights: none): the same dataset, classes, label map, shots and shot
seeds, so that the same seeds draw the same images and the head's test accuracies pair up draw by draw. Tasks
whose backbones are pretrain entries that differ only in `seed` form one configuration, so its spread over
pretraining seeds is measured too (a single pretraining run is not a result: another CPU, or another seed, trains
other weights). -> reports/transfer.json (a DVC metric) and the report's "Did transfer help?" section."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferlab.config import params as P
from transferlab.config.paths import Layout

# A gap counts when it is more than this many standard errors from zero (about 95% for a normal mean).
Z = 2.0


@dataclass(frozen=True)
class Comparison:
    tasks: list[str]  # the configuration's tasks: one per pretraining seed
    baseline: str  # the random-init task
    accuracy: dict[str, dict[str, float]]  # task -> shot seed -> head test accuracy

    def gaps(self) -> np.ndarray:
        """Paired differences: pretraining seed x shot seed."""
        base = self.accuracy[self.baseline]
        return np.array([[self.accuracy[t][s] - base[s] for s in base] for t in self.tasks])


def _signature(params: P.Params, task: P.Task) -> tuple:
    fs = params.features[task.features]
    label_map = tuple(sorted((task.label_map or {}).items()))
    return (fs.dataset, fs.pooling, fs.blocks, tuple(task.classes or ()), label_map, task.shots,
            tuple(task.shot_seeds or ()))


def _random_init(params: P.Params, task: P.Task) -> bool:
    backbone = params.features[task.features].backbone
    return backbone in params.backbones and params.backbones[backbone].weights == "none"


def _seedless(params: P.Params, task: P.Task) -> tuple:
    """The task's backbone up to its pretraining seed: tasks whose backbones share this are one configuration."""
    backbone = params.features[task.features].backbone
    if backbone in params.pretrain:
        return ("pretrain", json.dumps(params.pretrain[backbone].model_dump(exclude={"seed"}), sort_keys=True))
    return ("backbone", backbone)


def comparisons(params: P.Params, layout: Layout) -> list[Comparison]:
    """Every configuration with a comparable random-init task (the first such task in params.yaml's order)."""
    names = [n for n, t in params.tasks.items() if layout.metrics(n).is_file()]
    groups: dict[tuple, list[str]] = {}
    for name in names:
        task = params.tasks[name]
        if not _random_init(params, task):
            groups.setdefault((_signature(params, task), _seedless(params, task)), []).append(name)
    out = []
    for (signature, _), tasks in groups.items():
        base = next((n for n in names if _random_init(params, params.tasks[n])
                     and _signature(params, params.tasks[n]) == signature), None)
        if base is not None:
            out.append(Comparison(tasks, base, {n: _accuracies(layout.metrics(n))
                                                for n in [*tasks, base]}))
    return out


def _accuracies(metrics_json: Path) -> dict[str, float]:
    head = json.loads(metrics_json.read_text())["head"]
    return head.get("test_accuracy_seeds") or {"-": head["test_accuracy"]}


def summary(params: P.Params, c: Comparison) -> dict:
    """The numbers of one comparison (reports/transfer.json) and its verdict line."""
    gaps = c.gaps()
    n_pre, n_shot = gaps.shape
    over_shots = float(np.std(gaps.mean(0), ddof=1)) if n_shot > 1 else None
    over_pre = float(np.std(gaps.mean(1), ddof=1)) if n_pre > 1 else None
    sem = math.sqrt((over_shots or 0.0) ** 2 / n_shot + (over_pre or 0.0) ** 2 / n_pre)
    gap = float(gaps.mean())
    verdict = ("not enough draws to say" if n_pre * n_shot == 1 else "helped" if gap > Z * sem
               else "hurt" if gap < -Z * sem else "no clear difference")
    acc = float(np.mean([list(c.accuracy[t].values()) for t in c.tasks]))
    base = float(np.mean(list(c.accuracy[c.baseline].values())))
    task = params.tasks[c.tasks[0]]
    return {"tasks": c.tasks, "baseline": c.baseline, "shots": task.shots or "all", "accuracy": round(acc, 6),
            "baseline_accuracy": round(base, 6), "gap": round(gap, 6),
            "gap_std_over_shot_seeds": None if over_shots is None else round(over_shots, 6),
            "gap_std_over_pretrain_seeds": None if over_pre is None else round(over_pre, 6),
            "n_shot_seeds": n_shot, "n_pretrain_seeds": n_pre, "verdict": verdict}


def line(params: P.Params, s: dict) -> str:
    """One sentence: what the comparison shows."""
    backbone = params.features[params.tasks[s["tasks"][0]].features].backbone
    base_arch = params.backbones[params.features[params.tasks[s["baseline"]].features].backbone].arch
    by_shots, by_pre = s["gap_std_over_shot_seeds"], s["gap_std_over_pretrain_seeds"]
    spread = [f"paired over {s['n_shot_seeds']} shot draw{'s' * (s['n_shot_seeds'] > 1)}"
              + (f" (std {100 * by_shots:.1f})" if by_shots else ""),
              f"{s['n_pretrain_seeds']} pretraining seed{'s' * (s['n_pretrain_seeds'] > 1)}"
              + (f" (std {100 * by_pre:.1f})" if by_pre else "")]
    what = {"helped": f"helped: +{100 * s['gap']:.1f} points", "hurt": f"hurt: {100 * s['gap']:.1f} points",
            "no clear difference": f"made no clear difference ({100 * s['gap']:+.1f} points, within the spread)",
            "not enough draws to say": f"{100 * s['gap']:+.1f} points from one draw: not enough to say"}[
        s["verdict"]]
    text = (f"- **{', '.join(s['tasks'])}**: transfer from `{backbone}` {what} at {s['shots']} shots "
            f"({s['accuracy']:.3f} against {s['baseline_accuracy']:.3f} for random-init {base_arch} features, "
            f"task {s['baseline']}; {', '.join(spread)}).")
    if s["n_pretrain_seeds"] == 1 and backbone in params.pretrain:
        text += (" One pretraining run: add pretrain entries that differ only in `seed` to measure its spread "
                 "before trusting the gap.")
    if s["verdict"] == "hurt":
        text += (" Features of an earlier block (`features.<set>: {pooling: mean, blocks: [-2]}`) are less "
                 "specific to the source classes and often transfer better to a target unlike them.")
    return text


def section(params: P.Params, layout: Layout) -> tuple[str, dict]:
    """The report's section and reports/transfer.json's content."""
    rows = [summary(params, c) for c in comparisons(params, layout)]
    metrics = {r["tasks"][0]: {k: v for k, v in r.items() if isinstance(v, (int, float)) and v is not None}
               for r in rows}
    if not rows:
        return "", metrics
    return ("\n## Did transfer help?\n\nThe head's test accuracy on each trained backbone's features against a "
            "random-init backbone's, on the same images (same classes, shots and shot seeds).\n\n"
            + "\n".join(line(params, r) for r in rows) + "\n"), metrics
