"""Graph inputs of the model: normalised sparse CSR operators built once, and a CSR neighbour sampler.

Every operator is a `SparseOp` (torch CSR matrix + its precomputed transpose for the backward pass), so
one propagation layer is one sparse-dense product (`torch.sparse.mm`), the fastest path on CPU and GPU
without torch-scatter / pyg-lib.

  ui      [U+I, U+I]  symmetric D^-1/2 A D^-1/2 of the user-item graph (LightGCN)
  item_attr[r]  [I, n_type]  row-normalised item -> attribute/entity relation r (mean of the item's values)
  user_attr[r]  [U, n_type]  row-normalised user -> attribute relation r
  item_sim      [I, I]       row-normalised item-item similarity edges (union of `similar_*` relations)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from graphrec.core.feature_store import Features, unit_rows
from graphrec.kg.graph import EdgeSet, KnowledgeGraph


class _SpMM(torch.autograd.Function):
    """A @ x whose backward is the precomputed A^T @ grad: torch's CSR backward transposes A on every call."""

    @staticmethod
    def forward(
        ctx: Any, a: torch.Tensor, at: torch.Tensor, x: torch.Tensor
    ) -> torch.Tensor:
        ctx.at = at
        return torch.sparse.mm(a, x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, torch.Tensor]:
        return None, None, torch.sparse.mm(ctx.at, grad)


class SparseOp:
    """A fixed sparse CSR operator and its transpose; `op @ x` is differentiable in x."""

    def __init__(self, a: torch.Tensor, at: torch.Tensor | None = None):
        self.a, self.at = a, (a if at is None else at)  # at=None: symmetric

    @classmethod
    def from_scipy(cls, m: sp.spmatrix, symmetric: bool = False) -> SparseOp:
        return cls(_to_torch_csr(m), None if symmetric else _to_torch_csr(m.T))

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.a.shape)  # type: ignore[return-value]

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        return _SpMM.apply(self.a, self.at, x)

    def to(self, device: torch.device | str) -> SparseOp:
        a = self.a.to(device)
        return SparseOp(a, a if self.at is self.a else self.at.to(device))


def _to_torch_csr(m: sp.spmatrix) -> torch.Tensor:
    m = sp.csr_matrix(m)
    m.sum_duplicates()
    m.sort_indices()
    # scipy built it valid (sorted, no duplicates), so torch's invariant checks are off on purpose; its
    # "sparse CSR is in beta" notice would otherwise precede every run's output, even a one-line error
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message="Sparse CSR tensor support is in beta",
            category=UserWarning,
        )
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)),
            torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.data.astype(np.float32)),
            size=m.shape,
            check_invariants=False,
        )


def normalized_bipartite(
    users: np.ndarray, items: np.ndarray, n_users: int, n_items: int
) -> SparseOp:
    """D^-1/2 A D^-1/2 of the symmetric user-item graph over U+I nodes (users first); duplicate pairs count once."""
    r = sp.csr_matrix(
        (np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items)
    )
    r.data[:] = 1.0  # binary: a repeated pair is one edge
    a = sp.bmat([[None, r], [r.T, None]], format="csr")
    deg = np.asarray(a.sum(1)).ravel()
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-12)), 0.0).astype(
        np.float32
    )
    return SparseOp.from_scipy(sp.diags(inv) @ a @ sp.diags(inv), symmetric=True)


def row_normalized(
    src: np.ndarray, dst: np.ndarray, weight: np.ndarray, n_src: int, n_dst: int
) -> SparseOp:
    """Relation as [n_src, n_dst] CSR whose non-empty rows sum to 1 (per-relation mean aggregation)."""
    m = sp.csr_matrix(
        (np.asarray(weight, np.float32), (src, dst)), shape=(n_src, n_dst)
    )
    m.sum_duplicates()
    s = np.asarray(m.sum(1)).ravel()
    inv = np.where(s > 0, 1.0 / np.where(s > 0, s, 1.0), 0.0).astype(np.float32)
    return SparseOp.from_scipy(sp.diags(inv) @ m)


