"""Live updates: fold new items, users and interactions into a trained workspace without retraining.

What an update does, given files of new items / users / interactions (read like `data import` reads them):
  dataset   new rows appended (items and users keep their indices; new interactions are "train" rows)
  features  only the new items are encoded (run_encode's content-hash cache); the lexical modality keeps
            its trained basis and folds the new texts into it (a re-fit would change every item's vector)
  graph     attribute, triple and interaction edges from the extended dataset; existing attribute/entity
            nodes keep their indices (new values are appended), content kNN lists are extended with the
            new items exactly as a full build would rank them, at O(n_old * n_new) instead of O(n^2)
  model     every embedding recomputed by the trained parameters over the extended graph, i.e. the model's
            own forward pass: new items get the content path (no collaborative signal), new interactions
            enter the propagation without a trained ID row (as the train stage treats cold-user context),
            new users are embedded from their attributes and their neighbourhood. The parameters are not
            touched. The ranker keeps its fitted blend and treats new items as cold.
Existing item ids in --items are an error (content changes need a re-import and a retrain).
Each step is its stage's own function (graphrec.data.append.grow_dataset, graphrec.stages.encode.encode_new_items,
graphrec.kg.extend.extend_graph, graphrec.stages.train.updated_embeddings,
graphrec.model.artifacts.extend_select_embeddings, graphrec.stages.rank.extend_ranker); this module holds only the
transaction: staging, the log, journal, switch.

Log: model/updates.json names the parameters (sha256 of model.safetensors) the updates were made for and
how many users / items / interaction rows those parameters were trained with; rows after that came from
updates. A retrain makes the log start over.

Atomicity: everything is validated and computed in a staging workspace (Workspace.staging: the grown
dataset/, features/ and graph/, a hard-linked copy of model/ with the new embeddings, ranker and log, and the
config); Workspace.switch then puts the folders and config.json in place through its journal, all or nothing.
A kill before the journal leaves the workspace as it was; after it, the next graphrec command finishes the
switch (or discards it where a target changed by other means since: never replayed over newer work).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from graphrec.core.errors import InputError
from graphrec.core.feature_store import Features, load_features
from graphrec.core.io import file_sha256
from graphrec.core.workspace import LINEAGE, Workspace, fingerprints, writes
from graphrec.data.append import grow_dataset
from graphrec.data.dataset import Dataset
from graphrec.kg.extend import extend_graph
from graphrec.kg.graph import KnowledgeGraph
from graphrec.model import artifacts
from graphrec.model.gnn import GraphRec, TrainedModel
from graphrec.stages.encode import encode_new_items
from graphrec.stages.rank import extend_ranker
from graphrec.stages.train import load_model, updated_embeddings


@dataclass
class UpdateResult:
    items_added: int
    users_added: int
    interactions_added: int
    duplicates_skipped: int
    encoded: dict[str, int]  # modality -> items encoded (or folded in) by this update
    users_changed: int  # users whose embedding moved by more than 1e-6 (relative)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- the update stage ------------------------------------------------------------------------------------
@writes
def run_update(
    workspace: Workspace | str | Path,
    interactions: str | os.PathLike | None = None,
    items: str | os.PathLike | None = None,
    users: str | os.PathLike | None = None,
    *,
    encoding: str = "utf-8",
    progress: bool = True,
) -> UpdateResult:
    """Fold new items / users / interactions into a trained workspace; all or nothing.

    The `graphrec update` stage (see the module doc): the new rows are appended to dataset/, only
    the new items are encoded, the graph is extended, and every embedding is recomputed by the
    trained parameters, which are not touched; the ranker keeps its fitted blend and treats new
    items as cold. Everything is staged first, then switched in at once under the workspace lock.

    Args:
        workspace: The trained workspace (or its folder).
        interactions: A file of new interactions (user_id, item_id, optional timestamp and rating or
            weight), read like `data import` reads them; they become "train" rows.
        items: A file of new items with the dataset's columns; an item id already in the dataset is
            an error (content changes need a re-import and a retrain).
        users: A file of new users with the dataset's columns.
        encoding: The text encoding of CSV files.
        progress: Show progress bars.

    Returns:
        The `UpdateResult`: the items, users and interactions added, the duplicates skipped, the
        items encoded per modality, the users whose embedding moved, the seconds per step, and
        notes.

    Raises:
        InputError: On bad input: no file given, an item id already in the dataset, an unreadable
            file or a bad row, or a workspace without a trained model.

    Example::

        from graphrec.stages.update import run_update

        result = run_update("ws", interactions="new_clicks.csv", items="new_items.csv")
    """
    ws = Workspace.of(workspace)
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    ds = Dataset.load(ws)
    trained = load_model(ws)
    log = _current_log(ws, ds, trained.model)
    added = grow_dataset(ds, interactions, items, users, encoding=encoding)
    notes = list(added.notes)
    grown = added.dataset
    files = {"interactions": interactions, "items": items, "users": users}
    seconds["read"] = time.perf_counter() - t0
    with ws.staging() as sws:
        moves = _stage_dataset(ws, sws, grown)
        content = _grow_content(
            ws, sws, ds, grown, added.items_added, moves, seconds, progress, notes
        )
        t = time.perf_counter()
        users_changed = _stage_model(
            ws, sws, ds, grown, trained, content, log["trained"]["interactions"]
        )
        _stage_log(
            ws, sws, ds, grown, log, added.duplicates_skipped, moves, files, encoding
        )
        seconds["embed"] = time.perf_counter() - t
        _switch_in(ws, sws, moves + ["model"])
    seconds["total"] = time.perf_counter() - t0
    return UpdateResult(
        added.items_added,
        added.users_added,
        added.interactions_added,
        added.duplicates_skipped,
        content.encoded,
        users_changed,
        {k: round(v, 3) for k, v in seconds.items()},
        notes,
    )


def _stage_dataset(ws: Workspace, sws: Workspace, grown: Dataset) -> list[str]:
    """Stage the config and the grown dataset/; the stages staged so far (the list later steps add theirs to)."""
    if ws.config_path.exists():
        shutil.copy2(ws.config_path, sws.config_path)
    grown.save(sws)
    return ["dataset"]


def _switch_in(ws: Workspace, sws: Workspace, moves: list[str]) -> None:
    """Put the staged stages `moves` and the staged config in place, all or nothing."""
    ws.switch(
        [(sws.stage_dir(st), ws.stage_dir(st)) for st in moves]
        + [(sws.config_path, ws.config_path)],
        sws,
    )


@dataclass(frozen=True)
class _GrownContent:
    encoded: dict[str, int]  # modality -> items encoded (or folded in)
    features: dict[str, Features]  # the features the grown dataset is served with
    graph: KnowledgeGraph | None  # the extended graph (None: the workspace has none)


def _grow_content(
    ws: Workspace,
    sws: Workspace,
    ds: Dataset,
    grown: Dataset,
    items_added: int,
    moves: list[str],
    seconds: dict[str, float],
    progress: bool,
    notes: list[str],
) -> _GrownContent:
    """Stage the features of the new items and the extended graph in `sws` (each stage it rewrote is added to
    `moves`); the features and graph the model is refreshed over."""
    encoded: dict[str, int] = {}
    features_dir = ws.stage_dir("features")
    if items_added and features_dir.is_dir():
        t = time.perf_counter()
        # the encode cache reads the old vectors
        shutil.copytree(features_dir, sws.stage_dir("features"))
        encoded = encode_new_items(ws, sws, ds, grown, progress, notes)
        moves.append("features")
        seconds["encode"] = time.perf_counter() - t
    features = (
        load_features(sws if "features" in moves else ws)
        if features_dir.is_dir()
        else {}
    )
    kg = None
    if ws.stage_dir("graph").is_dir():
        t = time.perf_counter()
        kg = extend_graph(
            KnowledgeGraph.load(ws), grown, features, ds.n_items, progress
        )
        kg.save(sws)
        moves.append("graph")
        seconds["graph"] = time.perf_counter() - t
    return _GrownContent(encoded, features, kg)


def _stage_model(
    ws: Workspace,
    sws: Workspace,
    ds: Dataset,
    grown: Dataset,
    trained: TrainedModel,
    content: _GrownContent,
    trained_rows: int,
) -> int:
    """The staged model/: the same parameters, every embedding recomputed by them over the grown data and
    content, the ranker grown to the new items; how many users' embeddings changed (new users included)."""
    user_emb, item_emb = updated_embeddings(
        trained, grown, content.graph, content.features, trained_rows
    )
    old_user = trained.user
    moved = np.linalg.norm(
        user_emb[: len(old_user)] - old_user, axis=1
    ) > 1e-6 * np.maximum(np.linalg.norm(old_user, axis=1), 1.0)
    # parameters and checkpoints stay; what follows replaces the rest
    artifacts.copy_model(ws, sws)
    artifacts.write_embeddings(sws, user_emb, item_emb)
    artifacts.extend_select_embeddings(ws, sws, ds, user_emb, item_emb)
    extend_ranker(ws, sws, ds, grown)
    return int(moved.sum()) + len(user_emb) - len(old_user)


