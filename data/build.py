"""Turn raw tables (strings, as read by `readers.read_table`) into a checked canonical Dataset."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from graphrec.core.errors import InputError
from graphrec.data.dataset import SPLITS, Dataset, Schema
from graphrec.data.demographics import age_bands
from graphrec.data.readers import (
    MULTI_SEP,
    check_ids,
    fail_at,
    timestamp_column,
    weight_column,
)

log = logging.getLogger(__name__)

TEXT_DEFAULTS = ("title", "name", "description", "text", "tags")
ATTRIBUTE_DEFAULTS = (
    "genres",
    "genre",
    "category",
    "categories",
    "brand",
    "year",
    "decade",
    "price_band",
    "tags",
)
IMAGE_DEFAULTS = ("image", "image_path", "poster")
WEIGHT_COLUMNS = ("weight", "rating")
# Fine-grained personal data never becomes a user attribute: exports and the graph keep coarse demographics.
PII_COLUMNS = {
    "zip",
    "zipcode",
    "zip_code",
    "postcode",
    "postal_code",
    "email",
    "phone",
    "name",
    "first_name",
    "last_name",
    "address",
    "ip",
    "ip_address",
    "birthdate",
    "dob",
    "date_of_birth",
    "ssn",
    "social_security_number",
    "passport",
    "national_id",
    "tax_id",
    "iban",
    "credit_card",
}


def build_dataset(
    interactions: pd.DataFrame | dict[str, pd.DataFrame],
    items: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
    *,
    text_columns: list[str] | None = None,
    attribute_columns: list[str] | None = None,
    image_column: str | None = None,
    images_dir: str | os.PathLike | None = None,
    user_attribute_columns: list[str] | None = None,
    name: str = "dataset",
    sep: str = MULTI_SEP,
    notes: list[str] | None = None,
    min_weight: float | None = None,
) -> Dataset:
    """Check and index the tables. `interactions` is one table (unsplit) or {split part: table} (pre-split).

    Duplicate (user, item) pairs within one part keep their first row (counted in `notes`); the same pair
    in two parts, a cold item in a warm part, or a cold user in training is an error. Rows with weight 0 are
    dropped with a logged warning (before duplicates are looked for); a negative weight is an error.
    `min_weight` (`--min-rating`): rows whose rating/weight is below it are dropped too, in every part (explicit
    ratings turned into implicit positives, e.g. 4 on a 1-5 scale), counted in `notes`.
    """
    if min_weight is not None and not np.isfinite(min_weight):
        raise InputError(f"--min-rating must be a finite number (got {min_weight})")
    notes = notes if notes is not None else []
    parts = interactions if isinstance(interactions, dict) else {"": interactions}
    _check_parts(parts)
    items = _entity_table(items, "item_id", [f["item_id"] for f in parts.values()])
    users = _entity_table(users, "user_id", [f["user_id"] for f in parts.values()])
    schema = Schema(name=name, sep=sep)
    items = _assign_item_roles(
        items, schema, text_columns, attribute_columns, image_column, images_dir, notes
    )
    users = _assign_user_roles(users, schema, user_attribute_columns, notes)
    inter = _all_interactions(parts, items, users, schema, min_weight, notes)
    return Dataset(
        schema,
        items.reset_index(drop=True),
        users.reset_index(drop=True),
        inter.reset_index(drop=True),
    )


def _check_parts(parts: dict[str, pd.DataFrame]) -> None:
    """Every part is a known split part ("" for unsplit) with user_id and item_id columns of valid ids."""
    for part, frame in parts.items():
        if part and part not in SPLITS:
            raise ValueError(f"unknown split part {part!r}")
        for col in ("user_id", "item_id"):
            if col not in frame.columns:
                raise InputError(
                    "missing required column",
                    file=frame.attrs.get("source"),
                    column=col,
                )
            check_ids(frame, col, unique=False)


def _all_interactions(
    parts: dict[str, pd.DataFrame],
    items: pd.DataFrame,
    users: pd.DataFrame,
    schema: Schema,
    min_weight: float | None,
    notes: list[str],
) -> pd.DataFrame:
    """Every part's indexed interactions in one table, repeats dropped and, when pre-split, the parts checked
    against each other (and recorded in `schema.split`)."""
    frames = [
        _index_interactions(f, part, items, users, min_weight, notes)
        for part, f in parts.items()
    ]
    inter = pd.concat(frames, ignore_index=True)
    inter = _drop_duplicates(inter, parts, notes)
    if any(parts):
        _check_presplit(inter, parts, items, users)
        schema.split = {"method": "pre-split", "parts": sorted(p for p in parts if p)}
    return inter.drop(columns=["_source", "_pos"])


def _entity_table(
    table: pd.DataFrame | None, id_col: str, seen: list[pd.Series]
) -> pd.DataFrame:
    if table is None:  # ids only, in order of first appearance
        ids = pd.unique(pd.concat(seen, ignore_index=True))
        return pd.DataFrame({id_col: ids.astype(str)})
    if id_col not in table.columns:
        raise InputError(
            "missing required column", file=table.attrs.get("source"), column=id_col
        )
    check_ids(table, id_col, unique=True)
    cols = [id_col] + [c for c in table.columns if c != id_col]
    out = table[cols].copy()
    out.attrs = table.attrs
    return out


def _pick(
    columns: list[str] | None, defaults: tuple[str, ...], table: pd.DataFrame, role: str
) -> list[str]:
    if columns is None:
        return [c for c in defaults if c in table.columns]
    ids = [c for c in columns if c in ("item_id", "user_id")]
    if ids:  # the id is the row's key, not something it has: it would become one attribute node per row
        raise InputError(
            f"the id column cannot be one of the {role} columns",
            file=table.attrs.get("source"),
            column=ids[0],
        )
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(
            f"{role} column not in the table (found: {', '.join(table.columns)})",
            file=table.attrs.get("source"),
            column=missing[0],
        )
    return list(columns)


def _assign_item_roles(
    items: pd.DataFrame,
    schema: Schema,
    text_columns: list[str] | None,
    attribute_columns: list[str] | None,
    image_column: str | None,
    images_dir: str | os.PathLike | None,
    notes: list[str],
) -> pd.DataFrame:
    """The item table cut to its id and role columns (text, attributes, image; recorded in `schema`), cells as
    stripped text; named image files are checked against the images folder."""
    schema.text_columns = _pick(text_columns, TEXT_DEFAULTS, items, "text")
    schema.attribute_columns = _pick(
        attribute_columns, ATTRIBUTE_DEFAULTS, items, "attribute"
    )
    image_column = _pick_image_column(items, image_column)
    schema.image_column = image_column
    keep = ["item_id"] + list(
        dict.fromkeys(
            schema.text_columns
            + schema.attribute_columns
            + ([image_column] if image_column else [])
        )
    )
    for c in keep[1:]:
        items[c] = items[c].fillna("").astype(str).str.strip()
    if image_column:
        root = _images_root(items, images_dir)
        schema.images_dir = str(root.resolve())
        check_image_paths(items, image_column, Path(schema.images_dir), notes)
    out = items[keep]
    out.attrs = items.attrs
    return out


def _pick_image_column(items: pd.DataFrame, image_column: str | None) -> str | None:
    """The image column: the one named (which must exist), else the first of IMAGE_DEFAULTS present, else None."""
    if image_column is None:
        return next((c for c in IMAGE_DEFAULTS if c in items.columns), None)
    if image_column not in items.columns:
        raise InputError(
            "image column not in the table",
            file=items.attrs.get("source"),
            column=image_column,
        )
    return image_column


def _images_root(items: pd.DataFrame, images_dir: str | os.PathLike | None) -> Path:
    """The folder image paths are relative to: `images_dir`, else the items file's folder, else the working
    folder; it must exist."""
    source = items.attrs.get("source")
    root = (
        Path(images_dir)
        if images_dir
        else (Path(source).parent if source else Path.cwd())
    )
    if not root.is_dir():
        raise InputError("images folder not found", file=root)
    return root


def is_file_entry(entry: os.DirEntry) -> bool:
    """DirEntry.is_file() that calls an entry it cannot resolve (a symlink loop: ELOOP) not a file."""
    try:
        return entry.is_file()
    except OSError:
        return False


def check_image_paths(
    items: pd.DataFrame, column: str, root: Path, notes: list[str]
) -> None:
    """Image paths are relative to the images folder and may not leave it (no absolute paths, no '..').

    String checks only (no per-file resolve): the encode stage opens each file inside the folder anyway."""
    prefix = str(root) + os.sep
    top_level = {e.name for e in os.scandir(root) if is_file_entry(e)}
    missing = 0
    for pos, value in enumerate(items[column].to_numpy()):
        if not value:
            continue
        full = os.path.normpath(os.path.join(prefix, value))
        if os.path.isabs(value) or not full.startswith(prefix):
            raise fail_at(
                items,
                pos,
                column,
                f"image path {value!r} escapes the images folder {root}",
            )
        missing += not (value in top_level or os.path.isfile(full))
    n = int((items[column] != "").sum())
    notes.append(
        f"{n} of {len(items)} items name an image; {missing} of those files are missing"
    )


def _assign_user_roles(
    users: pd.DataFrame, schema: Schema, columns: list[str] | None, notes: list[str]
) -> pd.DataFrame:
    """User attributes are opt-in: only the columns named (`--user-attribute-columns`) become attributes, and
    each must be coarse: personal data (PII_COLUMNS) is refused, an `age` column is turned into its band
    (`age_band`), and a column with nearly one value per user (an identifier in disguise) is refused."""
    source = users.attrs.get("source")
    columns = _user_attribute_columns(users, columns, notes)
    kept = []
    for column in columns:
        values = users[column].fillna("").astype(str).str.strip()
        # exact ages are personal data: only the band is stored
        if column.lower() == "age":
            values = _age_bands(users, column, values)
            stored_as = "age_band"
            notes.append(
                f"users: column {column!r} stored as age bands ({stored_as}), never as exact ages"
            )
        else:
            stored_as = column
            _check_coarse(values, source, column)
        users[stored_as] = values
        kept.append(stored_as)
    schema.user_attribute_columns = kept
    out = users[["user_id"] + kept]
    out.attrs = users.attrs
    return out


def _user_attribute_columns(
    users: pd.DataFrame, columns: list[str] | None, notes: list[str]
) -> list[str]:
    """The user attribute columns named (none named: none, the ignored ones noted), each present and none of them
    personal data."""
    if not columns:
        ignored = [c for c in users.columns if c != "user_id"]
        if ignored:
            notes.append(
                f"users: no user attribute columns named, so none is used (ignored: {', '.join(ignored)}; "
                "name coarse ones with --user-attribute-columns)"
            )
        columns = []
    columns = _pick(columns, (), users, "user attribute")
    pii = [c for c in columns if c.lower() in PII_COLUMNS]
    if pii:
        raise InputError(
            "is personal data; coarsen it first (e.g. zip code -> region)",
            file=users.attrs.get("source"),
            column=pii[0],
        )
    return columns


def _age_bands(users: pd.DataFrame, column: str, values: pd.Series) -> pd.Series:
    """The age column's band per user ("" where blank); a cell that is not a number of years is an error."""
    years = pd.to_numeric(values, errors="coerce")
    bad = np.flatnonzero(years.isna().to_numpy() & (values != "").to_numpy())
    if len(bad):
        raise fail_at(
            users,
            int(bad[0]),
            column,
            f"age {values.iloc[bad[0]]!r} is not a number of years",
        )
    return pd.Series(
        np.where(values == "", "", age_bands(years.fillna(0).to_numpy())),
        index=users.index,
    )


