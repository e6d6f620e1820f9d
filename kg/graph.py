"""The knowledge graph as typed node sets and typed edge lists, persisted as safetensors + JSON.

Node types: "user" and "item" (indices = the dataset's dense indices), one type per attribute family
("genres", "year", "gender", ...), "entity" for external triples. Each relation is stored once, forward,
as (src_type, relation, dst_type) -> src indices, dst indices, weights, sorted by (src, dst) when built
by kg.build; consumers add reverse edges (`to_hetero_data(reverse=True)` names them "rev_<relation>").
meta["relation_kinds"] maps "src|rel|dst" to interaction, item_attribute, user_attribute, similarity or triple.

    graph/graph.safetensors   "<src>|<rel>|<dst>/src", ".../dst" int64 [E], ".../weight" float32 [E]
    graph/graph.json          num_nodes, relations, node_names (attribute values / entity ids), meta
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np
import scipy.sparse as sp

from graphrec.core.errors import InputError
from graphrec.core.io import check_tensors, read_tensors, write_tensors
from graphrec.core.records import Record
from graphrec.core.workspace import MAKE, Workspace

# the [pyg] extra: only the views below use them, and import them when called
if TYPE_CHECKING:
    import networkx as nx
    from torch_geometric.data import HeteroData

EdgeType = tuple[str, str, str]
REBUILD = f"re-run `{MAKE['graph']}`"
# What KnowledgeGraph.load checks of graph.json (the module docstring describes it); meta holds the builder's
# settings, read by kg.extend, of which relation_kinds is read here.


@dataclass(frozen=True)
class GraphMeta(Record):
    """graph.json's `meta`: what the builder recorded (settings, similarity and triple reports, feature
    families, update count); `relation_kinds` maps "src|rel|dst" to the relation's kind, the rest is for
    reports."""

    relation_kinds: dict[str, str] = field(default_factory=dict)
    other: dict[str, Any] = field(default_factory=dict)
    rest: ClassVar[str | None] = "other"


@dataclass(frozen=True)
class GraphRecord(Record):
    """graph.json: node counts per type, the relations (source type, name, target type) in the order of
    graph.safetensors, edge counts, node names, and the builder's `meta`."""

    num_nodes: dict[str, int]
    relations: list[tuple[str, ...]]
    num_edges: dict[str, int] = field(default_factory=dict)
    node_names: dict[str, list[Any]] = field(default_factory=dict)
    meta: GraphMeta = field(default_factory=GraphMeta)


@dataclass
class EdgeSet:
    src: np.ndarray  # int64 [E]
    dst: np.ndarray  # int64 [E]
    weight: np.ndarray  # float32 [E]

    def __len__(self) -> int:
        return int(self.src.shape[0])


