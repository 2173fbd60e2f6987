"""Stage train_head@<task>: train a linear or MLP head on a cached feature set (the backbone never runs)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stages import cli, heads, reference
from stages import params as P
from stages.atomic import write_json
from stages.features import load_features
from stages.paths import Layout
from stages.tasks import select

HEAD_FILE, INFO_FILE, REFERENCE_FILE = "head.safetensors", "head.json", "reference.safetensors"


@dataclass(frozen=True)
class HeadResult:
    val_accuracy: float
    n_train: int
    seconds: float


def run(task_name: str, task: P.Task, cfg: P.Head, seed: int, root: Path, out_dir: Path) -> HeadResult:
    feats, index = load_features(task.features, root)
    sel = select(index, task, seed, task_name)
    train, val = sel.split("train"), sel.split("val")
    head, stats = heads.train(feats[train["row"].to_numpy()], train["y"].to_numpy(), len(sel.classes),
                              cfg, seed)
    val_pred = heads.predict(head, feats[val["row"].to_numpy()]).argmax(1)
    val_acc = float((val_pred == val["y"].to_numpy()).mean()) if len(val) else float("nan")
    ref_weights, ref = reference.fit(feats[train["row"].to_numpy()], train["y"].to_numpy(),
                                     feats[val["row"].to_numpy()], val["y"].to_numpy(), seed)
    info = {"task": task_name, "features": task.features, "classes": sel.classes,
            "hyperparameters": cfg.model_dump(), "n_train": int(len(train)),
            "val_accuracy": round(val_acc, 6), "seconds": round(stats["seconds"], 3), "reference": ref}
    out_dir.mkdir(parents=True, exist_ok=True)
    heads.save(head, out_dir / HEAD_FILE, {"classes": sel.classes})
    reference.save(ref_weights, out_dir / REFERENCE_FILE, ref)
    write_json(out_dir / INFO_FILE, info)
    return HeadResult(val_acc, len(train), stats["seconds"])


def _main(params: P.Params, task: str) -> str:
    layout = Layout()
    res = run(task, params.tasks[task], params.head, params.seed, layout.root, layout.head(task))
    return (f"train_head@{task}: val accuracy {res.val_accuracy:.3f} on {res.n_train} "
            f"training images ({res.seconds:.1f}s)")


def main(argv: list[str] | None = None) -> None:
    cli.stage_main(__doc__, _main, argv)


if __name__ == "__main__":
    main()
