"""Growing a built knowledge graph with new items, users and interactions (what `graphrec update` needs).

Attribute, triple and interaction edges are rebuilt from the grown dataset (linear in the data); existing
attribute/entity nodes keep their indices (new values are appended); content kNN lists are extended with the
new items exactly as a full build would rank them, at O(n_old * n_new) instead of O(n^2).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch

from graphrec.core.errors import InputError
from graphrec.core.feature_store import Features
from graphrec.core.progress import progress_bar
from graphrec.data.dataset import Dataset
from graphrec.kg.build import build_graph
from graphrec.kg.graph import EdgeSet, KnowledgeGraph
from graphrec.kg.triples import RawTriples, read_entity_map, read_triples


def extend_graph(
    old: KnowledgeGraph,
    ds: Dataset,
    features: dict[str, Features],
    n_old_items: int,
    progress: bool = True,
) -> KnowledgeGraph:
    """The old graph grown to the extended dataset `ds`: same node indices for everything that existed."""
    # Everything but kNN is linear in the data: rebuild it, then map node indices back to the old ones.
    fresh = build_graph(ds, None, 0, None, _recorded_triples(old), progress=False)
    names, remap = _grown_node_names(old, fresh)
    num_nodes = {
        node_type: len(names[node_type]) if node_type in names else n
        for node_type, n in fresh.num_nodes.items()
    }
    edges: dict[tuple[str, str, str], EdgeSet] = {}
    for (src_type, relation, dst_type), edge_set in fresh.edges.items():
        src = remap[src_type][edge_set.src] if src_type in remap else edge_set.src
        dst = remap[dst_type][edge_set.dst] if dst_type in remap else edge_set.dst
        edges[(src_type, relation, dst_type)] = _sorted(
            src, dst, edge_set.weight, num_nodes[dst_type]
        )
    edges.update(_extended_similarities(old, features, n_old_items, progress))
    return KnowledgeGraph(
        num_nodes,
        edges,
        {node_type: list(v) for node_type, v in names.items()},
        _grown_meta(old, fresh, features, edges),
    )


def _recorded_triples(
    old: KnowledgeGraph,
) -> list[tuple[RawTriples, dict[str, np.ndarray] | None]]:
    """The triples file (and entity map) the old graph was built with, read again: `build_graph`'s extras."""
    settings = old.meta.get("settings", {})
    extra = []
    if settings.get("triples"):
        entity_map = settings.get("entity_map")
        extra.append(
            (
                read_triples(settings["triples"]),
                read_entity_map(entity_map) if entity_map else None,
            )
        )
    return extra


def _grown_node_names(
    old: KnowledgeGraph, fresh: KnowledgeGraph
) -> tuple[dict[str, list[str]], dict[str, np.ndarray]]:
    """Per named node type: the old names followed by the new ones, and each fresh node's index in that list."""
    remap: dict[str, np.ndarray] = {}
    names: dict[str, list[str]] = {}
    for node_type, new_names in fresh.node_names.items():
        old_names = list(old.node_names.get(node_type, []))
        added = [n for n in new_names if n not in set(old_names)]
        names[node_type] = old_names + added
        remap[node_type] = (
            pd.Index(names[node_type]).get_indexer(pd.Index(new_names)).astype(np.int64)
        )
    return names, remap


def _extended_similarities(
    old: KnowledgeGraph, features: dict[str, Features], n_old_items: int, progress: bool
) -> dict[tuple[str, str, str], EdgeSet]:
    """The old graph's kNN relations with the items >= n_old_items added, each with the k it was built with."""
    edges = {}
    for key, edge_set in old.edges.items():
        if old.relation_kind(key) != "similarity":
            continue
        modality = key[1].removeprefix("similar_")
        k = int(old.meta.get("knn", {}).get(modality, {}).get("k", 0))
        if modality not in features or k <= 0:
            raise InputError(
                f"graph relation {key[1]} needs features of modality {modality!r}; re-run "
                "`graphrec build` and `graphrec train`"
            )
        modality_features = features[modality]
        edges[key] = extend_knn(
            edge_set,
            modality_features.values,
            modality_features.mask,
            n_old_items,
            k,
            progress,
        )
    return edges