@dataclass
class KnowledgeGraph:
    num_nodes: dict[str, int]
    edges: dict[EdgeType, EdgeSet]
    # for node types other than user/item
    node_names: dict[str, list[str]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def relations(
        self, src: str | None = None, dst: str | None = None
    ) -> list[EdgeType]:
        return [
            k
            for k in self.edges
            if (src is None or k[0] == src) and (dst is None or k[2] == dst)
        ]

    def node_name(self, node_type: str, index: int) -> str:
        names = self.node_names.get(node_type)
        return str(names[index]) if names else f"{node_type} {index}"

    def relation_kind(self, key: EdgeType) -> str:
        return self.meta.get("relation_kinds", {}).get("|".join(key), "other")

    def node_offsets(self) -> dict[str, int]:
        """Where each node type starts in the homogeneous numbering (types in `num_nodes` order)."""
        starts = np.concatenate([[0], np.cumsum(list(self.num_nodes.values()))])
        return {t: int(o) for t, o in zip(self.num_nodes, starts)}

    def to_homogeneous(
        self, relations: list[EdgeType] | None = None, undirected: bool = True
    ) -> sp.csr_matrix:
        """All (or the given) relations as one CSR adjacency over every node (offsets from `node_offsets`),
        symmetrised when `undirected`. Entries are summed edge weights."""
        off = self.node_offsets()
        n = sum(self.num_nodes.values())
        keys = list(self.edges) if relations is None else relations
        src = [self.edges[k].src + off[k[0]] for k in keys]
        dst = [self.edges[k].dst + off[k[2]] for k in keys]
        w = [self.edges[k].weight for k in keys]
        if undirected:
            src, dst, w = src + dst, dst + src, w + w
        cat = lambda xs, dt: (
            np.concatenate(xs).astype(dt, copy=False) if xs else np.zeros(0, dt)
        )
        return sp.csr_matrix(
            (cat(w, np.float32), (cat(src, np.int64), cat(dst, np.int64))), shape=(n, n)
        )

    def to_hetero_data(self, reverse: bool = True) -> HeteroData:
        """A torch-geometric HeteroData: `edge_index` [2, E] int64 sorted by (src, dst) so CSR conversion needs
        no re-sort, `edge_weight` float32 [E]; with `reverse`, each relation also as (dst, "rev_<rel>", src)."""
        import torch

        data = _extra("torch_geometric.data", "to_hetero_data").HeteroData()
        for t, n in self.num_nodes.items():
            data[t].num_nodes = int(n)
        for (s, r, d), e in self.edges.items():
            pairs = [((s, r, d), e.src, e.dst)]
            if reverse:
                pairs.append(((d, f"rev_{r}", s), e.dst, e.src))
            for key, a, b in pairs:
                order = _csr_order(a, b, self.num_nodes[key[2]])
                a, b, w = (
                    (a, b, e.weight)
                    if order is None
                    else (a[order], b[order], e.weight[order])
                )
                data[key].edge_index = torch.from_numpy(
                    np.stack([a, b]).astype(np.int64, copy=False)
                )
                data[key].edge_weight = torch.from_numpy(
                    np.ascontiguousarray(w, dtype=np.float32)
                )
        return data

    def to_networkx(self, relations: list[EdgeType] | None = None) -> nx.MultiDiGraph:
        """A networkx MultiDiGraph for inspection and small graphs: nodes (type, index) with `type` and `name`,
        one edge per stored edge keyed by relation, with `weight`. Not for the hot path (per-edge Python)."""
        g = _extra("networkx", "to_networkx").MultiDiGraph()
        for t, n in self.num_nodes.items():
            g.add_nodes_from(
                ((t, i), {"type": t, "name": self.node_name(t, i)}) for i in range(n)
            )
        for key in list(self.edges) if relations is None else relations:
            s, r, d = key
            e = self.edges[key]
            g.add_edges_from(
                ((s, int(a)), (d, int(b)), r, {"relation": r, "weight": float(w)})
                for a, b, w in zip(e.src.tolist(), e.dst.tolist(), e.weight.tolist())
            )
        return g

    def to_scipy(self, key: EdgeType) -> sp.csr_matrix:
        """The relation as a scipy CSR matrix [num_nodes[src], num_nodes[dst]] of edge weights."""
        e = self.edges[key]
        return sp.csr_matrix(
            (e.weight, (e.src, e.dst)),
            shape=(self.num_nodes[key[0]], self.num_nodes[key[2]]),
        )

    def save(self, workspace: Workspace | str | Path) -> Path:
        ws = Workspace.of(workspace)
        tensors = {}
        for (s, r, d), e in self.edges.items():
            name = f"{s}|{r}|{d}"
            tensors[f"{name}/src"] = np.ascontiguousarray(e.src, dtype=np.int64)
            tensors[f"{name}/dst"] = np.ascontiguousarray(e.dst, dtype=np.int64)
            tensors[f"{name}/weight"] = np.ascontiguousarray(e.weight, dtype=np.float32)
        target = ws.stage_dir("graph")
        with ws.new_stage("graph") as tmp:
            # the umask's mode, as every artifact
            write_tensors(tmp / "graph.safetensors", tensors)
            GraphRecord(
                self.num_nodes,
                list(self.edges),
                {"|".join(k): len(e) for k, e in self.edges.items()},
                self.node_names,
                GraphMeta(
                    self.meta.get("relation_kinds", {}),
                    {k: v for k, v in self.meta.items() if k != "relation_kinds"},
                ),
            ).write(tmp / "graph.json")
        return target

    @classmethod
    def load(cls, workspace: Workspace | str | Path) -> KnowledgeGraph:
        ws = Workspace.of(workspace)
        d = ws.require("graph")
        info = _graph_info(d / "graph.json")
        path = d / "graph.safetensors"
        tensors = read_tensors(path)
        edges = {}
        for key in info.relations:
            name = "|".join(key)
            check_tensors(
                tensors,
                {
                    f"{name}/src": ("int64", ("edges",)),
                    f"{name}/dst": ("int64", ("edges",)),
                    f"{name}/weight": ("float32", ("edges",)),
                },
                path,
                REBUILD,
            )
            e = EdgeSet(
                tensors[f"{name}/src"],
                tensors[f"{name}/dst"],
                tensors[f"{name}/weight"],
            )
            for end, nodes, n in (
                ("src", e.src, info.num_nodes[key[0]]),
                ("dst", e.dst, info.num_nodes[key[2]]),
            ):
                if len(nodes) and (nodes.min() < 0 or nodes.max() >= n):
                    raise InputError(
                        f"tensor '{name}/{end}' holds node indices outside 0..{n - 1}: {REBUILD}",
                        file=path,
                    )
            edges[cast(EdgeType, key)] = e
        return cls(info.num_nodes, edges, info.node_names, info.meta.to_json())


def read_graph_info(workspace: Workspace | str | Path) -> GraphRecord:
    """graph.json (node counts, relations, edge counts, node names, the builder's meta), checked as
    KnowledgeGraph.load checks it, without reading the edges."""
    return _graph_info(Workspace.of(workspace).require("graph") / "graph.json")


def _graph_info(path: Path) -> GraphRecord:
    """graph.json, checked: its structure (GraphRecord), and node types, names and relations that agree."""
    info = GraphRecord.read(path, REBUILD)
    num_nodes = info.num_nodes
    for node_type, n in num_nodes.items():
        if n < 0:
            raise InputError(
                f"'num_nodes.{node_type}' is negative: {REBUILD}", file=path
            )
    for node_type, names in info.node_names.items():
        if node_type in num_nodes and len(names) != num_nodes[node_type]:
            raise InputError(
                f"'node_names.{node_type}' holds {len(names)} names for {num_nodes[node_type]} nodes: "
                f"{REBUILD}",
                file=path,
            )
    for key in info.relations:
        if len(key) != 3 or key[0] not in num_nodes or key[2] not in num_nodes:
            raise InputError(
                f"relation {key} should be [source type, name, target type], with types of 'num_nodes': "
                f"{REBUILD}",
                file=path,
            )
    return info


def _csr_order(src: np.ndarray, dst: np.ndarray, n_dst: int) -> np.ndarray | None:
    """The permutation sorting edges by (src, dst), or None when they already are."""
    key = src.astype(np.int64) * max(1, n_dst) + dst
    if len(key) < 2 or bool((key[1:] >= key[:-1]).all()):
        return None
    return np.argsort(key, kind="stable")


def _extra(module: str, view: str) -> Any:
    """A module of the [pyg] extra, or one line saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(
            f"KnowledgeGraph.{view} needs {module.split('.')[0]}: pip install 'graphrec[pyg]'"
        ) from None