def _check_coarse(values: pd.Series, source: str | None, column: str) -> None:
    """A user attribute groups users: one whose values are nearly all distinct identifies them instead."""
    filled = values[values != ""]
    if len(filled) >= 20 and filled.nunique() > 0.5 * len(filled):
        raise InputError(
            f"has {filled.nunique()} distinct values for {len(filled)} users: too fine to be a coarse "
            "attribute (it would identify users); coarsen it first (e.g. into bands or regions)",
            file=source,
            column=column,
        )


def _index_interactions(
    frame: pd.DataFrame,
    part: str,
    items: pd.DataFrame,
    users: pd.DataFrame,
    min_weight: float | None,
    notes: list[str],
) -> pd.DataFrame:
    """One part's interactions by user and item index, with weight (and timestamp), its part name and each row's
    file and position (for later messages); rows with weight 0 or below `min_weight` are dropped."""
    source = frame.attrs.get("source")
    out = _entity_positions(frame, items, users)
    weight_col = next((c for c in WEIGHT_COLUMNS if c in frame.columns), None)
    if min_weight is not None and weight_col is None:
        raise InputError("--min-rating needs a rating or weight column", file=source)
    out["weight"] = (
        weight_column(frame, weight_col)
        if weight_col
        else np.ones(len(frame), np.float32)
    )
    if "timestamp" in frame.columns:
        out["timestamp"] = timestamp_column(frame, "timestamp")
    result = pd.DataFrame(out)
    result["split"] = part
    result["_source"] = source or ""
    # file positions for later messages, kept through the drop below
    result["_pos"] = np.arange(len(frame))
    result.attrs = frame.attrs
    result = _drop_zero_weights(result, weight_col, source)
    if min_weight is not None:
        result = _drop_below(result, min_weight, weight_col, source, notes)
    return result


