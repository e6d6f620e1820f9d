"""Growing a dataset with new items, users and interactions (what `graphrec update` folds in).

The new rows are read like `data import` reads files and checked against the dataset: new ids only (changed
content needs a re-import and a retrain), no interaction that would leak a held-out pair, cold item or cold
user into training. Items and users keep their indices; new interactions become "train" rows; a pair already
given to the system is skipped with a note; users first seen in the interactions file get blank attributes.
Weights follow `data import`: negative is an error, rows with weight 0 are dropped with a logged warning.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from graphrec.core.errors import InputError
from graphrec.data.build import WEIGHT_COLUMNS, check_image_paths
from graphrec.data.dataset import GIVEN, Dataset
from graphrec.data.readers import (
    check_ids,
    fail_at,
    read_table,
    timestamp_column,
    weight_column,
)

log = logging.getLogger(__name__)


@dataclass
class Grown:
    """The dataset with the new rows appended, and what was added."""

    dataset: Dataset
    items_added: int
    users_added: int
    interactions_added: int
    duplicates_skipped: int


def grow_dataset(
    ds: Dataset,
    interactions: str | os.PathLike | None = None,
    items: str | os.PathLike | None = None,
    users: str | os.PathLike | None = None,
    *,
    encoding: str = "utf-8",
    notes: list[str] | None = None,
) -> Grown:
    """`ds` with the rows of the given files appended (see the module doc); notes collect what was skipped.

    interactions: user_id,item_id[,timestamp][,rating|weight]; items / users: tables with the dataset's
    columns. encoding: of CSV files.
    """
    if interactions is None and items is None and users is None:
        raise InputError(
            "nothing to update: give --interactions, --items and/or --users"
        )
    notes = notes if notes is not None else []
    new_items = (
        _new_entities(items, ds.items, "item_id", "item", encoding, notes)
        if items is not None
        else ds.items.iloc[:0]
    )
    if len(new_items) and ds.schema.image_column and ds.schema.images_dir is not None:
        check_image_paths(
            new_items, ds.schema.image_column, Path(ds.schema.images_dir), notes
        )
    new_users = (
        _new_entities(users, ds.users, "user_id", "user", encoding, notes)
        if users is not None
        else ds.users.iloc[:0]
    )
    item_ids = pd.Index(
        np.concatenate([ds.item_ids, new_items["item_id"].to_numpy()]).astype(str)
    )
    user_ids = pd.Index(
        np.concatenate([ds.user_ids, new_users["user_id"].to_numpy()]).astype(str)
    )
    new_rows, skipped, auto_ids = (
        _new_interactions(interactions, ds, item_ids, user_ids, encoding, notes)
        if interactions is not None
        else (ds.interactions.iloc[:0], 0, [])
    )
    if (
        len(auto_ids) and interactions is not None
    ):  # users first seen in the interactions file: blank attributes
        auto = pd.DataFrame(
            {
                c: (list(auto_ids) if c == "user_id" else [""] * len(auto_ids))
                for c in ds.users.columns
            }
        )
        new_users = pd.concat([new_users, auto], ignore_index=True)
        notes.append(
            f"{len(auto_ids)} users first seen in {Path(interactions).name} were added without attributes"
        )
    grown = Dataset(
        ds.schema,
        pd.concat([ds.items, new_items], ignore_index=True),
        pd.concat([ds.users, new_users], ignore_index=True),
        pd.concat([ds.interactions, new_rows], ignore_index=True),
        ds.triples,
    )
    return Grown(grown, len(new_items), len(new_users), len(new_rows), skipped)


def _new_entities(
    path: str | os.PathLike,
    table: pd.DataFrame,
    id_col: str,
    kind: str,
    encoding: str,
    notes: list[str],
) -> pd.DataFrame:
    """Rows of new items/users with the dataset table's columns; an existing id is an error, a column the file
    lacks is empty for its rows (no content there, as a blank cell), said in the notes."""
    t = read_table(path, (id_col,), encoding)
    check_ids(t, id_col, unique=True)
    roles = [c for c in table.columns if c != id_col]
    missing = [c for c in roles if c not in t.columns]
    if missing:
        notes.append(
            f"{Path(path).name}: no {', '.join(missing)} column: the new {kind}s have none there"
        )
        for c in missing:
            t[c] = ""
    known = np.flatnonzero(pd.Index(table[id_col]).get_indexer(t[id_col]) >= 0)
    if len(known):
        raise fail_at(
            t,
            int(known[0]),
            id_col,
            f"{kind} id {t[id_col].iloc[known[0]]!r} is already in the dataset "
            "(updates add new ones; changed content needs a re-import and a retrain)",
        )
    extra = [c for c in t.columns if c not in table.columns]
    if extra:
        notes.append(
            f"{Path(path).name}: ignored columns not in the dataset: {', '.join(extra)}"
        )
    for c in roles:
        t[c] = t[c].fillna("").astype(str).str.strip()
    out = t[[id_col] + roles].reset_index(drop=True)
    out.attrs = t.attrs
    return out


def _new_interactions(
    path: str | os.PathLike,
    ds: Dataset,
    item_ids: pd.Index,
    user_ids: pd.Index,
    encoding: str,
    notes: list[str],
) -> tuple[pd.DataFrame, int, list[str]]:
    """Indexed "train" rows of the interactions file, how many repeated a pair already given, and the ids of
    users it names for the first time (indexed after `user_ids`, in order of appearance)."""
    t = read_table(path, ("user_id", "item_id"), encoding)
    for col in ("user_id", "item_id"):
        check_ids(t, col, unique=False)
    wcol = next((c for c in WEIGHT_COLUMNS if c in t.columns), None)
    weight = weight_column(t, wcol) if wcol else np.ones(len(t), np.float32)
    # Rows with weight 0 are read and checked like the others, then dropped: they add no pair, no new user, and
    # (never reaching training) cannot leak a held-out pair.
    live = weight > 0
    if not live.all():
        log.warning(
            "%s: dropped %d rows with %s 0 (a 0-weight interaction is no interaction)",
            path,
            int((~live).sum()),
            wcol,
        )
    item = item_ids.get_indexer(t["item_id"])
    if (item < 0).any():
        at = int(np.flatnonzero(item < 0)[0])
        raise fail_at(
            t,
            at,
            "item_id",
            f"unknown item id {t['item_id'].iloc[at]!r} (not in the dataset or the "
            "new items)",
        )
    user = user_ids.get_indexer(
        t["user_id"]
    )  # -1: a new user, added with blank attributes
    new = (
        user < 0
    ) & live  # a new user named only by dropped rows keeps -1 and is never added
    new_ids = [str(i) for i in pd.unique(t["user_id"][new])]
    user[new] = len(user_ids) + pd.Index(new_ids).get_indexer(t["user_id"][new])
    cold_items, cold_users = ds.cold_items(), ds.cold_users()
    for col, idx, held, what in (
        ("item_id", item, cold_items, "item"),
        ("user_id", user, cold_users, "user"),
    ):
        bad = np.flatnonzero(np.isin(idx, held) & live)
        if len(bad):
            raise fail_at(
                t,
                int(bad[0]),
                col,
                f"{what} {t[col].iloc[bad[0]]!r} is held out as a cold {what} for "
                "evaluation; training interactions for it would leak the test",
            )
    n_i = len(item_ids)
    key = user.astype(np.int64) * n_i + item
    old = ds.interactions
    old_key = pd.Series(
        old["split"].to_numpy(),
        index=old["user"].to_numpy(np.int64) * n_i + old["item"].to_numpy(),
    )
    pos = pd.Index(old_key.index).get_indexer(key)
    held = np.flatnonzero(
        live & (pos >= 0) & ~np.isin(old_key.to_numpy()[np.maximum(pos, 0)], GIVEN)
    )
    if len(held):
        raise fail_at(
            t,
            int(held[0]),
            None,
            f"pair ({t['user_id'].iloc[held[0]]}, {t['item_id'].iloc[held[0]]}) "
            f"is held out in the {old_key.iloc[pos[held[0]]]} part; training on it would leak the test",
        )
    rows = pd.DataFrame(
        {"user": user.astype(np.int32), "item": item.astype(np.int32), "weight": weight}
    )
    if "timestamp" in old.columns:  # live events without a time are stamped now
        rows["timestamp"] = (
            timestamp_column(t, "timestamp")
            if "timestamp" in t.columns
            else np.full(len(t), int(time.time()), np.int64)
        )
    rows["split"] = "train"
    keep = (
        live & (pos < 0) & ~pd.Series(np.where(live, key, -1)).duplicated().to_numpy()
    )
    skipped = int((live & ~keep).sum())
    if skipped:
        notes.append(
            f"{Path(path).name}: skipped {skipped} rows repeating a (user, item) pair already given"
        )
    return rows[keep].reset_index(drop=True)[list(old.columns)], skipped, new_ids
