"""The canonical dataset: items, users and interactions with dense indices, saved as Parquet + JSON.

dataset/items.parquet         item_id (str) + text, image and attribute columns (str, "" when absent);
                              row i is item index i
dataset/users.parquet         user_id (str) + coarse attribute columns; row u is user index u
dataset/interactions.parquet  user (int32), item (int32), weight (float32), [timestamp (int64)],
                              split (str): "" before splitting, else one of SPLITS
dataset/triples.parquet       optional external knowledge: item (int32), relation (str), tail (str)
dataset/dataset.json          schema (column roles, images folder), counts, split settings
dataset/ids.json              {"users": [...], "items": [...]}: external id of each dense index
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from graphrec.core.errors import InputError
from graphrec.core.io import check_columns
from graphrec.core.records import Record
from graphrec.core.workspace import MAKE, Workspace
from graphrec.data.readers import normalize_id

# Parts of a split. Everything but "train" is held out from training; "valid" and "cold_valid"
# (and "cold_user_valid") may be used for model selection, the "*test" parts only for the final report.
SPLITS = (
    "train",
    "valid",
    "test",
    "cold_valid",
    "cold_test",
    "cold_user_context",
    "cold_user_valid",
    "cold_user_test",
)
HELD_OUT = tuple(s for s in SPLITS if s != "train")
# Every interaction the system was given: excluded from its lists, never counted as a hit.
GIVEN = ("train", "valid", "cold_valid", "cold_user_context")
# What the served model is refit on once validation has selected it (cold_valid only selects: refitting on
# it would turn the cold items it shares with cold_test warm). In serve mode, every part (`Dataset.refit_parts`).
TRAINED = ("train", "valid")
SERVE = "serve"  # schema.split["mode"] of the split `graphrec train` makes to choose settings on an unsplit dataset


def excluded_from_lists(schema: Schema) -> str:
    """What graphrec's lists leave out of a dataset with this schema, in words (its mode)."""
    if not schema.split:
        return "serve mode (the dataset is not split): every interaction a user has is left out of their list"
    return (
        f"evaluate mode (a split dataset): lists leave out what the system was given ({', '.join(GIVEN)}); a "
        "user's test items can appear: they are what `graphrec evaluate` scores"
    )


REMAKE = f"re-run `{MAKE['dataset']}`"  # what rewrites dataset/ whole
# The structure of dataset/'s files as Dataset.load checks it (the module docstring describes them).
INTERACTIONS = {
    "user": "int",
    "item": "int",
    "weight": "float",
    "timestamp?": "int",
    "split": "str",
}
TRIPLES = {"item": "int", "relation": "str", "tail": "str"}


@dataclass
class Schema(Record):
    """Which column plays which role. Multi-valued cells separate values with `sep`."""

    name: str = "dataset"
    text_columns: list[str] = field(default_factory=list)
    attribute_columns: list[str] = field(default_factory=list)
    image_column: str | None = None
    images_dir: str | None = None
    user_attribute_columns: list[str] = field(default_factory=list)
    sep: str = "|"
    # how the split was made ({} = not split)
    split: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetRecord(Record):
    """dataset/dataset.json: the schema, and counts of the tables for people."""

    schema: Schema
    counts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetIds(Record):
    """dataset/ids.json: the external id of each dense user and item index."""

    users: list[str]
    items: list[str]