def _entity_positions(
    frame: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame
) -> dict[str, np.ndarray]:
    """{"user": ..., "item": ...}: each row's index in the users and items tables; an unknown id is an error."""
    out = {}
    for col, table, kind in (("user_id", users, "user"), ("item_id", items, "item")):
        pos = pd.Index(table[col]).get_indexer(frame[col])
        if (pos < 0).any():
            at = int(np.flatnonzero(pos < 0)[0])
            where = table.attrs.get("source") or f"the {kind}s table"
            raise fail_at(
                frame,
                at,
                col,
                f"unknown {kind} id {frame[col].iloc[at]!r} (not in {where})",
            )
        out[kind] = pos.astype(np.int32)
    return out


def _drop_zero_weights(
    result: pd.DataFrame, weight_col: str | None, source: str | None
) -> pd.DataFrame:
    """`result` without its rows of weight 0 (logged: a 0-weight interaction is no interaction); a part of
    nothing but those is an error."""
    zero = result["weight"].to_numpy() == 0
    if len(zero) and zero.all():
        raise InputError(
            f"every row has {weight_col} 0 (no interaction): nothing to import",
            file=source,
            column=weight_col,
        )
    if zero.any():
        log.warning(
            "%s: dropped %d rows with %s 0 (a 0-weight interaction is no interaction)",
            source or "interactions",
            int(zero.sum()),
            weight_col,
        )
        result = result[~zero].reset_index(drop=True)
    return result


