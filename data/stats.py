"""Summary figures of a canonical dataset, as `graphrec data stats` prints them."""

from __future__ import annotations

from typing import Any

import numpy as np

from graphrec.data.dataset import Dataset


def dataset_stats(ds: Dataset) -> dict[str, Any]:
    inter = ds.interactions
    n_u, n_i, n = ds.n_users, ds.n_items, len(inter)
    per_user = np.bincount(inter["user"].to_numpy(), minlength=n_u)
    per_item = np.bincount(inter["item"].to_numpy(), minlength=n_i)
    out: dict[str, Any] = {
        "name": ds.schema.name,
        "users": n_u,
        "items": n_i,
        "interactions": n,
        "density": n / max(1, n_u * n_i),
        "interactions_per_user": _summary(per_user),
        "interactions_per_item": _summary(per_item),
        "items_without_interactions": int((per_item == 0).sum()),
        "has_timestamp": "timestamp" in inter.columns,
        "split": ds.schema.split or "not split (run `graphrec data split`)",
        "parts": ds.counts()["parts"],
        "cold_items": int(len(ds.cold_items())),
        "cold_users": int(len(ds.cold_users())),
        "text_columns": ds.schema.text_columns,
        "attributes": {
            c: _distinct(ds, c, "items") for c in ds.schema.attribute_columns
        },
        "user_attributes": {
            c: _distinct(ds, c, "users") for c in ds.schema.user_attribute_columns
        },
    }
    if ds.schema.image_column:
        out["items_with_image"] = int((ds.items[ds.schema.image_column] != "").sum())
    if ds.triples is not None:
        out["triples"] = len(ds.triples)
    return out


def _summary(x: np.ndarray) -> dict[str, float]:
    return {
        "min": int(x.min()),
        "median": float(np.median(x)),
        "mean": round(float(x.mean()), 2),
        "max": int(x.max()),
    }


def _distinct(ds: Dataset, column: str, table: str) -> int:
    return len({v for vals in ds.attribute_values(column, table) for v in vals})
