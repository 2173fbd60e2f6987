"""Per-epoch training curves (train loss, val accuracy and loss, learning rate) as DVC plots, through DVCLive:
one `<dir>/plots/metrics/<name>.tsv` per curve (columns step, <name>; step = epoch - 1). Written once a run has
finished, from the whole history (a resumed run's included), with no timestamps, so the same training writes the
same bytes; never a DVC experiment (save_dvc_exp=False)."""
from __future__ import annotations

import shutil
from pathlib import Path

CURVES = ("train_loss", "val_accuracy", "val_loss", "lr")


def write_curves(out_dir: Path, stats: dict) -> None:
    """The curves of a loop.fit_recipe run (its stats) into out_dir, replacing what was there."""
    from dvclive import Live  # imports part of DVC: only a stage that trained pays for it

    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    with Live(dir=str(out_dir), save_dvc_exp=False, dvcyaml=False, report=None) as live:
        for i, loss in enumerate(stats["train_loss"]):
            live.log_metric("train_loss", round(loss, 6))
            if i < len(stats["val"]):
                if stats["val"][i]["accuracy"] is not None:  # None: an objective without one (SimCLR's)
                    live.log_metric("val_accuracy", round(stats["val"][i]["accuracy"], 6))
                live.log_metric("val_loss", round(stats["val"][i]["loss"], 6))
            live.log_metric("lr", float(f"{stats['lr'][i]:.6g}"))
            live.next_step()
    # DVCLive's summary repeats the last epoch; in the plots folder DVC would draw it as one more plot
    (out_dir / "metrics.json").unlink(missing_ok=True)
