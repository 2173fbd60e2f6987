"""Training curves as DVC plots through DVCLive: one TSV per curve, the same bytes for the same training."""
from __future__ import annotations

from transferlab.training.curves import CURVES, write_curves

STATS = {"train_loss": [1.25, 0.5, 0.25], "lr": [1e-3, 5e-4, 1e-7],
         "val": [{"accuracy": 0.5, "loss": 1.5}, {"accuracy": 0.75, "loss": 0.9}, {"accuracy": 0.8, "loss": 0.7}]}


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_curves_are_one_tsv_per_metric_by_epoch_and_deterministic(tmp_path):
    write_curves(tmp_path / "a", STATS)
    write_curves(tmp_path / "b", STATS)
    a = _files(tmp_path / "a")
    assert a == _files(tmp_path / "b")  # no timestamps: a forced re-run rewrites the same bytes
    assert set(a) == {f"plots/metrics/{n}.tsv" for n in CURVES}
    assert a["plots/metrics/train_loss.tsv"].decode() == "step\ttrain_loss\n0\t1.25\n1\t0.5\n2\t0.25\n"
    assert a["plots/metrics/val_accuracy.tsv"].decode().splitlines()[-1] == "2\t0.8"


def test_a_run_without_val_has_no_val_curve_and_rewriting_replaces(tmp_path):
    write_curves(tmp_path / "c", STATS)
    write_curves(tmp_path / "c", {**STATS, "val": []})
    assert "plots/metrics/val_accuracy.tsv" not in _files(tmp_path / "c")

