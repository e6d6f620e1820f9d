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

Log: model/updates.json names the parameters (sha256 of model.safetensors) the updates were made for and
how many users / items / interaction rows those parameters were trained with; rows after that came from
updates. A retrain makes the log start over.

Atomicity: everything is validated and computed in WS/.update-<id>/; then WS/update-journal.json (the
commit point) lists the renames that switch the staged artifacts in; the renames follow; the journal is
removed. A crash before the journal leaves the workspace as it was; after it, the next `update` (or
`recover_update`) finishes the renames.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from data.build import WEIGHT_COLUMNS, check_image_paths
from data.dataset import Dataset
from data.readers import check_ids, fail_at, numeric_column, read_table
from graphrec.errors import InputError
from graphrec.features import Features, load_features, save_features
from graphrec.io import file_sha256, read_json, read_tensors, write_json, write_tensors
from graphrec.model import GraphRec, load_model
from graphrec.workspace import Workspace
from kg.graph import EdgeSet, KnowledgeGraph

JOURNAL = "update-journal.json"
LOG = "updates.json"
# Parts whose pairs are already given to the system: a repeat is skipped. Pairs of the other (evaluation)
# parts, and interactions of held-out cold items / cold users, would leak into training: an error.
GIVEN = ("train", "valid", "cold_valid", "cold_user_context")


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


# -- reading and checking the update files ------------------------------------------------------------
def _new_entities(path: str | os.PathLike, table: pd.DataFrame, id_col: str, kind: str, encoding: str,
                  notes: list[str]) -> pd.DataFrame:
    """Rows of new items/users with the dataset table's columns; existing ids and missing columns are errors."""
    t = read_table(path, (id_col,), encoding)
    check_ids(t, id_col, unique=True)
    roles = [c for c in table.columns if c != id_col]
    missing = [c for c in roles if c not in t.columns]
    if missing:
        raise InputError(f"missing column of the dataset's {kind} table (it has: {', '.join(table.columns)})",
                         file=path, column=missing[0])
    known = np.flatnonzero(pd.Index(table[id_col]).get_indexer(t[id_col]) >= 0)
    if len(known):
        raise fail_at(t, int(known[0]), id_col, f"{kind} id {t[id_col].iloc[known[0]]!r} is already in the dataset "
                      "(updates add new ones; changed content needs a re-import and a retrain)")
    extra = [c for c in t.columns if c not in table.columns]
    if extra:
        notes.append(f"{Path(path).name}: ignored columns not in the dataset: {', '.join(extra)}")
    for c in roles:
        t[c] = t[c].fillna("").astype(str).str.strip()
    out = t[[id_col] + roles].reset_index(drop=True)
    out.attrs = t.attrs
    return out


def _new_interactions(path: str | os.PathLike, ds: Dataset, item_ids: pd.Index, user_ids: pd.Index,
                      encoding: str, notes: list[str]) -> tuple[pd.DataFrame, int, list[str]]:
    """Indexed "train" rows of the interactions file, how many repeated a pair already given, and the ids of
    users it names for the first time (indexed after `user_ids`, in order of appearance)."""
    t = read_table(path, ("user_id", "item_id"), encoding)
    for col in ("user_id", "item_id"):
        check_ids(t, col, unique=False)
    item = item_ids.get_indexer(t["item_id"])
    if (item < 0).any():
        at = int(np.flatnonzero(item < 0)[0])
        raise fail_at(t, at, "item_id", f"unknown item id {t['item_id'].iloc[at]!r} (not in the dataset or the "
                      "new items)")
    user = user_ids.get_indexer(t["user_id"])  # -1: a new user, added with blank attributes
    new_ids = [str(i) for i in pd.unique(t["user_id"][user < 0])]
    user[user < 0] = len(user_ids) + pd.Index(new_ids).get_indexer(t["user_id"][user < 0])
    cold_items, cold_users = ds.cold_items(), ds.cold_users()
    for col, idx, held, what in (("item_id", item, cold_items, "item"), ("user_id", user, cold_users, "user")):
        bad = np.flatnonzero(np.isin(idx, held))
        if len(bad):
            raise fail_at(t, int(bad[0]), col, f"{what} {t[col].iloc[bad[0]]!r} is held out as a cold {what} for "
                          "evaluation; training interactions for it would leak the test")
    n_i = len(item_ids)
    key = user.astype(np.int64) * n_i + item
    old = ds.interactions
    old_key = pd.Series(old["split"].to_numpy(), index=old["user"].to_numpy(np.int64) * n_i + old["item"].to_numpy())
    pos = pd.Index(old_key.index).get_indexer(key)
    held = np.flatnonzero((pos >= 0) & ~np.isin(old_key.to_numpy()[np.maximum(pos, 0)], GIVEN))
    if len(held):
        raise fail_at(t, int(held[0]), None, f"pair ({t['user_id'].iloc[held[0]]}, {t['item_id'].iloc[held[0]]}) "
                      f"is held out in the {old_key.iloc[pos[held[0]]]} part; training on it would leak the test")
    wcol = next((c for c in WEIGHT_COLUMNS if c in t.columns), None)
    weight = numeric_column(t, wcol).astype(np.float32) if wcol else np.ones(len(t), np.float32)
    rows = pd.DataFrame({"user": user.astype(np.int32), "item": item.astype(np.int32), "weight": weight})
    if "timestamp" in old.columns:  # live events without a time are stamped now
        rows["timestamp"] = (np.floor(numeric_column(t, "timestamp")).astype(np.int64) if "timestamp" in t.columns
                             else np.full(len(t), int(time.time()), np.int64))
    rows["split"] = "train"
    keep = (pos < 0) & ~pd.Series(key).duplicated().to_numpy()
    skipped = int((~keep).sum())
    if skipped:
        notes.append(f"{Path(path).name}: skipped {skipped} rows repeating a (user, item) pair already given")
    return rows[keep].reset_index(drop=True)[list(old.columns)], skipped, new_ids


