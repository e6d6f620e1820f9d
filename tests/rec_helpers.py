"""A small pre-split workspace with planted structure, features and embeddings, for the ranking tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from graphrec.core.feature_store import Features, save_features
from graphrec.core.io import read_json, write_json, write_tensors
from graphrec.core.workspace import Workspace
from graphrec.data.dataset import Dataset
from graphrec.data.importer import import_files
from graphrec.model import artifacts
from graphrec.stages.rank import (
    Ranker,
    RankSettings,
    fit_blend,
    save_ranker,
    serve_embeddings,
)


def served_workspace(
    root: Path,
    n_users: int = 60,
    n_items: int = 90,
    n_cold: int = 15,
    per_user: int = 18,
    dim: int = 8,
    seed: int = 0,
    features: bool = True,
    embeddings: bool = True,
    ranker: bool = True,
) -> Workspace:
    """Users like items whose latent factors match theirs; the last `n_cold` items are cold (held out whole).
    Embeddings: truncated SVD of the training matrix for warm items, a content regression for cold ones.
    ranker: fit the ranker on them and save it in model/, as `graphrec train` does, so readers can serve."""
    rng = np.random.default_rng(seed)
    p, q = rng.normal(size=(n_users, 4)), rng.normal(size=(n_items, 4))
    affinity = p @ q.T + 0.3 * rng.normal(size=(n_users, n_items))
    chosen = np.argsort(-affinity, axis=1)[:, :per_user]
    users = np.repeat(np.arange(n_users), per_user)
    items = chosen.ravel()
    cold = items >= n_items - n_cold
    order = rng.permutation(len(items))
    part = np.full(len(items), "train", dtype=object)
    draw = rng.random(len(items))
    part[(draw < 0.12)] = "test"
    part[(draw >= 0.12) & (draw < 0.24)] = "valid"
    part[cold] = np.where(rng.random(int(cold.sum())) < 0.5, "cold_valid", "cold_test")
    train_items = set(items[part == "train"])
    move = np.isin(part, ["valid", "test"]) & ~np.isin(items, list(train_items))
    part[move] = "train"
    root.mkdir(parents=True, exist_ok=True)
    ids_u = np.array([f"u{i}" for i in range(n_users)], dtype=object)
    ids_i = np.array([f"m{i}" for i in range(n_items)], dtype=object)
    files = {}
    for name in ("train", "valid", "test", "cold_valid", "cold_test"):
        sel = order[part[order] == name]
        f = root / f"{name}.csv"
        pd.DataFrame(
            {"user_id": ids_u[users[sel]], "item_id": ids_i[items[sel]], "rating": 4}
        ).to_csv(f, index=False)
        files[name] = str(f)
    pd.DataFrame(
        {
            "item_id": ids_i,
            "title": [f"Film {i}" for i in range(n_items)],
            "genres": [("Drama" if q[i, 0] > 0 else "Comedy") for i in range(n_items)],
        }
    ).to_csv(root / "items.csv", index=False)
    pd.DataFrame(
        {
            "user_id": ids_u,
            "gender": rng.choice(["F", "M"], n_users),
            "age_band": rng.choice(["18-24", "25-34"], n_users),
        }
    ).to_csv(root / "users.csv", index=False)
    ws = Workspace(root / "ws")
    ds, _ = import_files(
        ws.path,
        items=str(root / "items.csv"),
        users=str(root / "users.csv"),
        user_attribute_columns=["gender", "age_band"],
        **files,
    )
    order_i = ds.item_index(ids_i)  # dataset index of each planted item
    content = np.zeros((n_items, 6), np.float32)
    content[order_i] = np.concatenate([q, 0.2 * rng.normal(size=(n_items, 2))], axis=1)
    if features:
        meta = {
            "item_ids": read_json(ws.stage_dir("dataset") / "ids.json")["items"],
            "model": "planted-test",
            "random_weights": False,
        }
        save_features(
            ws.stage_dir("features"),
            Features("text", content, np.ones(n_items, bool), meta),
        )
    if embeddings:
        write_embeddings(ws, content, dim)
        if ranker:
            save_ranker(ws, fit_ranker(ws))  # hand-made: no writer stages this model/
    return ws


def fit_ranker(
    workspace: Workspace | Path, settings: RankSettings | None = None
) -> Ranker:
    """The ranker for model/'s hand-made embeddings, fitted as `graphrec train` fits one without a refit: the
    blend on those embeddings, then served with them."""
    ws = Workspace.of(workspace)
    ds = Dataset.load(ws)
    user, item, _ = artifacts.read_embeddings(ws, ds)
    blend = fit_blend(ws, (user, item), settings, ds=ds, progress=False)
    return serve_embeddings(
        blend, user, item, artifacts.embeddings_sha256(ws), refit=False
    )


def write_embeddings(ws: Workspace, content: np.ndarray, dim: int) -> None:
    ds = Dataset.load(ws)
    tr = ds.part("train")
    x = np.zeros((ds.n_users, ds.n_items), np.float32)
    x[tr["user"].to_numpy(), tr["item"].to_numpy()] = 1.0
    uu, s, vt = np.linalg.svd(x, full_matrices=False)
    user = uu[:, :dim] * np.sqrt(s[:dim])
    item = vt[:dim].T * np.sqrt(s[:dim])
    warm = x.sum(axis=0) > 0
    coef, *_ = np.linalg.lstsq(content[warm], item[warm], rcond=None)
    item[~warm] = content[~warm] @ coef
    write_tensors(
        ws.stage_dir("model") / "embeddings.safetensors",
        {"user": user.astype(np.float32), "item": item.astype(np.float32)},
    )
    write_json(ws.stage_dir("model") / "model.json", {"scoring": "dot", "dim": dim})
