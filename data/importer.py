"""`graphrec data import`: read the user's files, check them, write the workspace's dataset/ stage."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from graphrec.core.errors import InputError
from graphrec.core.workspace import Workspace, writes
from graphrec.data.build import build_dataset
from graphrec.data.dataset import SPLITS, Dataset
from graphrec.data.readers import read_table

# a file (or folder) a command was given; None: not given
FileArg = str | os.PathLike | None


def import_files(
    out: str | os.PathLike,
    *,
    interactions: FileArg = None,
    items: FileArg = None,
    users: FileArg = None,
    images_dir: FileArg = None,
    text_columns: list[str] | None = None,
    attribute_columns: list[str] | None = None,
    image_column: str | None = None,
    user_attribute_columns: list[str] | None = None,
    encoding: str = "utf-8",
    name: str | None = None,
    min_rating: float | None = None,
    **presplit: FileArg,
) -> tuple[Dataset, list[str]]:
    """Import one interactions file, or pre-split files, into the workspace's dataset/ stage.

    The `graphrec data import` stage: one interactions file (split later with `data split`) or
    pre-split files (train=, valid=, ...), never both. The files are read and checked, and the
    dataset is written to WS/dataset/ atomically with its settings recorded, under the workspace
    lock (one writer at a time).

    Args:
        out: The workspace folder to write (a path that is a file is refused).
        interactions: The one interactions file (CSV or Parquet: user_id, item_id, optional
            timestamp and rating or weight); None when pre-split files are given.
        items: The items file (item_id and text, image and attribute columns); None: items are known
            by their ids alone.
        users: The users file (user_id and coarse attribute columns); None: users are known by their
            ids alone.
        images_dir: The folder the image paths are relative to; None: the items file's folder.
        text_columns: The item text columns; None: those of title, name, description, text, tags
            present.
        attribute_columns: The categorical item columns ('|' separates values); None: those of the
            usual names (genres, genre, category, brand, year, ...) present.
        image_column: The item column holding an image path; None: image, image_path or poster,
            whichever is present first.
        user_attribute_columns: The coarse user attribute columns. Opt-in: None adds no user
            attribute; personal data is refused and an age column becomes age bands.
        encoding: The text encoding of CSV files.
        name: The dataset's name; None: the name of the folder holding the items file (else the
            interactions or train file).
        min_rating: Keep only interactions whose rating/weight is at least this (e.g. 4: ratings as
            implicit positives); None keeps every interaction.
        **presplit: The pre-split files by part: train (required), valid, test, cold_valid,
            cold_test, cold_user_context, cold_user_valid, cold_user_test.

    Returns:
        The checked dataset, and the import's notes (human-readable lines: what was dropped, changed
        or ignored).

    Raises:
        InputError: On bad input: both kinds of input or neither, pre-split files without a train
            part, an unreadable file, a missing column, a bad id or weight; the message names the
            file, row and column.
        TypeError: When a keyword names no known pre-split part.

    Example::

        from graphrec.data.importer import import_files

        ds, notes = import_files(
            "ws", interactions="ratings.csv", items="movies.csv", min_rating=4
        )
    """
    interactions, items, users, images_dir = (
        None if f is None else str(f) for f in (interactions, items, users, images_dir)
    )
    given = _presplit_files(interactions, presplit)
    tables = _read_interactions(interactions, given, encoding)
    notes: list[str] = []
    ds = build_dataset(
        tables,
        items=read_table(items, ("item_id",), encoding) if items else None,
        users=read_table(users, ("user_id",), encoding) if users else None,
        text_columns=text_columns,
        attribute_columns=attribute_columns,
        image_column=image_column,
        images_dir=images_dir,
        user_attribute_columns=user_attribute_columns,
        name=name
        or Path(items or interactions or given["train"]).parent.name
        or "dataset",
        notes=notes,
        min_weight=min_rating,
    )
    settings = {
        "source": "import",
        "interactions": interactions,
        **given,
        "items": items,
        "users": users,
        "images_dir": images_dir,
        "encoding": encoding,
        "min_rating": min_rating,
    }
    save_dataset(out, ds, settings)
    return ds, notes


def _presplit_files(
    interactions: str | None, presplit: dict[str, FileArg]
) -> dict[str, str]:
    """The pre-split files given, by part; refuses unknown parts, both kinds of input at once, none, and pre-split
    input without a train part."""
    unknown = set(presplit) - set(SPLITS)
    if unknown:
        raise TypeError(f"unknown arguments {sorted(unknown)}")
    given = {k: str(v) for k, v in presplit.items() if v}
    if interactions and given:
        raise InputError(
            "give either one interactions file or pre-split files (--train ...), not both"
        )
    if not interactions and not given:
        raise InputError(
            "no interactions given: pass --interactions FILE or --train FILE --valid FILE"
        )
    if given and "train" not in given:
        raise InputError("pre-split input needs --train")
    return given


def _read_interactions(
    interactions: str | None, given: dict[str, str], encoding: str
) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """The interactions table, or {part: table} for pre-split files, as build_dataset takes them."""
    need = ("user_id", "item_id")
    if given:
        return {part: read_table(p, need, encoding) for part, p in given.items()}
    return read_table(str(interactions), need, encoding)


@writes
def save_dataset(
    out: str | os.PathLike, ds: Dataset, settings: dict[str, Any]
) -> Workspace:
    """Write dataset/ atomically and record how it was made."""
    ws = Workspace(out)
    ds.save(ws)
    ws.record("dataset", {k: _plain(v) for k, v in settings.items()})
    return ws


def _plain(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v