# -- graph -------------------------------------------------------------------------------------------
def extend_graph(old: KnowledgeGraph, ds: Dataset, features: dict[str, Features], n_old_items: int,
                 progress: bool = True) -> KnowledgeGraph:
    """The old graph grown to the extended dataset `ds`: same node indices for everything that existed."""
    from kg.build import build_graph
    from kg.triples import read_entity_map, read_triples

    settings = old.meta.get("settings", {})
    extra = []
    if settings.get("triples"):
        emap = settings.get("entity_map")
        extra.append((read_triples(settings["triples"]), read_entity_map(emap) if emap else None))
    # Everything but kNN is linear in the data: rebuild it, then map node indices back to the old ones.
    fresh = build_graph(ds, None, 0, None, extra, bool(settings.get("allow_unsplit", False)), progress=False)
    remap: dict[str, np.ndarray] = {}
    names: dict[str, list[str]] = {}
    for t, new_names in fresh.node_names.items():
        old_names = list(old.node_names.get(t, []))
        added = [n for n in new_names if n not in set(old_names)]
        names[t] = old_names + added
        remap[t] = pd.Index(names[t]).get_indexer(pd.Index(new_names)).astype(np.int64)
    edges: dict[tuple[str, str, str], EdgeSet] = {}
    num_nodes = {t: len(names[t]) if t in names else n for t, n in fresh.num_nodes.items()}
    for (s, r, d), e in fresh.edges.items():
        src = remap[s][e.src] if s in remap else e.src
        dst = remap[d][e.dst] if d in remap else e.dst
        edges[(s, r, d)] = _sorted(src, dst, e.weight, num_nodes[d])
    for key, e in old.edges.items():
        if old.relation_kind(key) != "similarity":
            continue
        modality = key[1].removeprefix("similar_")
        k = int(old.meta.get("knn", {}).get(modality, {}).get("k", 0))
        if modality not in features or k <= 0:
            raise InputError(f"graph relation {key[1]} needs features of modality {modality!r}; re-run "
                             "`graphrec build` and `graphrec train`")
        f = features[modality]
        edges[key] = extend_knn(e, f.values, f.mask, n_old_items, k, progress)
    meta = {**old.meta, "relation_kinds": {**old.meta.get("relation_kinds", {}), **fresh.meta["relation_kinds"]},
            "triples": fresh.meta.get("triples", []), "updates": int(old.meta.get("updates", 0)) + 1}
    for modality, info in meta.get("knn", {}).items():
        if modality in features:
            info.update(items_with_content=int(features[modality].mask.sum()),
                        edges=len(edges[("item", f"similar_{modality}", "item")]))
    meta["num_edges"] = {"|".join(k): len(e) for k, e in edges.items()}
    return KnowledgeGraph(num_nodes, edges, {t: list(v) for t, v in names.items()}, meta)


def _sorted(src: np.ndarray, dst: np.ndarray, weight: np.ndarray, n_dst: int) -> EdgeSet:
    order = np.argsort(src.astype(np.int64) * max(1, n_dst) + dst, kind="stable")
    return EdgeSet(src[order].astype(np.int64), dst[order].astype(np.int64), weight[order].astype(np.float32))


