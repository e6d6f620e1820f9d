"""The knowledge graph as typed node sets and typed edge lists, persisted as safetensors + JSON.

Node types: "user" and "item" (indices = the dataset's dense indices), one type per attribute family
("genres", "year", "gender", ...), "entity" for external triples. Each relation is stored once, forward,
as (src_type, relation, dst_type) -> src indices, dst indices, weights; consumers add reverse edges.

    graph/graph.safetensors   "<src>|<rel>|<dst>/src", ".../dst" int64 [E], ".../weight" float32 [E]
    graph/graph.json          num_nodes, relations, node_names (attribute values / entity ids), meta
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from graphrec.errors import InputError
from graphrec.io import atomic_dir, read_json, read_tensors
from graphrec.workspace import Workspace

EdgeType = tuple[str, str, str]


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
    node_names: dict[str, list[str]] = field(default_factory=dict)  # for node types other than user/item
    meta: dict[str, Any] = field(default_factory=dict)

    def relations(self, src: str | None = None, dst: str | None = None) -> list[EdgeType]:
        return [k for k in self.edges if (src is None or k[0] == src) and (dst is None or k[2] == dst)]

    def to_scipy(self, key: EdgeType):
        """The relation as a scipy CSR matrix [num_nodes[src], num_nodes[dst]] of edge weights."""
        import scipy.sparse as sp

        e = self.edges[key]
        return sp.csr_matrix((e.weight, (e.src, e.dst)), shape=(self.num_nodes[key[0]], self.num_nodes[key[2]]))

    def save(self, workspace: Workspace | str | Path) -> Path:
        ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
        from safetensors.numpy import save_file

        tensors = {}
        for (s, r, d), e in self.edges.items():
            name = f"{s}|{r}|{d}"
            tensors[f"{name}/src"] = np.ascontiguousarray(e.src, dtype=np.int64)
            tensors[f"{name}/dst"] = np.ascontiguousarray(e.dst, dtype=np.int64)
            tensors[f"{name}/weight"] = np.ascontiguousarray(e.weight, dtype=np.float32)
        target = ws.stage_dir("graph")
        with atomic_dir(target) as tmp:
            save_file(tensors, str(tmp / "graph.safetensors"))
            import json
            (tmp / "graph.json").write_text(json.dumps({
                "num_nodes": self.num_nodes, "relations": [list(k) for k in self.edges],
                "num_edges": {"|".join(k): len(e) for k, e in self.edges.items()},
                "node_names": self.node_names, "meta": self.meta}, indent=1) + "\n", encoding="utf-8")
        return target

    @classmethod
    def load(cls, workspace: Workspace | str | Path) -> "KnowledgeGraph":
        ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
        d = ws.require("graph")
        info = read_json(d / "graph.json")
        t = read_tensors(d / "graph.safetensors")
        edges = {}
        for s, r, dd in info["relations"]:
            name = f"{s}|{r}|{dd}"
            try:
                edges[(s, r, dd)] = EdgeSet(t[f"{name}/src"], t[f"{name}/dst"], t[f"{name}/weight"])
            except KeyError:
                raise InputError(f"graph tensors lack relation {name}: rebuild with `graphrec build`", file=d) from None
        return cls(info["num_nodes"], edges, info.get("node_names", {}), info.get("meta", {}))
