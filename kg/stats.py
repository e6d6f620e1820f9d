"""Statistics and checks of a knowledge graph: counts, degrees, isolated nodes, components, how cold items are
reached, and the leak check (no held-out interaction may be an edge). All vectorised over the edge arrays."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from scipy.sparse.csgraph import connected_components

from graphrec.core.errors import InputError
from graphrec.core.workspace import Workspace, reads
from graphrec.data.dataset import HELD_OUT, Dataset
from graphrec.kg.graph import EdgeType, KnowledgeGraph

EXAMPLES = 5
ROUTES = {
    "attributes": ("item_attribute",),
    "entities": ("triple",),
    "similarity": ("similarity",),
}


def graph_stats(graph: KnowledgeGraph, ds: Dataset | None = None) -> dict[str, Any]:
    """Everything `graphrec kg stats` prints. With the dataset: cold items from its split and the leak check."""
    if ds is not None:
        check_matches(graph, ds)
    degree = degrees(graph)
    off = graph.node_offsets()
    per_type = {t: degree[off[t] : off[t] + n] for t, n in graph.num_nodes.items()}
    n_comp, labels = connected_components(graph.to_homogeneous(), directed=False)
    out: dict[str, Any] = {
        "nodes": dict(graph.num_nodes),
        "edges": {"|".join(k): len(e) for k, e in graph.edges.items()},
        "total_nodes": int(sum(graph.num_nodes.values())),
        "total_edges": int(sum(map(len, graph.edges.values()))),
        **_degree_stats(per_type),
        "components": _component_stats(n_comp, labels),
    }
    cold = None
    if ds is not None and ds.is_split:
        cold = ds.cold_items()
    out["cold_items"] = cold_reachability(graph, cold, labels)
    if ds is not None:
        report = out["cold_items"]
        report["dead_end_examples"] = [
            str(ds.item_ids[i]) for i in report["dead_end_examples"]
        ]
        out["leak_check"] = leak_check(graph, ds)
    return out


def _degree_stats(per_type: dict[str, np.ndarray]) -> dict[str, Any]:
    """The degree summary, user/item degree histograms and isolated-node counts, by node type."""
    return {
        "degree": {t: _summary(d) for t, d in per_type.items() if len(d)},
        "degree_histogram": {
            t: _log2_histogram(d) for t, d in per_type.items() if t in ("user", "item")
        },
        "isolated": {t: int((d == 0).sum()) for t, d in per_type.items()},
    }


def _component_stats(n_comp: int, labels: np.ndarray) -> dict[str, Any]:
    """Count and sizes of the connected components, from their labels (one per node)."""
    sizes = np.bincount(labels)
    return {
        "count": int(n_comp),
        "largest": int(sizes.max()) if len(sizes) else 0,
        "largest_share": round(float(sizes.max() / max(1, len(labels))), 4)
        if len(sizes)
        else 0.0,
        "non_trivial": int((sizes > 1).sum()),
    }


@reads
def run_stats(workspace: Workspace | str | os.PathLike) -> dict[str, Any]:
    """Stats of a workspace's saved graph, checked against its dataset."""
    ws = Workspace.of(workspace)
    return graph_stats(KnowledgeGraph.load(ws), Dataset.load(ws))


def check_matches(graph: KnowledgeGraph, ds: Dataset) -> None:
    if (
        graph.num_nodes.get("user") != ds.n_users
        or graph.num_nodes.get("item") != ds.n_items
    ):
        raise InputError(
            "the graph was built from another dataset than the workspace's: run `graphrec build` again"
        )


def degrees(graph: KnowledgeGraph) -> np.ndarray:
    """Edge count of every node (in + out, all relations), in homogeneous numbering."""
    off = graph.node_offsets()
    n = int(sum(graph.num_nodes.values()))
    deg = np.zeros(n, np.int64)
    for (s, _, d), e in graph.edges.items():
        deg += np.bincount(e.src + off[s], minlength=n) + np.bincount(
            e.dst + off[d], minlength=n
        )
    return deg