@dataclass
class GraphInputs:
    """Everything the model propagates over, for one set of interactions (train, or train+valid)."""

    n_users: int
    n_items: int
    ui: SparseOp
    # float32 [I]: training interactions of each item (0 = cold: content path)
    item_degree: torch.Tensor
    # float32 [U]: training interactions (0 = no trained ID embedding)
    user_degree: torch.Tensor
    # L2-normalised rows, 0 where absent
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    feature_mask: dict[str, torch.Tensor] = field(default_factory=dict)
    # relation -> (node type, operator)
    item_attr: dict[str, tuple[str, SparseOp]] = field(default_factory=dict)
    user_attr: dict[str, tuple[str, SparseOp]] = field(default_factory=dict)
    item_sim: SparseOp | None = None

    def to(self, device: torch.device | str) -> GraphInputs:
        return GraphInputs(
            self.n_users,
            self.n_items,
            self.ui.to(device),
            self.item_degree.to(device),
            self.user_degree.to(device),
            {k: v.to(device) for k, v in self.features.items()},
            {k: v.to(device) for k, v in self.feature_mask.items()},
            {k: (t, m.to(device)) for k, (t, m) in self.item_attr.items()},
            {k: (t, m.to(device)) for k, (t, m) in self.user_attr.items()},
            None if self.item_sim is None else self.item_sim.to(device),
        )


