"""Growing a built knowledge graph with new items, users and interactions (what `graphrec update` needs).

Attribute, triple and interaction edges are rebuilt from the grown dataset (linear in the data); existing
attribute/entity nodes keep their indices (new values are appended); content kNN lists are extended with the
new items exactly as a full build would rank them, at O(n_old * n_new) instead of O(n^2).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from graphrec.core.errors import InputError
from graphrec.core.feature_store import Features
from graphrec.core.progress import progress_bar
from graphrec.data.dataset import Dataset
from graphrec.kg.build import build_graph
from graphrec.kg.graph import EdgeSet, KnowledgeGraph
from graphrec.kg.triples import read_entity_map, read_triples


def extend_graph(
    old: KnowledgeGraph,
    ds: Dataset,
    features: dict[str, Features],
    n_old_items: int,
    progress: bool = True,
) -> KnowledgeGraph:
    """The old graph grown to the extended dataset `ds`: same node indices for everything that existed."""
    settings = old.meta.get("settings", {})
    extra = []
    if settings.get("triples"):
        emap = settings.get("entity_map")
        extra.append(
            (read_triples(settings["triples"]), read_entity_map(emap) if emap else None)
        )
    # Everything but kNN is linear in the data: rebuild it, then map node indices back to the old ones.
    fresh = build_graph(ds, None, 0, None, extra, progress=False)
    remap: dict[str, np.ndarray] = {}
    names: dict[str, list[str]] = {}
    for t, new_names in fresh.node_names.items():
        old_names = list(old.node_names.get(t, []))
        added = [n for n in new_names if n not in set(old_names)]
        names[t] = old_names + added
        remap[t] = pd.Index(names[t]).get_indexer(pd.Index(new_names)).astype(np.int64)
    edges: dict[tuple[str, str, str], EdgeSet] = {}
    num_nodes = {
        t: len(names[t]) if t in names else n for t, n in fresh.num_nodes.items()
    }
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
            raise InputError(
                f"graph relation {key[1]} needs features of modality {modality!r}; re-run "
                "`graphrec build` and `graphrec train`"
            )
        f = features[modality]
        edges[key] = extend_knn(e, f.values, f.mask, n_old_items, k, progress)
    meta = {
        **old.meta,
        "relation_kinds": {
            **old.meta.get("relation_kinds", {}),
            **fresh.meta["relation_kinds"],
        },
        "triples": fresh.meta.get("triples", []),
        "updates": int(old.meta.get("updates", 0)) + 1,
    }
    for modality, info in meta.get("knn", {}).items():
        if modality in features:
            info.update(
                items_with_content=int(features[modality].mask.sum()),
                edges=len(edges[("item", f"similar_{modality}", "item")]),
            )
    meta["num_edges"] = {"|".join(k): len(e) for k, e in edges.items()}
    return KnowledgeGraph(
        num_nodes, edges, {t: list(v) for t, v in names.items()}, meta
    )


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
    pos_new = np.searchsorted(idx, new)
    xn = x[torch.from_numpy(pos_new)]
    srcs, dsts, sims = [old.src], [old.dst], [old.weight]
    block = max(1, block_cells // len(idx))
    steps = range(0, len(new), block)
    for s in progress_bar(
        steps, show=progress and len(steps) > 1, desc="kNN of new items", unit="block"
    ):
        rows = torch.from_numpy(pos_new[s : s + block])
        sc = xn[s : s + block] @ x.T
        sc[torch.arange(len(rows)), rows] = -float("inf")  # not its own neighbour
        v, j = sc.topk(k, dim=1)
        srcs.append(np.repeat(new[s : s + block], k))
        dsts.append(idx[j.numpy().ravel()])
        sims.append(v.numpy().ravel())
    old_rows = np.flatnonzero(idx < n_old)
    kn = min(k, len(new))
    block = max(1, block_cells // len(new))
    for s in range(
        0, len(old_rows), block
    ):  # old items: only new items can enter their lists
        olds = old_rows[s : s + block]
        v, j = (x[torch.from_numpy(olds)] @ xn.T).topk(kn, dim=1)
        srcs.append(np.repeat(idx[olds], kn))
        dsts.append(new[j.numpy().ravel()])
        sims.append(v.numpy().ravel())
    src, dst, sim = (
        np.concatenate(srcs),
        np.concatenate(dsts),
        np.concatenate(sims).astype(np.float32),
    )
    order = np.lexsort(
        (dst, -sim, src)
    )  # per item, the most similar first (index breaks ties)
    src, dst, sim = src[order], dst[order], sim[order]
    start = np.searchsorted(src, src, side="left")
    keep = (np.arange(len(src)) - start < k) & (sim > 0)
    return _sorted(src[keep], dst[keep], sim[keep], int(max(values.shape[0], 1)))
