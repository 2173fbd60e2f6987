"""Train/val/test splits fixed per picture, and exact duplicates kept out of two splits at once.

Duplicates are files with the same decoded pixels (pixel_sha256), whatever their format. A duplicate group
gets one split. Its first row (listing order: sorted paths, or the manifest's row order) is the original;
the others record it in `duplicate_of`. Where the source fixes splits (a manifest's split column), the
group's split is that of its first row with one, and copies the source put in another split are dropped
(reported, never in the manifest). Other groups are split per class (the class of the group's first row):
groups ranked by a seeded hash of their pixels, the first round(n * test) to test, the next round(n * val) to
val, the rest to train.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

REPORT = ["path", "image_id", "label", "split", "duplicate_of", "same_file", "kept", "note"]


def _rank(pixel_sha256: pd.Series, seed: int) -> pd.Series:
    return pd.Series([hashlib.sha256(f"{seed}:{h}".encode()).hexdigest() for h in pixel_sha256],
                     index=pixel_sha256.index)


def stratified(groups: pd.DataFrame, val: float, test: float, seed: int) -> pd.Series:
    """Split per row of `groups` (columns label, pixel_sha256; one row per distinct picture), by class."""
    split = pd.Series("train", index=groups.index, dtype=object)
    ordered = groups.assign(_k=_rank(groups["pixel_sha256"], seed)).sort_values("_k", kind="stable")
    for _, idx in ordered.groupby("label", sort=False).groups.items():
        idx = list(idx)
        n_test, n_val = int(round(len(idx) * test)), int(round(len(idx) * val))
        split[idx[:n_test]] = "test"
        split[idx[n_test:n_test + n_val]] = "val"
    return split


def resolve(frame: pd.DataFrame, val: float, test: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows kept, with split and duplicate_of; the duplicates report) for rows in listing order with
    image_id, path, label, split (None where to assign), sha256 and pixel_sha256."""
    frame = frame.reset_index(drop=True)
    by_pixels = frame.groupby("pixel_sha256", sort=False)
    first = by_pixels.cumcount() == 0
    first_id = by_pixels["image_id"].transform("first")
    given = frame["split"].notna()
    group_split = frame["split"].where(given).groupby(frame["pixel_sha256"], sort=False).transform("first")
    dropped = given & (frame["split"] != group_split)

    open_groups = frame[first & group_split.isna()]
    if len(open_groups):
        fixed = set(frame.loc[given, "split"])  # a source that fixes test (or val) leaves only the rest to draw
        group_split.loc[open_groups.index] = stratified(
            open_groups, 0.0 if "val" in fixed else val, 0.0 if "test" in fixed else test, seed)
        group_split = group_split.groupby(frame["pixel_sha256"], sort=False).transform("first")
    final = frame["split"].where(given, group_split)

    out = frame.assign(split=final, duplicate_of=first_id.where(~first, None))
    return out[~dropped].reset_index(drop=True), _report(frame, final, first, first_id, group_split, dropped)


def _report(frame, final, first, first_id, group_split, dropped) -> pd.DataFrame:
    dup = ~first
    if not dup.any():
        return pd.DataFrame(columns=REPORT)
    by_id = frame.set_index("image_id")
    orig = by_id.loc[first_id[dup]]
    notes = []
    for i, o_label in zip(np.flatnonzero(dup), orig["label"], strict=True):
        note = (f"dropped: the first copy is in split {group_split[i]}; one picture never sits in two splits"
                if dropped[i] else "")
        if str(frame.at[i, "label"]) != str(o_label):
            note = "; ".join(filter(None, [note, f"label differs from the first copy's ({o_label})"]))
        notes.append(note)
    return pd.DataFrame({
        "path": frame.loc[dup, "path"].to_numpy(), "image_id": frame.loc[dup, "image_id"].to_numpy(),
        "label": frame.loc[dup, "label"].to_numpy(), "split": final[dup].to_numpy(),
        "duplicate_of": first_id[dup].to_numpy(),
        "same_file": (frame.loc[dup, "sha256"].to_numpy() == orig["sha256"].to_numpy()),
        "kept": ~dropped[dup].to_numpy(), "note": notes})