def _grown_meta(
    old: KnowledgeGraph,
    fresh: KnowledgeGraph,
    features: dict[str, Features],
    edges: dict[tuple[str, str, str], EdgeSet],
) -> dict[str, Any]:
    """The old graph's meta with the fresh build's relations and triples reports, one more update counted, and
    the kNN counts (updated in place, in the old meta's records too) and edge counts of the grown graph."""
    meta = {
        **old.meta,
        "relation_kinds": {
            **old.meta.get("relation_kinds", {}),
            **fresh.meta["relation_kinds"],
        },
        "triples": fresh.meta.get("triples", []),
        "updates": int(old.meta.get("updates", 0)) + 1,
    }
    for modality, knn_meta in meta.get("knn", {}).items():
        if modality in features:
            knn_meta.update(
                items_with_content=int(features[modality].mask.sum()),
                edges=len(edges[("item", f"similar_{modality}", "item")]),
            )
    meta["num_edges"] = {"|".join(k): len(e) for k, e in edges.items()}
    return meta


def _sorted(
    src: np.ndarray, dst: np.ndarray, weight: np.ndarray, n_dst: int
) -> EdgeSet:
    order = np.argsort(src.astype(np.int64) * max(1, n_dst) + dst, kind="stable")
    return EdgeSet(
        src[order].astype(np.int64),
        dst[order].astype(np.int64),
        weight[order].astype(np.float32),
    )


def extend_knn(
    old: EdgeSet,
    values: np.ndarray,
    mask: np.ndarray,
    n_old: int,
    k: int,
    progress: bool = True,
    block_cells: int = 1 << 25,
) -> EdgeSet:
    """kNN edges (as kg.build.knn_edges makes them) after items >= n_old were added: the new items' lists
    over everyone, and each old item's list merged with its best new neighbours. Cost O(n * n_new)."""
    idx = np.flatnonzero(mask)
    new = idx[idx >= n_old]
    k = min(k, len(idx) - 1)
    if len(new) == 0 or k <= 0:
        return old
    x = torch.nn.functional.normalize(
        torch.from_numpy(np.ascontiguousarray(values[idx], np.float32)), dim=1
    )
    pieces = [
        (old.src, old.dst, old.weight),
        *_new_items_neighbours(x, idx, new, k, block_cells, progress),
        *_old_items_new_neighbours(x, idx, new, n_old, k, block_cells),
    ]
    src, dst, sim = (np.concatenate(column) for column in zip(*pieces))
    return _best_k(src, dst, sim.astype(np.float32), k, int(max(values.shape[0], 1)))


def _new_items_neighbours(
    x: torch.Tensor,
    idx: np.ndarray,
    new: np.ndarray,
    k: int,
    block_cells: int,
    progress: bool,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(src, dst, similarity) of each new item's k nearest content-bearing items (`x`: their unit rows, in
    `idx` order), block by block of new items."""
    pos_new = np.searchsorted(idx, new)
    xn = x[torch.from_numpy(pos_new)]
    block = max(1, block_cells // len(idx))
    steps = range(0, len(new), block)
    for start in progress_bar(
        steps, show=progress and len(steps) > 1, desc="kNN of new items", unit="block"
    ):
        rows = torch.from_numpy(pos_new[start : start + block])
        scores = xn[start : start + block] @ x.T
        scores[torch.arange(len(rows)), rows] = -float("inf")  # not its own neighbour
        v, j = scores.topk(k, dim=1)
        yield (
            np.repeat(new[start : start + block], k),
            idx[j.numpy().ravel()],
            v.numpy().ravel(),
        )


def _old_items_new_neighbours(
    x: torch.Tensor,
    idx: np.ndarray,
    new: np.ndarray,
    n_old: int,
    k: int,
    block_cells: int,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(src, dst, similarity) of each old item's nearest new items (at most k): only new items can enter an
    old item's list, so the old lists need no recomputing."""
    xn = x[torch.from_numpy(np.searchsorted(idx, new))]
    old_rows = np.flatnonzero(idx < n_old)
    kn = min(k, len(new))
    block = max(1, block_cells // len(new))
    for start in range(0, len(old_rows), block):
        olds = old_rows[start : start + block]
        v, j = (x[torch.from_numpy(olds)] @ xn.T).topk(kn, dim=1)
        yield np.repeat(idx[olds], kn), new[j.numpy().ravel()], v.numpy().ravel()


def _best_k(
    src: np.ndarray, dst: np.ndarray, sim: np.ndarray, k: int, n_items: int
) -> EdgeSet:
    """Each item's k most similar candidates with similarity > 0, as sorted edges."""
    # per item, the most similar first (index breaks ties)
    order = np.lexsort((dst, -sim, src))
    src, dst, sim = src[order], dst[order], sim[order]
    start = np.searchsorted(src, src, side="left")
    keep = (np.arange(len(src)) - start < k) & (sim > 0)
    return _sorted(src[keep], dst[keep], sim[keep], n_items)