def feature_tensors(
    features: dict[str, Features],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Row-L2-normalised modality matrices (so modalities of different scales enter alike) and their masks."""
    vals, masks = {}, {}
    for name, f in sorted(features.items()):
        v, present = unit_rows(f.values, f.mask)
        vals[name], masks[name] = torch.from_numpy(v), torch.from_numpy(present)
    return vals, masks


def build_inputs(
    n_users: int,
    n_items: int,
    users: np.ndarray,
    items: np.ndarray,
    kg: KnowledgeGraph | None = None,
    features: dict[str, Features] | None = None,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
) -> GraphInputs:
    """Operators for interactions (users[k], items[k]) plus the knowledge graph's content relations.

    `extra` (users, items) pairs are propagated over but give no node a trained ID embedding: a cold
    user's few context interactions at inference time, without retraining.

    The graph's own ("user", "interacts", "item") relation is ignored: the interactions are passed in, so
    selection trains on train only and the refit on train+valid from the same graph.
    """
    users = np.asarray(users, np.int64)
    items = np.asarray(items, np.int64)
    pairs = np.unique(users * n_items + items)
    item_deg = np.bincount(pairs % n_items, minlength=n_items).astype(np.float32)
    user_deg = np.bincount(pairs // n_items, minlength=n_users).astype(np.float32)
    edges = pairs if extra is None else _with_extra(pairs, extra, n_items)
    inputs = GraphInputs(
        n_users,
        n_items,
        normalized_bipartite(edges // n_items, edges % n_items, n_users, n_items),
        torch.from_numpy(item_deg),
        torch.from_numpy(user_deg),
    )
    if features:
        inputs.features, inputs.feature_mask = feature_tensors(features)
    if kg is not None:
        _add_graph_relations(inputs, kg)
    return inputs


def _with_extra(
    pairs: np.ndarray, extra: tuple[np.ndarray, np.ndarray], n_items: int
) -> np.ndarray:
    """The distinct user * n_items + item codes of `pairs` and of the `extra` (users, items) pairs."""
    extra_pairs = np.asarray(extra[0], np.int64) * n_items + np.asarray(
        extra[1], np.int64
    )
    return np.unique(np.concatenate([pairs, extra_pairs]))


def _add_graph_relations(inputs: GraphInputs, kg: KnowledgeGraph) -> None:
    """Set the graph's content operators on `inputs`: each item -> attribute/entity and user -> attribute
    relation row-normalised, and the item-item similarity relations as one operator."""
    similarities = []
    for (src_type, relation, dst_type), edge_set in sorted(kg.edges.items()):
        if len(edge_set) == 0:
            continue
        if src_type == "item" and dst_type == "item":
            similarities.append(edge_set)
        elif src_type == "item" and dst_type != "user":
            name = relation if dst_type != "entity" else f"{relation}>entity"
            inputs.item_attr[name] = (
                dst_type,
                row_normalized(
                    edge_set.src,
                    edge_set.dst,
                    edge_set.weight,
                    inputs.n_items,
                    kg.num_nodes[dst_type],
                ),
            )
        elif src_type == "user" and dst_type not in ("item", "user"):
            inputs.user_attr[relation] = (
                dst_type,
                row_normalized(
                    edge_set.src,
                    edge_set.dst,
                    edge_set.weight,
                    inputs.n_users,
                    kg.num_nodes[dst_type],
                ),
            )
    if similarities:
        inputs.item_sim = _similarity_operator(similarities, inputs.n_items)


def _similarity_operator(similarities: list[EdgeSet], n_items: int) -> SparseOp:
    """The union of item-item similarity relations, both directions (similarity is symmetric), negative
    weights as 0, row-normalised."""
    src = np.concatenate([e.src for e in similarities] + [e.dst for e in similarities])
    dst = np.concatenate([e.dst for e in similarities] + [e.src for e in similarities])
    weight = np.concatenate([e.weight for e in similarities] * 2)
    return row_normalized(src, dst, np.maximum(weight, 0), n_items, n_items)


def sample_neighbourhood(
    adj: SparseOp,
    seeds: torch.Tensor,
    fanouts: list[int],
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, SparseOp]:
    """Layer-wise neighbour sampling on a normalised CSR operator (GraphSAGE-style, as PyG's NeighborSampler).

    Returns (nodes, sub): `nodes` the global ids reached (seeds first, in order), `sub` a CSR operator over
    them whose row v holds `fanout` neighbours sampled with replacement, weighted by A[v, n] * deg(v) / fanout, an
    unbiased
    estimate of the full row product. Rows of the last hop are empty: K products on `sub` give exact
    depth-K estimates at the seeds.
    """
    nodes, rows, cols, vals = _sample_hops(
        adj.a, torch.unique(seeds), fanouts, generator
    )
    return nodes, _local_operator(nodes, rows, cols, vals)


def _sample_hops(
    csr: torch.Tensor,
    seeds: torch.Tensor,
    fanouts: list[int],
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """The nodes reached (seeds first, then each hop's new nodes) and, per hop, the sampled entries' global
    rows, columns and unbiased weights (`fanout` draws with replacement per frontier node with neighbours)."""
    indptr, indices, values = csr.crow_indices(), csr.col_indices(), csr.values()
    known = seeds
    frontier = seeds
    rows, cols, vals = [], [], []
    for fanout in fanouts:
        start = indptr[frontier]
        deg = indptr[frontier + 1] - start
        has = deg > 0
        frontier_nodes, start, deg = frontier[has], start[has], deg[has]
        draws = torch.rand(
            (len(frontier_nodes), fanout), generator=generator, device=csr.device
        )
        pos = start[:, None] + (draws * deg[:, None]).long().clamp_max(deg[:, None] - 1)
        rows.append(frontier_nodes.repeat_interleave(fanout))
        cols.append(indices[pos].reshape(-1))
        vals.append((values[pos] * (deg[:, None].float() / fanout)).reshape(-1))
        reached = torch.unique(cols[-1])
        frontier = reached[~torch.isin(reached, known)]
        known = torch.cat([known, frontier])
    return known, rows, cols, vals


def _local_operator(
    nodes: torch.Tensor,
    rows: list[torch.Tensor],
    cols: list[torch.Tensor],
    vals: list[torch.Tensor],
) -> SparseOp:
    """The sampled entries as a CSR operator over `nodes` (row/column i = nodes[i]), with its transpose."""
    order = torch.argsort(nodes)
    local = lambda g: order[torch.searchsorted(nodes[order], g)]
    local_rows = local(torch.cat(rows)) if rows else torch.empty(0, dtype=torch.long)
    local_cols = local(torch.cat(cols)) if cols else torch.empty(0, dtype=torch.long)
    weights = torch.cat(vals) if vals else torch.empty(0)
    sub = torch.sparse_coo_tensor(
        torch.stack([local_rows, local_cols]),
        weights,
        (len(nodes), len(nodes)),
        check_invariants=False,
    ).coalesce()
    return SparseOp(sub.to_sparse_csr(), sub.transpose(0, 1).coalesce().to_sparse_csr())