def cold_reachability(
    graph: KnowledgeGraph,
    cold: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """How cold items (given, else: items without training interactions) are reached. Per route, the share
    whose attributes / entities / similarity edges lead to a warm item within two hops; overall, the share
    connected by any path to a warm item. The rest are cold-start dead ends."""
    n_items = graph.num_nodes["item"]
    interacted = np.zeros(n_items, bool)
    for key in graph.relations(dst="item"):
        if graph.relation_kind(key) == "interaction":
            interacted[graph.edges[key].dst] = True
    definition = "held out as cold items by the split"
    if cold is None:
        cold, definition = (
            np.flatnonzero(~interacted),
            "items without training interactions",
        )
    cold = np.asarray(cold, np.int64)
    warm = interacted.astype(np.float32)
    out: dict[str, Any] = {"definition": definition, "count": int(len(cold))}
    any_route = np.zeros(n_items, bool)
    for route, kinds in ROUTES.items():
        reach = np.zeros(n_items, bool)
        for key in graph.edges:
            if graph.relation_kind(key) in kinds and "item" in (key[0], key[2]):
                reach |= _two_hop_to_warm(graph, key, warm)
        any_route |= reach
        out[f"via_{route}"] = _share(reach[cold], len(cold))
    out["via_any_route"] = _share(any_route[cold], len(cold))
    if labels is None:
        labels = connected_components(graph.to_homogeneous(), directed=False)[1]
    off = graph.node_offsets()["item"]
    item_labels = labels[off : off + n_items]
    connected = (
        np.isin(item_labels, np.unique(item_labels[interacted]))
        if interacted.any()
        else np.zeros(n_items, bool)
    )
    out["connected_to_warm"] = _share(connected[cold], len(cold))
    dead = cold[~connected[cold]]
    out["dead_ends"] = int(len(dead))
    out["dead_end_examples"] = dead[:EXAMPLES].tolist()
    return out


def _two_hop_to_warm(
    graph: KnowledgeGraph, key: EdgeType, warm: np.ndarray
) -> np.ndarray:
    """Items linked through relation `key` to a warm item: directly (item-item) or via a shared node."""
    m = graph.to_scipy(key)
    m.data[:] = 1.0
    if key[0] == "item" and key[2] == "item":
        return (m @ warm + m.T @ warm) > 0
    items_by_node = m if key[0] == "item" else m.T.tocsr()  # [items, other]
    # warm items reached through a shared node, not counting the item itself
    shared = (
        items_by_node @ (items_by_node.T @ warm)
        - np.asarray(items_by_node.sum(axis=1)).ravel() * warm
    )
    return shared > 0


def leak_check(graph: KnowledgeGraph, ds: Dataset) -> dict[str, Any]:
    """Held-out (user, item) pairs that are edges of any user-item relation: must be none."""
    check_matches(graph, ds)
    held = ds.part(*HELD_OUT)
    n_items = ds.n_items
    held_key = held["user"].to_numpy(np.int64) * n_items + held["item"].to_numpy(
        np.int64
    )
    edge_keys = []
    for (s, _, d), e in graph.edges.items():
        if (s, d) == ("user", "item"):
            edge_keys.append(e.src * n_items + e.dst)
        elif (s, d) == ("item", "user"):
            edge_keys.append(e.dst * n_items + e.src)
    keys = np.sort(np.concatenate(edge_keys)) if edge_keys else np.zeros(0, np.int64)
    # binary search in the sorted edge keys: far cheaper than np.isin's hashing for millions of edges
    pos = np.minimum(np.searchsorted(keys, held_key), max(0, len(keys) - 1))
    leaked = keys[pos] == held_key if len(keys) else np.zeros(len(held_key), bool)
    bad = held[leaked].head(EXAMPLES)
    return {
        "held_out": int(len(held)),
        "leaked": int(leaked.sum()),
        "ok": not leaked.any() and ds.is_split,
        "split": bool(ds.is_split),
        "examples": [
            f"user {ds.user_ids[u]} item {ds.item_ids[i]} ({p})"
            for u, i, p in zip(bad["user"], bad["item"], bad["split"])
        ],
    }


def _share(mask: np.ndarray, n: int) -> dict[str, Any]:
    k = int(mask.sum())
    return {"count": k, "share": round(k / n, 4) if n else None}


def _summary(d: np.ndarray) -> dict[str, float]:
    return {
        "min": int(d.min()),
        "median": float(np.median(d)),
        "mean": round(float(d.mean()), 2),
        "p90": float(np.percentile(d, 90)),
        "max": int(d.max()),
    }


def _log2_histogram(d: np.ndarray) -> dict[str, int]:
    """Counts of degree 0, 1, 2-3, 4-7, ...: the shape of a long-tailed distribution in a few numbers."""
    bucket = np.where(
        d > 0, np.floor(np.log2(np.maximum(d, 1))).astype(np.int64) + 1, 0
    )
    counts = np.bincount(bucket)
    # noqa: E731
    label = lambda b: (
        "0"
        if b == 0
        else (str(1 << (b - 1)) if b == 1 else f"{1 << (b - 1)}-{(1 << b) - 1}")
    )
    return {label(b): int(c) for b, c in enumerate(counts) if c}
