"""`graphrec data import`: read the user's files, check them, write the workspace's dataset/ stage."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from graphrec.core.errors import InputError
from graphrec.core.workspace import Workspace, writes
from graphrec.data.build import build_dataset
from graphrec.data.dataset import Dataset
from graphrec.data.readers import read_table

FileArg = (
    str | os.PathLike | None
)  # a file (or folder) a command was given; None: not given
PRESPLIT = (
    "train",
    "valid",
    "test",
    "cold_valid",
    "cold_test",
    "cold_user_context",
    "cold_user_valid",
    "cold_user_test",
)


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
    """Import one interactions file (split later with `data split`) or pre-split files (train=, valid=, ...)."""
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
    unknown = set(presplit) - set(PRESPLIT)
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
