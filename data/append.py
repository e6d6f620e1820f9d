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
from dataclasses import dataclass, field
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
    notes: list[str] = field(
        default_factory=list
    )  # what was skipped or added without attributes


def grow_dataset(
    ds: Dataset,
    interactions: str | os.PathLike | None = None,
    items: str | os.PathLike | None = None,
    users: str | os.PathLike | None = None,
    *,
    encoding: str = "utf-8",
) -> Grown:
    """`ds` with the rows of the given files appended (see the module doc); its notes say what was skipped.

    interactions: user_id,item_id[,timestamp][,rating|weight]; items / users: tables with the dataset's
    columns. encoding: of CSV files.
    """
    if interactions is None and items is None and users is None:
        raise InputError(
            "nothing to update: give --interactions, --items and/or --users"
        )
    notes: list[str] = []
    new_items = _new_items(ds, items, encoding, notes)
    new_users = (
        _new_entities(users, ds.users, "user_id", "user", encoding, notes)
        if users is not None
        else ds.users.iloc[:0]
    )
    item_ids = _extended_ids(ds.item_ids, new_items["item_id"])
    user_ids = _extended_ids(ds.user_ids, new_users["user_id"])
    new_rows, skipped, auto_ids = (
        _new_interactions(interactions, ds, item_ids, user_ids, encoding, notes)
        if interactions is not None
        else (ds.interactions.iloc[:0], 0, [])
    )
    if len(auto_ids) and interactions is not None:
        new_users = _with_blank_users(new_users, ds.users.columns, auto_ids)
        notes.append(
            f"{len(auto_ids)} users first seen in {Path(interactions).name} were added without attributes"
        )
    grown = _appended(ds, new_items, new_users, new_rows)
    return Grown(grown, len(new_items), len(new_users), len(new_rows), skipped, notes)


def _new_items(
    ds: Dataset, path: str | os.PathLike | None, encoding: str, notes: list[str]
) -> pd.DataFrame:
    """The new item rows of `path` (none without one), their image paths checked against the images folder."""
    if path is None:
        return ds.items.iloc[:0]
    new_items = _new_entities(path, ds.items, "item_id", "item", encoding, notes)
    image_column, images_dir = ds.schema.image_column, ds.schema.images_dir
    if len(new_items) and image_column and images_dir is not None:
        check_image_paths(new_items, image_column, Path(images_dir), notes)
    return new_items


def _extended_ids(ids: np.ndarray, new_ids: pd.Series) -> pd.Index:
    """The dataset's ids followed by the new ones: the index the grown table's rows are looked up in."""
    return pd.Index(np.concatenate([ids, new_ids.to_numpy()]).astype(str))


def _with_blank_users(
    new_users: pd.DataFrame, columns: pd.Index, auto_ids: list[str]
) -> pd.DataFrame:
    """`new_users` followed by the users first seen in the interactions file, with blank attributes."""
    auto = pd.DataFrame(
        {
            c: (list(auto_ids) if c == "user_id" else [""] * len(auto_ids))
            for c in columns
        }
    )
    return pd.concat([new_users, auto], ignore_index=True)


def _appended(
    ds: Dataset, items: pd.DataFrame, users: pd.DataFrame, interactions: pd.DataFrame
) -> Dataset:
    """`ds` with the new rows after its own, so that its items and users keep their indices."""
    return Dataset(
        ds.schema,
        pd.concat([ds.items, items], ignore_index=True),
        pd.concat([ds.users, users], ignore_index=True),
        pd.concat([ds.interactions, interactions], ignore_index=True),
        ds.triples,
    )


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
    table = read_table(path, ("user_id", "item_id"), encoding)
    for col in ("user_id", "item_id"):
        check_ids(table, col, unique=False)
    weight, live = _live_weights(table, path)
    item = _item_positions(table, item_ids)
    user, new_ids = _user_positions(table, user_ids, live)
    _refuse_cold(table, item, user, live, ds)
    key = user.astype(np.int64) * len(item_ids) + item
    given = _given_positions(table, key, live, ds.interactions, len(item_ids))
    rows = _train_rows(table, user, item, weight, ds.interactions)
    # a row adds a pair when it is live, new to the dataset and the first of its pair in the file
    keep = (
        live & (given < 0) & ~pd.Series(np.where(live, key, -1)).duplicated().to_numpy()
    )
    skipped = int((live & ~keep).sum())
    if skipped:
        notes.append(
            f"{Path(path).name}: skipped {skipped} rows repeating a (user, item) pair already given"
        )
    columns = list(ds.interactions.columns)
    return rows[keep].reset_index(drop=True)[columns], skipped, new_ids