def extend_knn(old: EdgeSet, values: np.ndarray, mask: np.ndarray, n_old: int, k: int,
               progress: bool = True, block_cells: int = 1 << 25) -> EdgeSet:
    """kNN edges (as kg.build.knn_edges makes them) after items >= n_old were added: the new items' lists
    over everyone, and each old item's list merged with its best new neighbours. Cost O(n * n_new)."""
    from tqdm.auto import tqdm

    idx = np.flatnonzero(mask)
    new = idx[idx >= n_old]
    k = min(k, len(idx) - 1)
    if len(new) == 0 or k <= 0:
        return old
    x = torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(values[idx], np.float32)), dim=1)
    pos_new = np.searchsorted(idx, new)
    xn = x[torch.from_numpy(pos_new)]
    src, dst, sim = [old.src], [old.dst], [old.weight]
    block = max(1, block_cells // len(idx))
    steps = range(0, len(new), block)
    for s in tqdm(steps, desc="kNN of new items", unit="block", disable=not progress or len(steps) < 2):
        rows = torch.from_numpy(pos_new[s:s + block])
        sc = xn[s:s + block] @ x.T
        sc[torch.arange(len(rows)), rows] = -float("inf")  # not its own neighbour
        v, j = sc.topk(k, dim=1)
        src.append(np.repeat(new[s:s + block], k))
        dst.append(idx[j.numpy().ravel()])
        sim.append(v.numpy().ravel())
    old_rows = np.flatnonzero(idx < n_old)
    kn = min(k, len(new))
    block = max(1, block_cells // len(new))
    for s in range(0, len(old_rows), block):  # old items: only new items can enter their lists
        rows = old_rows[s:s + block]
        v, j = (x[torch.from_numpy(rows)] @ xn.T).topk(kn, dim=1)
        src.append(np.repeat(idx[rows], kn))
        dst.append(new[j.numpy().ravel()])
        sim.append(v.numpy().ravel())
    src, dst, sim = np.concatenate(src), np.concatenate(dst), np.concatenate(sim).astype(np.float32)
    order = np.lexsort((dst, -sim, src))  # per item, the most similar first (index breaks ties)
    src, dst, sim = src[order], dst[order], sim[order]
    start = np.searchsorted(src, src, side="left")
    keep = (np.arange(len(src)) - start < k) & (sim > 0)
    return _sorted(src[keep], dst[keep], sim[keep], int(max(values.shape[0], 1)))


# -- embeddings ---------------------------------------------------------------------------------------
@torch.no_grad()
def refresh_embeddings(model: GraphRec, ds: Dataset, kg: KnowledgeGraph | None, features: dict[str, Features],
                       trained: tuple[np.ndarray, np.ndarray], extra: tuple[np.ndarray, np.ndarray] | None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Exported (user [U, d+1], item [I, d+1]) of the trained parameters over the extended dataset and graph.

    `trained`: the (user, item) pairs the parameters were trained on (they decide which nodes have an ID
    embedding and which items are warm); `extra`: pairs propagated over without ID embeddings. Rows the
    parameters lack (new users, items, attribute values) start at zero, so with no new data this returns
    exactly what the train stage exported."""
    from graphrec.propagation import build_inputs

    cfg = model.config()
    types = {t: int(kg.num_nodes.get(t, n)) if kg is not None else n for t, n in cfg["node_types"].items()}
    grown = GraphRec(ds.n_users, ds.n_items, cfg["dim"], cfg["layers"], cfg["modality_dims"], types)
    state = {}
    for name, v in model.state_dict().items():
        target = grown.state_dict()[name]
        if target.shape != v.shape:  # ID and attribute tables: trained rows first, new rows zero
            v = torch.cat([v, torch.zeros(target.shape[0] - v.shape[0], *v.shape[1:], dtype=v.dtype)])
        state[name] = v
    grown.load_state_dict(state)
    grown.eval()
    inp = build_inputs(ds.n_users, ds.n_items, trained[0], trained[1], kg, features, extra=extra)
    user, item = grown.get_embedding(inp).export(inp.item_degree > 0)
    return user.numpy(), item.numpy()


# -- the update stage ------------------------------------------------------------------------------------
def run_update(workspace: Workspace | str | Path, interactions: str | os.PathLike | None = None,
               items: str | os.PathLike | None = None, users: str | os.PathLike | None = None, *,
               encoding: str = "utf-8", progress: bool = True) -> UpdateResult:
    """Fold new items / users / interactions into a trained workspace (see the module doc); all or nothing."""
    ws = Workspace.of(workspace)
    if interactions is None and items is None and users is None:
        raise InputError("nothing to update: give --interactions, --items and/or --users")
    recover_update(ws)
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    notes: list[str] = []
    ds = Dataset.load(ws)
    model_dir = ws.require("model")
    trained_model = load_model(ws)
    log = _current_log(ws, ds, trained_model.model)

    new_items = (_new_entities(items, ds.items, "item_id", "item", encoding, notes) if items is not None
                 else ds.items.iloc[:0])
    if len(new_items) and ds.schema.image_column:
        check_image_paths(new_items, ds.schema.image_column, Path(ds.schema.images_dir), notes)
    new_users = (_new_entities(users, ds.users, "user_id", "user", encoding, notes) if users is not None
                 else ds.users.iloc[:0])
    item_ids = pd.Index(np.concatenate([ds.item_ids, new_items["item_id"].to_numpy()]).astype(str))
    user_ids = pd.Index(np.concatenate([ds.user_ids, new_users["user_id"].to_numpy()]).astype(str))
    new_rows, skipped, auto_ids = (_new_interactions(interactions, ds, item_ids, user_ids, encoding, notes)
                                   if interactions is not None else (ds.interactions.iloc[:0], 0, []))
    if len(auto_ids):  # users first seen in the interactions file: blank attributes
        auto = pd.DataFrame({c: (list(auto_ids) if c == "user_id" else [""] * len(auto_ids)) for c in ds.users.columns})
        new_users = pd.concat([new_users, auto], ignore_index=True)
        notes.append(f"{len(auto_ids)} users first seen in {Path(interactions).name} were added without attributes")
    seconds["read"] = time.perf_counter() - t0

    grown = Dataset(ds.schema, pd.concat([ds.items, new_items], ignore_index=True),
                    pd.concat([ds.users, new_users], ignore_index=True),
                    pd.concat([ds.interactions, new_rows], ignore_index=True), ds.triples)
    staging = Path(tempfile.mkdtemp(prefix=".update-", dir=ws.path))
    try:
        sws = Workspace(staging)
        if ws.config_path.exists():
            shutil.copy2(ws.config_path, sws.config_path)
        moves: list[str] = ["dataset"]
        grown.save(sws)
        encoded: dict[str, int] = {}
        features_dir = ws.stage_dir("features")
        if len(new_items) and features_dir.is_dir():
            t = time.perf_counter()
            shutil.copytree(features_dir, sws.stage_dir("features"))  # the encode cache reads the old vectors
            encoded = _encode_new(ws, sws, ds, grown, progress, notes)
            moves.append("features")
            seconds["encode"] = time.perf_counter() - t
        features = load_features(sws if "features" in moves else ws) if features_dir.is_dir() else {}
        kg = None
        if ws.stage_dir("graph").is_dir():
            t = time.perf_counter()
            kg = extend_graph(KnowledgeGraph.load(ws), grown, features, ds.n_items, progress)
            kg.save(sws)
            moves.append("graph")
            seconds["graph"] = time.perf_counter() - t

        t = time.perf_counter()
        base = log["trained"]
        inter = grown.interactions
        rows = np.arange(len(inter))
        trained_parts = ("train", "valid") if trained_model.meta.get("refit") else ("train",)
        is_trained = (rows < base["interactions"]) & inter["split"].isin(trained_parts).to_numpy()
        is_extra = ((rows < base["interactions"]) & (inter["split"] == "cold_user_context").to_numpy()) | \
                   (rows >= base["interactions"])
        pairs = lambda m: (inter["user"].to_numpy(np.int64)[m], inter["item"].to_numpy(np.int64)[m])
        extra = pairs(is_extra) if is_extra.any() else None
        user_emb, item_emb = refresh_embeddings(trained_model.model, grown, kg, features, pairs(is_trained), extra)
        old_user = trained_model.user
        moved = np.linalg.norm(user_emb[:len(old_user)] - old_user, axis=1) > \
            1e-6 * np.maximum(np.linalg.norm(old_user, axis=1), 1.0)
        users_changed = int(moved.sum()) + len(user_emb) - len(old_user)
        sdir = sws.stage_dir("model")
        write_tensors(sdir / "embeddings.safetensors", {"user": user_emb, "item": item_emb})
        files = ["embeddings.safetensors"]
        select = model_dir / "embeddings_select.safetensors"
        if select.exists():  # new rows as in the final embeddings; the ranker is fitted on existing ones
            sel = read_tensors(select)
            write_tensors(sdir / select.name, {"user": np.concatenate([sel["user"], user_emb[len(sel["user"]):]]),
                                               "item": np.concatenate([sel["item"], item_emb[len(sel["item"]):]])})
            files.append(select.name)
        if _update_ranker(ws, sws, ds, grown):
            files += ["ranker.json", "ranker.safetensors"]
        entry = {"finished": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
                 "items": [ds.n_items, grown.n_items], "users": [ds.n_users, grown.n_users],
                 "interactions": [len(ds.interactions), len(inter)], "duplicates_skipped": skipped,
                 "files": {k: None if v is None else str(Path(v).resolve())
                           for k, v in (("interactions", interactions), ("items", items), ("users", users))}}
        log["updates"].append(entry)
        log["after"] = _fingerprint({s: (sws if s in moves else ws).stage_dir(s) for s in ("dataset", "features",
                                                                                           "graph")})
        write_json(sdir / LOG, log)
        files.append(LOG)
        sws.record("update", {"interactions": entry["files"]["interactions"], "items": entry["files"]["items"],
                              "users": entry["files"]["users"], "encoding": encoding},
                   inputs={k: file_sha256(v) for k, v in (("interactions", interactions), ("items", items),
                                                          ("users", users)) if v is not None})
        seconds["embed"] = time.perf_counter() - t
        plan = [[str(sws.stage_dir(s)), str(ws.stage_dir(s))] for s in moves]
        plan += [[str(sdir / f), str(model_dir / f)] for f in files]
        plan.append([str(sws.config_path), str(ws.config_path)])
        write_json(ws.path / JOURNAL, {"staging": str(staging), "moves": plan})  # the commit point
    except BaseException:
        if not (ws.path / JOURNAL).exists():
            shutil.rmtree(staging, ignore_errors=True)
        raise
    recover_update(ws)
    seconds["total"] = time.perf_counter() - t0
    return UpdateResult(len(new_items), len(new_users), len(new_rows), skipped, encoded, users_changed,
                        {k: round(v, 3) for k, v in seconds.items()}, notes)


def recover_update(workspace: Workspace | str | Path) -> bool:
    """Finish the switch of an update that reached its commit point (idempotent); drop uncommitted staging."""
    ws = Workspace.of(workspace)
    journal = ws.path / JOURNAL
    recovered = journal.exists()
    if recovered:
        plan = read_json(journal)
        staging = Path(plan["staging"])
        for src, dst in ((Path(a), Path(b)) for a, b in plan["moves"]):
            if not src.exists():
                continue  # moved before the interruption
            if src.is_dir():
                if dst.exists():
                    os.replace(dst, staging / f"old-{dst.name}")
                os.replace(src, dst)
            else:
                os.replace(src, dst)
        journal.unlink()
        shutil.rmtree(staging, ignore_errors=True)
    for stale in ws.path.glob(".update-*"):  # staging of an update that never committed
        shutil.rmtree(stale, ignore_errors=True)
    return recovered


# -- helpers -----------------------------------------------------------------------------------------
def _current_log(ws: Workspace, ds: Dataset, model: GraphRec) -> dict[str, Any]:
    """The update log valid for the current parameters, or a fresh one; refuses a workspace changed since."""
    d = ws.stage_dir("model")
    sha = file_sha256(d / "model.safetensors")
    path = d / LOG
    log = read_json(path) if path.exists() else None
    if log is not None and log.get("model_sha256") == sha:
        changed = [k for k, v in _fingerprint({s: ws.stage_dir(s) for s in ("dataset", "features", "graph")}).items()
                   if log.get("after", {}).get(k) != v]
        if changed:
            raise InputError(f"{changed[0]} changed since the last update (re-imported, re-encoded or rebuilt?): "
                             "retrain with `graphrec train` before updating", file=ws.path / changed[0])
        return log
    if (model.n_users, model.n_items) != (ds.n_users, ds.n_items):
        raise InputError(f"the model was trained for {model.n_users} users and {model.n_items} items, the dataset "
                         f"has {ds.n_users} and {ds.n_items}: retrain with `graphrec train`", file=d)
    return {"model_sha256": sha, "trained": {"users": ds.n_users, "items": ds.n_items,
                                             "interactions": len(ds.interactions)}, "updates": []}


def _fingerprint(dirs: dict[str, Path]) -> dict[str, str]:
    """sha256 over the data files of each stage folder (what a later update must find unchanged)."""
    out = {}
    for stage, d in dirs.items():
        if d.is_dir():
            h = hashlib.sha256()
            for p in sorted(d.iterdir()):
                if p.is_file() and (p.suffix in (".parquet", ".safetensors") or p.name == "ids.json"):
                    h.update(p.name.encode() + bytes.fromhex(file_sha256(p)))
            out[stage] = h.hexdigest()
    return out


def _encode_new(ws: Workspace, sws: Workspace, old: Dataset, grown: Dataset, progress: bool,
                notes: list[str]) -> dict[str, int]:
    """Encode the new items into the staged features/ with the recorded encode settings."""
    from graphrec.encode import item_texts, run_encode
    from graphrec.encoders.lexical import lexical_fold_in

    rec = (ws.stage_record("features") or {}).get("settings")
    if rec is None:
        raise InputError("features/ has no recorded encode settings: re-run `graphrec encode`", file=ws.path)
    names = list(rec["modalities"])
    neural = [m for m in names if m != "lexical"]
    encoded: dict[str, int] = {}
    if neural:
        res = run_encode(sws, neural, clip_model=rec["clip_model"], clip_pretrained=rec["clip_pretrained"],
                         clip_checkpoint=rec["clip_checkpoint"], st_model=rec["st_model"],
                         precomputed=rec["precomputed"], text_columns=rec["text_columns"],
                         batch_size=rec["batch_size"], text_batch_size=rec["text_batch_size"], device=rec["device"],
                         num_workers=rec["num_workers"], lexical_dim=rec["lexical_dim"],
                         max_pixels=rec["max_pixels"], seed=rec["seed"], show_progress=progress)
        encoded.update({m: r.encoded for m, r in res.reports.items()})
        for rep in res.reports.values():
            notes += rep.notes
    if "lexical" in names:
        # The model was trained on the old basis: new texts are folded into it, old vectors stay as they are.
        prev = load_features(ws, ["lexical"])["lexical"]
        n_old = old.n_items
        basis_items = int(prev.meta.get("basis_items", n_old))
        texts = item_texts(grown, rec["text_columns"])
        values, mask = lexical_fold_in(texts[:basis_items].tolist(), texts[n_old:].tolist(),
                                       dim=int(prev.meta["identity"]["dim"]), seed=int(prev.meta["identity"]["seed"]))
        if values.shape[1] != prev.dim:
            raise InputError("lexical features do not match their recorded basis: re-run `graphrec encode`",
                             file=ws.stage_dir("features") / "lexical.json")
        hashes = [hashlib.sha256(t.encode("utf-8")).hexdigest() if t else "" for t in texts[n_old:]]
        meta = {**prev.meta, "item_ids": grown.item_ids.tolist(),
                "content_hashes": list(prev.meta["content_hashes"]) + hashes, "basis_items": basis_items,
                "folded_in": int(prev.meta.get("folded_in", 0)) + len(hashes)}
        meta = {k: v for k, v in meta.items() if k not in ("modality", "dim")}
        save_features(sws.stage_dir("features"), Features("lexical", np.concatenate([prev.values, values]),
                                                          np.concatenate([prev.mask, mask]), meta))
        encoded["lexical"] = len(hashes)
    log_path = sws.stage_dir("features") / "encode_log.json"
    write_json(log_path, {**(read_json(log_path) if log_path.exists() else {}), "update": encoded})
    sws.record("features", rec, inputs={"dataset_ids_sha256": file_sha256(sws.stage_dir("dataset") / "ids.json"),
                                        "items": grown.n_items})
    return encoded


def _update_ranker(ws: Workspace, sws: Workspace, old: Dataset, grown: Dataset) -> bool:
    """Carry the fitted blend over to the new embeddings: new items are cold (gnn + content, no pop/EASE
    penalty); popularity counts include the new interactions. False when there is no current ranker."""
    from graphrec.rank import interaction_matrix, load_ranker, save_ranker

    r = load_ranker(ws, old)
    if r is None:
        return False
    counts = np.asarray(interaction_matrix(grown, ("train",)).sum(axis=0)).ravel()
    r.warm = np.concatenate([r.warm, np.zeros(grown.n_items - old.n_items, bool)])
    r.pop = np.log1p(counts).astype(np.float32)
    r.info["embeddings_sha256"] = file_sha256(sws.stage_dir("model") / "embeddings.safetensors")
    save_ranker(sws, r)
    return True
