"""Stage prepare@<dataset>: list, decode and hash every image; fix a deterministic stratified split."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from stages import cli
from stages import params as P
from stages.atomic import write_csv, write_parquet
from stages.datasets import list_images
from stages.errors import PipelineError
from stages.images import decode
from stages.paths import Layout

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class PrepareResult:
    n_images: int
    n_rejected: int
    split_counts: dict[str, int]


def _hash_row(path: str) -> tuple[str, str] | tuple[None, str]:
    """(sha256 of the file, '') for a decodable image; (None, reason) otherwise."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as err:
        return None, f"unreadable: {err.strerror or err}"
    if not data:
        return None, "empty file"
    try:
        decode(p)
    except PipelineError as err:
        return None, f"undecodable: {err}"
    return hashlib.sha256(data).hexdigest(), ""


def assign_splits(frame: pd.DataFrame, val: float, test: float, seed: int) -> pd.Series:
    """Stratified split, fixed per image: within each class, images ranked by a seeded content hash."""
    rank_key = [hashlib.sha256(f"{seed}:{h}".encode()).hexdigest() for h in frame["sha256"]]
    split = pd.Series("train", index=frame.index)
    for _, idx in frame.assign(_k=rank_key).sort_values("_k").groupby("label").groups.items():
        idx = list(idx)
        n_test = int(round(len(idx) * test))
        n_val = int(round(len(idx) * val))
        split[idx[:n_test]] = "test"
        split[idx[n_test:n_test + n_val]] = "val"
    return split


def run(ds: P.Dataset, out_dir: Path, seed: int) -> PrepareResult:
    files = list_images(ds, out_dir / "images")
    hashed = [_hash_row(p) for p in tqdm(files["path"], desc="prepare", unit="img", mininterval=1.0)]
    files["sha256"] = [h for h, _ in hashed]
    files["reason"] = [r for _, r in hashed]
    rejected = files[files["sha256"].isna()][["path", "label", "reason"]]
    good = files[files["sha256"].notna()].drop(columns="reason").reset_index(drop=True)
    if good.empty:
        raise PipelineError(f"dataset {ds.root}: no decodable images; see {out_dir / 'rejected.csv'}")
    if "split" in good.columns:
        bad = sorted(set(good["split"]) - set(SPLITS))
        if bad:
            raise PipelineError(f"manifest {ds.root}: split values {bad} are not train, val or test")
    else:
        good["split"] = assign_splits(good, ds.val_fraction, ds.test_fraction, seed)
    root = Path(ds.root)
    good["image_id"] = [_image_id(p, root) for p in good["path"]]
    manifest = good[["image_id", "path", "label", "split", "sha256"]]
    write_parquet(out_dir / "manifest.parquet", manifest)
    write_csv(out_dir / "rejected.csv", rejected)
    return PrepareResult(len(manifest), len(rejected), manifest["split"].value_counts().to_dict())


def _image_id(path: str, root: Path) -> str:
    base = root if root.is_dir() else root.parent
    try:
        return Path(path).relative_to(base).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _main(params: P.Params, name: str) -> str:
    res = run(params.datasets[name], Layout().prepared(name), params.seed)
    return f"prepare@{name}: {res.n_images} images {res.split_counts}, {res.n_rejected} rejected"


def main(argv: list[str] | None = None) -> None:
    cli.stage_main(__doc__, _main, argv)


if __name__ == "__main__":
    main()