def _drop_below(
    result: pd.DataFrame,
    min_weight: float,
    weight_col: str | None,
    source: str | None,
    notes: list[str],
) -> pd.DataFrame:
    """`result` without its rows whose weight is below `min_weight` (`--min-rating`, counted in the notes);
    dropping every row is an error."""
    low = result["weight"].to_numpy() < min_weight
    if low.all():
        raise InputError(
            f"no row has {weight_col} {min_weight:g} or more (--min-rating): nothing to import",
            file=source,
            column=weight_col,
        )
    if low.any():
        notes.append(
            f"{Path(source).name if source else 'interactions'}: dropped {int(low.sum())} rows with "
            f"{weight_col} below {min_weight:g} (--min-rating)"
        )
        result = result[~low].reset_index(drop=True)
    return result


def _drop_duplicates(
    inter: pd.DataFrame, parts: dict, notes: list[str]
) -> pd.DataFrame:
    key = (
        inter["user"].astype(np.int64) * (int(inter["item"].max()) + 1) + inter["item"]
    )
    same_part = inter.duplicated(["user", "item", "split"])
    n_dup = int(same_part.sum())
    if n_dup:
        notes.append(
            f"dropped {n_dup} repeated (user, item) rows, keeping the first of each"
        )
        inter = inter[~same_part.to_numpy()].reset_index(drop=True)
        key = key[~same_part.to_numpy()].reset_index(drop=True)
    across = np.flatnonzero(key.duplicated().to_numpy())
    if len(across):
        row = inter.iloc[int(across[0])]
        first = inter.iloc[
            int(np.flatnonzero((key == key.iloc[across[0]]).to_numpy())[0])
        ]
        frame = parts[row["split"]]
        raise fail_at(
            frame,
            int(row["_pos"]),
            None,
            f"(user, item) pair also given in the {first['split'] or 'interactions'} part: a held-out "
            "pair must not be in training",
        )
    return inter


def _check_presplit(
    inter: pd.DataFrame, parts: dict, items: pd.DataFrame, users: pd.DataFrame
) -> None:
    warm = inter["split"].isin(["train", "valid", "test"])
    cold_item = inter["split"].isin(["cold_valid", "cold_test"])
    clash = cold_item & inter["item"].isin(inter.loc[warm, "item"])
    if clash.any():
        row = inter[clash].iloc[0]
        raise fail_at(
            parts[row["split"]],
            int(row["_pos"]),
            "item_id",
            f"cold item {items['item_id'].iloc[row['item']]!r} also has warm interactions",
        )
    cold_user = inter["split"].str.startswith("cold_user")
    clash = cold_user & inter["user"].isin(inter.loc[inter["split"] == "train", "user"])
    if clash.any():
        row = inter[clash].iloc[0]
        raise fail_at(
            parts[row["split"]],
            int(row["_pos"]),
            "user_id",
            f"cold user {users['user_id'].iloc[row['user']]!r} also has training interactions",
        )