def _stage_log(
    ws: Workspace,
    sws: Workspace,
    ds: Dataset,
    grown: Dataset,
    log: dict[str, Any],
    duplicates: int,
    moves: list[str],
    files: dict[str, str | os.PathLike | None],
    encoding: str,
) -> None:
    """The update log entry and the config record of this update, in `sws`."""
    paths = {k: None if v is None else str(Path(v).resolve()) for k, v in files.items()}
    log["updates"].append(
        {
            "finished": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
            "items": [ds.n_items, grown.n_items],
            "users": [ds.n_users, grown.n_users],
            "interactions": [len(ds.interactions), len(grown.interactions)],
            "duplicates_skipped": duplicates,
            "files": paths,
        }
    )
    final = {st: (sws if st in moves else ws).stage_dir(st) for st in LINEAGE}
    log["after"] = fingerprints(final)
    artifacts.write_update_log(sws, log)
    sws.record(
        "update",
        {**paths, "encoding": encoding},
        inputs={k: file_sha256(v) for k, v in files.items() if v is not None},
    )
    # the stages it rewrote were made from the grown data
    sws.relink(["features", "graph", "model"], final)


def _current_log(ws: Workspace, ds: Dataset, model: GraphRec) -> dict[str, Any]:
    """The update log valid for the current parameters, or a fresh one; refuses a workspace changed since."""
    sha = artifacts.parameters_sha256(ws)
    log = artifacts.read_update_log(ws)
    if log is not None and log.get("model_sha256") == sha:
        changed = [
            k
            for k, v in fingerprints({s: ws.stage_dir(s) for s in LINEAGE}).items()
            if log.get("after", {}).get(k) != v
        ]
        if changed:
            raise InputError(
                f"{changed[0]} changed since the last update (re-imported, re-encoded or rebuilt?): "
                "retrain with `graphrec train` before updating",
                file=ws.path / changed[0],
            )
        return log
    if (model.n_users, model.n_items) != (ds.n_users, ds.n_items):
        raise InputError(
            f"the model was trained for {model.n_users} users and {model.n_items} items, the dataset "
            f"has {ds.n_users} and {ds.n_items}: retrain with `graphrec train`",
            file=artifacts.model_dir(ws),
        )
    return {
        "model_sha256": sha,
        "trained": {
            "users": ds.n_users,
            "items": ds.n_items,
            "interactions": len(ds.interactions),
        },
        "updates": [],
    }