def _live_weights(
    table: pd.DataFrame, path: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's weight (1 without a weight or rating column) and whether it is above 0. Rows with weight 0
    are read and checked like the others, then dropped (logged): they add no pair, no new user, and (never
    reaching training) cannot leak a held-out pair."""
    weight_col = next((c for c in WEIGHT_COLUMNS if c in table.columns), None)
    weight = (
        weight_column(table, weight_col)
        if weight_col
        else np.ones(len(table), np.float32)
    )
    live = weight > 0
    if not live.all():
        log.warning(
            "%s: dropped %d rows with %s 0 (a 0-weight interaction is no interaction)",
            path,
            int((~live).sum()),
            weight_col,
        )
    return weight, live


def _item_positions(table: pd.DataFrame, item_ids: pd.Index) -> np.ndarray:
    """Each row's item index; an item neither in the dataset nor among the new items is an error."""
    item = item_ids.get_indexer(table["item_id"])
    if (item < 0).any():
        at = int(np.flatnonzero(item < 0)[0])
        raise fail_at(
            table,
            at,
            "item_id",
            f"unknown item id {table['item_id'].iloc[at]!r} (not in the dataset or the "
            "new items)",
        )
    return item


def _user_positions(
    table: pd.DataFrame, user_ids: pd.Index, live: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """Each row's user index, users first seen here numbered after `user_ids` in order of appearance, and those
    new users' ids. A new user named only by dropped (0-weight) rows keeps -1 and is never added."""
    user = user_ids.get_indexer(table["user_id"])
    new = (user < 0) & live
    new_ids = [str(i) for i in pd.unique(table["user_id"][new])]
    user[new] = len(user_ids) + pd.Index(new_ids).get_indexer(table["user_id"][new])
    return user, new_ids


def _refuse_cold(
    table: pd.DataFrame,
    item: np.ndarray,
    user: np.ndarray,
    live: np.ndarray,
    ds: Dataset,
) -> None:
    """Raise for a live row on a cold item or cold user: training on it would leak the evaluation."""
    cold_items, cold_users = ds.cold_items(), ds.cold_users()
    for col, idx, held, what in (
        ("item_id", item, cold_items, "item"),
        ("user_id", user, cold_users, "user"),
    ):
        bad = np.flatnonzero(np.isin(idx, held) & live)
        if len(bad):
            raise fail_at(
                table,
                int(bad[0]),
                col,
                f"{what} {table[col].iloc[bad[0]]!r} is held out as a cold {what} for "
                "evaluation; training interactions for it would leak the test",
            )


def _given_positions(
    table: pd.DataFrame,
    key: np.ndarray,
    live: np.ndarray,
    old: pd.DataFrame,
    n_items: int,
) -> np.ndarray:
    """Each row's position among the dataset's interactions by its (user * n_items + item) `key`, -1 for a new
    pair; a live row repeating a held-out pair is an error (training on it would leak the test)."""
    old_key = pd.Series(
        old["split"].to_numpy(),
        index=old["user"].to_numpy(np.int64) * n_items + old["item"].to_numpy(),
    )
    pos = pd.Index(old_key.index).get_indexer(key)
    held = np.flatnonzero(
        live & (pos >= 0) & ~np.isin(old_key.to_numpy()[np.maximum(pos, 0)], GIVEN)
    )
    if len(held):
        raise fail_at(
            table,
            int(held[0]),
            None,
            f"pair ({table['user_id'].iloc[held[0]]}, {table['item_id'].iloc[held[0]]}) "
            f"is held out in the {old_key.iloc[pos[held[0]]]} part; training on it would leak the test",
        )
    return pos


def _train_rows(
    table: pd.DataFrame,
    user: np.ndarray,
    item: np.ndarray,
    weight: np.ndarray,
    old: pd.DataFrame,
) -> pd.DataFrame:
    """Every row of the file as a "train" interaction; with a timestamp where the dataset has them (live events
    without a time are stamped now)."""
    rows = pd.DataFrame(
        {"user": user.astype(np.int32), "item": item.astype(np.int32), "weight": weight}
    )
    if "timestamp" in old.columns:
        rows["timestamp"] = (
            timestamp_column(table, "timestamp")
            if "timestamp" in table.columns
            else np.full(len(table), int(time.time()), np.int64)
        )
    rows["split"] = "train"
    return rows
