"""A small hand-made split workspace (dataset + knowledge graph + one feature modality) for model tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from graphrec.core.feature_store import Features, save_features
from graphrec.core.workspace import Workspace
from graphrec.data.dataset import Dataset, Schema
from graphrec.kg.graph import EdgeSet, KnowledgeGraph


def genre_workspace(
    path: Path, n_users: int = 40, n_items: int = 60, seed: int = 0
) -> Workspace:
    """Items in 4 genres; each user prefers one genre. 20% of items cold, 4 users cold with 2 context items."""
    rng = np.random.default_rng(seed)
    genre = rng.integers(4, size=n_items)
    taste = rng.integers(4, size=n_users)
    rows = []
    for u in range(n_users):
        liked = np.flatnonzero(genre == taste[u])
        other = np.flatnonzero(genre != taste[u])
        picks = np.concatenate(
            [
                rng.choice(liked, min(8, len(liked)), replace=False),
                rng.choice(other, 2, replace=False),
            ]
        )
        rows += [(u, int(i)) for i in picks]
    inter = pd.DataFrame(rows, columns=["user", "item"]).astype("int32")
    inter["weight"] = np.float32(1.0)
    cold_item = np.zeros(n_items, bool)
    cold_item[rng.choice(n_items, n_items // 5, replace=False)] = True
    cold_user = np.zeros(n_users, bool)
    cold_user[-4:] = True
    split = np.full(len(inter), "train", dtype=object)
    r = rng.random(len(inter))
    split[r < 0.15] = "valid"
    ic = cold_item[inter["item"].to_numpy()]
    split[ic] = np.where(rng.random(ic.sum()) < 0.5, "cold_valid", "cold_test")
    uc = cold_user[inter["user"].to_numpy()] & ~ic
    uc_rows = np.flatnonzero(uc)
    split[uc_rows] = "cold_user_valid"
    # first two interactions of a cold user are its context
    for u in np.flatnonzero(cold_user):
        split[uc_rows[inter["user"].to_numpy()[uc_rows] == u][:2]] = "cold_user_context"
    inter["split"] = split.astype(str)
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "genre": [f"g{g}" for g in genre],
        }
    )
    users = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in range(n_users)],
            "band": [f"b{t % 2}" for t in taste],
        }
    )
    schema = Schema(
        name="tiny",
        attribute_columns=["genre"],
        user_attribute_columns=["band"],
        split={"method": "test-fixture"},
    )
    ws = Workspace(path)
    Dataset(schema, items, users, inter).save(ws)
    kg = KnowledgeGraph(
        {"user": n_users, "item": n_items, "genre": 4, "band": 2},
        {
            ("user", "interacts", "item"): EdgeSet(
                np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
            ),
            ("item", "has_genre", "genre"): EdgeSet(
                np.arange(n_items), genre.astype(np.int64), np.ones(n_items, np.float32)
            ),
            ("user", "has_band", "band"): EdgeSet(
                np.arange(n_users),
                (taste % 2).astype(np.int64),
                np.ones(n_users, np.float32),
            ),
        },
        {"genre": [f"g{g}" for g in range(4)], "band": ["b0", "b1"]},
    )
    kg.save(ws)
    values = np.eye(4, dtype=np.float32)[genre] + 0.3 * rng.standard_normal(
        (n_items, 4)
    ).astype(np.float32)
    mask = rng.random(n_items) > 0.1
    save_features(
        ws.stage_dir("features"),
        Features(
            "text",
            values * mask[:, None],
            mask,
            {"item_ids": items["item_id"].tolist(), "random_weights": True},
        ),
    )
    return ws