@dataclass
class Dataset:
    schema: Schema
    items: pd.DataFrame
    users: pd.DataFrame
    interactions: pd.DataFrame
    triples: pd.DataFrame | None = None

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def item_ids(self) -> np.ndarray:
        return self.items["item_id"].to_numpy()

    @property
    def user_ids(self) -> np.ndarray:
        return self.users["user_id"].to_numpy()

    @property
    def is_split(self) -> bool:
        return bool(self.schema.split)

    @property
    def mode(self) -> str:
        """ "serve" for the split `data.splits.selection_split` makes of a dataset that is not split (it only
        chooses settings: nothing is held out), else "evaluate"."""
        return SERVE if self.schema.split.get("mode") == SERVE else "evaluate"

    @property
    def refit_parts(self) -> tuple[str, ...]:
        """What the served model is refit on once validation has chosen its settings: TRAINED, or every part in
        serve mode."""
        return SPLITS if self.mode == SERVE else TRAINED

    def part(self, *names: str) -> pd.DataFrame:
        """Interactions of the given split parts (e.g. `part("train")`, `part("train", "valid")`). A dataset
        that is not split is all training data (serve mode: every interaction is given, none held out), so its
        interactions are the "train" part."""
        bad = [n for n in names if n not in SPLITS]
        if bad:
            raise ValueError(f"unknown split part(s) {bad}; known: {SPLITS}")
        return self.interactions[
            self.interactions["split"].isin([*names, ""] if "train" in names else names)
        ]

    def item_labels(self) -> list[str]:
        """Readable item names: the title (or name, or first text) column, else the item id."""
        col = next((c for c in ("title", "name") if c in self.items.columns), None)
        col = col or (
            self.schema.text_columns[0] if self.schema.text_columns else "item_id"
        )
        names = self.items[col].astype(str)
        return names.where(names != "", self.items["item_id"].astype(str)).tolist()

    def warm_items(self, parts: Sequence[str] = TRAINED) -> np.ndarray:
        """bool [n_items]: the items with an interaction in `parts` (the one rule for "warm"; the rest are cold).

        The default is what the served model was trained on; selection on validation uses ("train",)."""
        warm = np.zeros(self.n_items, bool)
        warm[self.part(*parts)["item"].to_numpy()] = True
        return warm

    def matrix(self, parts: Sequence[str]) -> sp.csr_matrix:
        """Binary float32 CSR [n_users, n_items] of the interactions in the given parts (a repeat counts once)."""
        inter = self.part(*parts)
        m = sp.csr_matrix(
            (
                np.ones(len(inter), np.float32),
                (inter["user"].to_numpy(), inter["item"].to_numpy()),
            ),
            shape=(self.n_users, self.n_items),
        )
        m.data[:] = 1.0
        return m

    def attribute_values(self, column: str, table: str = "items") -> list[list[str]]:
        """Per-row lists of the values of a multi-valued column (empty cells give [])."""
        frame = self.items if table == "items" else self.users
        return [
            [v.strip() for v in s.split(self.schema.sep) if v.strip()] if s else []
            for s in frame[column]
        ]

    def item_index(self, ids: str | Sequence[str]) -> np.ndarray:
        return _lookup(self.item_ids, ids, "item")

    def user_index(self, ids: str | Sequence[str]) -> np.ndarray:
        return _lookup(self.user_ids, ids, "user")

    def cold_items(self) -> np.ndarray:
        """Indices of items with interactions in the held-out cold-item parts."""
        return np.unique(self.part("cold_valid", "cold_test")["item"].to_numpy())

    def cold_users(self) -> np.ndarray:
        return np.unique(
            self.part("cold_user_context", "cold_user_valid", "cold_user_test")[
                "user"
            ].to_numpy()
        )

    # -- persistence -------------------------------------------------------------------------------
    def save(self, workspace: Workspace | str | Path) -> Path:
        ws = Workspace.of(workspace)
        target = ws.stage_dir("dataset")
        with ws.new_stage("dataset") as tmp:
            self.items.to_parquet(tmp / "items.parquet", index=False)
            self.users.to_parquet(tmp / "users.parquet", index=False)
            self.interactions.to_parquet(tmp / "interactions.parquet", index=False)
            if self.triples is not None:
                self.triples.to_parquet(tmp / "triples.parquet", index=False)
            DatasetRecord(self.schema, self.counts()).write(tmp / "dataset.json")
            DatasetIds(self.user_ids.tolist(), self.item_ids.tolist()).write(
                tmp / "ids.json"
            )
        return target

    @staticmethod
    def load_schema(workspace: Workspace | str | Path) -> Schema:
        """dataset/'s schema alone (dataset.json, checked), without reading the tables."""
        return _read_schema(Workspace.of(workspace).require("dataset"))

    @classmethod
    def load(cls, workspace: Workspace | str | Path) -> Dataset:
        ws = Workspace.of(workspace)
        d = ws.require("dataset")
        ds = cls(
            _read_schema(d),
            _read_table(d / "items.parquet"),
            _read_table(d / "users.parquet"),
            _read_table(d / "interactions.parquet"),
            _read_table(d / "triples.parquet")
            if (d / "triples.parquet").exists()
            else None,
        )
        ds._check(d)
        return ds

    def _check(self, folder: Path) -> None:
        """The tables' columns and types (dataset/ as documented above), the schema's columns, indices in range
        and ids.json agreeing with the tables: what every stage relies on without looking again."""
        self._check_entity_tables(folder)
        self._check_ids(folder)
        self._check_interactions(folder / "interactions.parquet")
        if self.triples is not None:
            check_columns(self.triples, TRIPLES, folder / "triples.parquet", REMAKE)
            _check_index(self.triples, "item", self.n_items, folder / "triples.parquet")

    def _check_entity_tables(self, folder: Path) -> None:
        """items.parquet and users.parquet: text columns only (the id among them), each column the schema names."""
        schema = self.schema
        for name, frame, id_column, roles in (
            (
                "items",
                self.items,
                "item_id",
                [*schema.text_columns, *schema.attribute_columns, schema.image_column],
            ),
            ("users", self.users, "user_id", schema.user_attribute_columns),
        ):
            path = folder / f"{name}.parquet"
            check_columns(
                frame,
                {id_column: "str", **{c: "str" for c in frame.columns}},
                path,
                REMAKE,
            )
            missing = [c for c in roles if c and c not in frame.columns]
            if missing:
                raise InputError(
                    f"named in dataset.json's schema, but missing: {REMAKE}",
                    file=path,
                    column=missing[0],
                )

    def _check_ids(self, folder: Path) -> None:
        """ids.json lists the tables' user and item ids, in their row order."""
        ids = DatasetIds.read(folder / "ids.json", REMAKE)
        for kind, listed, known in (
            ("users", ids.users, self.user_ids),
            ("items", ids.items, self.item_ids),
        ):
            if listed != known.tolist():
                raise InputError(
                    f"'{kind}' ({len(listed)} ids) disagrees with {kind}.parquet ({len(known)} rows): "
                    f"{REMAKE}",
                    file=folder / "ids.json",
                )

    def _check_interactions(self, path: Path) -> None:
        """interactions.parquet: its columns and types, indices in range and known split parts only."""
        check_columns(self.interactions, INTERACTIONS, path, REMAKE)
        _check_index(self.interactions, "user", self.n_users, path)
        _check_index(self.interactions, "item", self.n_items, path)
        unknown = set(self.interactions["split"].unique()) - {"", *SPLITS}
        if unknown:
            raise InputError(
                f"unknown split part {sorted(map(str, unknown))[0]!r}: {REMAKE}",
                file=path,
                column="split",
            )

    def counts(self) -> dict[str, Any]:
        parts = self.interactions["split"].value_counts().to_dict()
        return {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": len(self.interactions),
            "parts": {k: int(v) for k, v in sorted(parts.items()) if k},
            "triples": 0 if self.triples is None else len(self.triples),
        }


def _read_schema(d: Path) -> Schema:
    """The schema in dataset/'s dataset.json, checked (DatasetRecord)."""
    return DatasetRecord.read(d / "dataset.json", REMAKE).schema


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for damaged files
        raise InputError(f"damaged dataset table ({e}): {REMAKE}", file=path) from None


def _check_index(frame: pd.DataFrame, column: str, n: int, path: Path) -> None:
    """A column of dense indices must point at rows of the table it indexes ({column}s.parquet, n rows)."""
    values = frame[column].to_numpy()
    if len(values) and (values.min() < 0 or values.max() >= n):
        raise InputError(
            f"indices must point at rows of {column}s.parquet ({n} rows): {REMAKE}",
            file=path,
            column=column,
        )


def _lookup(known: np.ndarray, ids: str | Sequence[str], kind: str) -> np.ndarray:
    wanted = np.asarray([normalize_id(i) for i in np.atleast_1d(ids)], dtype=object)
    index = pd.Index(known)
    pos = index.get_indexer(wanted)
    if (pos < 0).any():
        missing = wanted[pos < 0][:5].tolist()
        raise InputError(f"unknown {kind} id(s): {', '.join(map(str, missing))}")
    return pos.astype(np.int64)
