"""Explanation paths for a (user, item) pair: the short, meaningful routes through the graph from a user to a
recommended item, ranked, with names, and rendered as "because you liked X (shared genres: Drama)".

Patterns, each scored in [0, 1] (x the user's relative weight for the liked item):
  shared node    user -interacts-> liked item -has_genres-> Drama <-has_genres- item   score: rarity of the node
  similar item   user -interacts-> liked item -similar_image-> item                    score: the similarity
  co-interaction user -interacts-> liked item <-interacts- other user -interacts-> item  score: share of the
                 item's users who also have the liked item (smoothed towards 0 for items with few users)
When none applies, the shortest path of any kind (breadth-first) is returned. Sparse matrices are built once
per `Explainer`, so the ranking stage can explain many pairs cheaply.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order

from graphrec.core.errors import InputError
from graphrec.core.workspace import Workspace, reads
from graphrec.data.dataset import Dataset
from graphrec.kg.graph import EdgeType, KnowledgeGraph
from graphrec.kg.stats import check_matches

CO_USERS_CAP = 1000  # co-interaction support is estimated from at most this many of the item's users
CO_SMOOTHING = 5.0  # pseudo-users added to the denominator: "1 of 1 users" is weak evidence, not certainty


@dataclass
class PathStep:
    node_type: str
    index: int
    name: str


@dataclass
class ExplanationPath:
    kind: str  # interacted | shared_node | similar_item | co_interaction | path
    nodes: list[PathStep]
    # relations[k] joins nodes[k] and nodes[k+1]; "rev_" marks a reversed edge
    relations: list[str]
    score: float
    label: str = ""  # shared node family, similarity modality or co-interaction support, for rendering

    def __str__(self) -> str:
        parts = [f"{self.nodes[0].node_type}:{self.nodes[0].name}"]
        for rel, node in zip(self.relations, self.nodes[1:]):
            parts.append(f"-{rel}-> {node.node_type}:{node.name}")
        return " ".join(parts)


@dataclass(frozen=True)
class _Query:
    """One explanation request as the path finders read it: the user, the item, the user's liked items and
    their weights (largest 1), the path's two ends, the liking relation and how many paths per kind."""

    user: int
    item: int
    liked: np.ndarray
    weight: np.ndarray
    user_step: PathStep
    target: PathStep
    rel: str
    k: int


class Explainer:
    def __init__(
        self,
        graph: KnowledgeGraph,
        item_labels: Sequence[str] | None = None,
        user_labels: Sequence[str] | None = None,
    ):
        self.graph = graph
        self.n_items = graph.num_nodes["item"]
        self.item_labels = item_labels
        self.user_labels = user_labels
        keys = [
            k
            for k in graph.relations("user", "item")
            if graph.relation_kind(k) == "interaction"
        ]
        if not keys:
            raise InputError(
                "the graph has no user-item interaction relation to explain from"
            )
        self.likes_key = keys[0]
        self.likes = graph.to_scipy(self.likes_key)  # [users, items]
        self.liked_by = self.likes.T.tocsr()
        # (relation, [items, nodes], rarity)
        self.item_nodes: list[tuple[EdgeType, sp.csr_matrix, np.ndarray]] = []
        # symmetric [items, items]
        self.item_items: list[tuple[EdgeType, sp.csr_matrix]] = []
        for key in graph.edges:
            if (
                graph.relation_kind(key) == "interaction"
                or "item" not in (key[0], key[2])
                or "user" in (key[0], key[2])
            ):
                continue
            m = graph.to_scipy(key)
            if key[0] == key[2] == "item":
                self.item_items.append((key, m.maximum(m.T).tocsr()))
                continue
            m = m if key[0] == "item" else m.T.tocsr()
            m.data[:] = 1.0
            deg = np.asarray(m.sum(axis=0)).ravel()
            # rarer shared nodes explain more; a node every item has explains nothing
            rarity = np.log1p(self.n_items / np.maximum(deg, 1)) / np.log1p(
                self.n_items
            )
            rarity[deg >= self.n_items] = 0.0
            self.item_nodes.append((key, m, rarity))
        self._adj = None

    def _name(self, node_type: str, index: int) -> str:
        labels = {"item": self.item_labels, "user": self.user_labels}.get(node_type)
        return (
            str(labels[index])
            if labels is not None
            else self.graph.node_name(node_type, index)
        )

    def _step(self, node_type: str, index: int) -> PathStep:
        return PathStep(node_type, int(index), self._name(node_type, int(index)))

    def paths(self, user: int, item: int, k: int = 5) -> list[ExplanationPath]:
        """The k best explanation paths from user index `user` to item index `item`, best first."""
        if not (0 <= user < self.graph.num_nodes["user"] and 0 <= item < self.n_items):
            raise InputError(f"user {user} or item {item} is out of range of the graph")
        rel = self.likes_key[1]
        row = self.likes[user]
        liked, weight = row.indices, row.data.astype(np.float64)
        user_step, target = self._step("user", user), self._step("item", item)
        if np.any(liked == item):
            return [ExplanationPath("interacted", [user_step, target], [rel], 1.0)]
        if len(weight) and weight.max() > 0:
            weight = weight / weight.max()
        else:
            weight = np.ones(len(weight))
        q = _Query(user, item, liked, weight, user_step, target, rel, k)
        found = self._shared_nodes(q) + self._similar_items(q) + self._co_interaction(q)
        if not found:
            return self._shortest(user, item)
        found.sort(key=lambda p: -p.score)
        return found[:k]

    def _shared_nodes(self, q: _Query) -> list[ExplanationPath]:
        """Up to k paths per relation through a node (genre, entity...) that a liked item shares with the item."""
        found: list[ExplanationPath] = []
        for key, m, rarity in self.item_nodes:
            nodes = m[q.item].indices
            if not len(nodes) or not len(q.liked):
                continue
            hit = m[q.liked][:, nodes].tocoo()
            score = q.weight[hit.row] * rarity[nodes[hit.col]]
            back = key[1] if key[0] == "item" else f"rev_{key[1]}"
            family = key[2] if key[0] == "item" else key[0]
            label = key[1] if family == "entity" else family
            for h in _top(score, q.k):
                found.append(
                    ExplanationPath(
                        "shared_node",
                        [
                            q.user_step,
                            self._step("item", q.liked[hit.row[h]]),
                            self._step(family, nodes[hit.col[h]]),
                            q.target,
                        ],
                        [q.rel, back, _reverse(back)],
                        float(score[h]),
                        label,
                    )
                )
        return found

    def _similar_items(self, q: _Query) -> list[ExplanationPath]:
        """Up to k paths per similarity relation from a liked item that is similar to the item."""
        found: list[ExplanationPath] = []
        for key, m in self.item_items:
            if not len(q.liked):
                continue
            score = q.weight * np.minimum(
                1.0, m[q.liked][:, [q.item]].toarray().ravel()
            )
            label = (
                key[1][len("similar_") :] if key[1].startswith("similar_") else key[1]
            )
            for r in _top(score, q.k):
                found.append(
                    ExplanationPath(
                        "similar_item",
                        [q.user_step, self._step("item", q.liked[r]), q.target],
                        [q.rel, key[1]],
                        float(score[r]),
                        label,
                    )
                )
        return found

    def _co_interaction(self, q: _Query) -> list[ExplanationPath]:
        """Up to k paths through another user of the item who also has a liked item, scored by their share."""
        others = self.liked_by[q.item].indices
        others = others[others != q.user][:CO_USERS_CAP]
        if not len(others) or not len(q.liked):
            return []
        sub = self.likes[others][:, q.liked].tocsc()
        # how many of the item's users also have each liked item
        support = np.diff(sub.indptr)
        score = q.weight * support / (len(others) + CO_SMOOTHING)
        return [
            ExplanationPath(
                "co_interaction",
                [
                    q.user_step,
                    self._step("item", q.liked[r]),
                    self._step("user", others[sub.indices[sub.indptr[r]]]),
                    q.target,
                ],
                [q.rel, f"rev_{q.rel}", q.rel],
                float(score[r]),
                f"{int(support[r])} of this item's {len(others)} users",
            )
            for r in _top(score, q.k)
        ]

    def _shortest(self, user: int, item: int) -> list[ExplanationPath]:
        """Any shortest path (breadth-first over all relations, both directions), or none."""
        if self._adj is None:
            self._adj = self.graph.to_homogeneous()
        off = self.graph.node_offsets()
        start, goal = off["user"] + user, off["item"] + item
        _, pred = breadth_first_order(
            self._adj, start, directed=True, return_predecessors=True
        )
        if pred[goal] < 0:
            return []
        chain = [goal]
        while chain[-1] != start:
            chain.append(int(pred[chain[-1]]))
        chain.reverse()
        bounds = sorted(off.items(), key=lambda kv: kv[1])
        typed = [next((t, n - o) for t, o in reversed(bounds) if n >= o) for n in chain]
        steps = [self._step(t, i) for t, i in typed]
        rels = [self._relation(a, b) for a, b in zip(typed, typed[1:])]
        return [ExplanationPath("path", steps, rels, 0.0)]

    def _relation(self, a: tuple[str, int], b: tuple[str, int]) -> str:
        for (s, r, d), e in self.graph.edges.items():
            if (s, d) == (a[0], b[0]) and np.any((e.src == a[1]) & (e.dst == b[1])):
                return r
            if (s, d) == (b[0], a[0]) and np.any((e.src == b[1]) & (e.dst == a[1])):
                return f"rev_{r}"
        return "?"

    def text(self, user: int, item: int, k: int = 3) -> str:
        """A one-line reason, grouping the best paths by liked item."""
        return render(self.paths(user, item, k=max(k * 4, 10)), k)


def render(paths: list[ExplanationPath], k: int = 3) -> str:
    """'because you liked X (shared genres: Drama, Comedy; similar image)' from ranked paths."""
    if not paths:
        return "no connection in the graph"
    if paths[0].kind == "interacted":
        return f"you already interacted with {paths[0].nodes[-1].name}"
    if paths[0].kind == "path":
        return "connected through " + " > ".join(s.name for s in paths[0].nodes[1:-1])
    reasons: dict[str, list[str]] = {}
    for p in paths:
        liked = p.nodes[1].name
        if liked not in reasons and len(reasons) == k:
            continue
        if p.kind == "shared_node":
            why = f"shared {p.label}: {p.nodes[2].name}"
        elif p.kind == "similar_item":
            why = f"similar {p.label}"
        else:
            why = f"also liked by {p.label}"
        reasons.setdefault(liked, [])
        if why not in reasons[liked]:
            reasons[liked].append(why)
    return "because you liked " + ", ".join(
        f"{liked} ({'; '.join(r)})" for liked, r in reasons.items()
    )


def _top(score: np.ndarray, k: int) -> list[int]:
    """Positions of the k highest positive scores, best first (stable among ties)."""
    pos = np.flatnonzero(score > 0)
    return pos[np.argsort(-score[pos], kind="stable")[:k]].tolist()


def _reverse(rel: str) -> str:
    return rel[len("rev_") :] if rel.startswith("rev_") else f"rev_{rel}"


@reads
def explain_pair(
    workspace: Workspace | str | os.PathLike, user_id: str, item_id: str, k: int = 5
) -> tuple[list[ExplanationPath], str]:
    """Paths and text for external ids, from a workspace's saved graph and dataset."""

    ws = Workspace.of(workspace)
    graph, ds = KnowledgeGraph.load(ws), Dataset.load(ws)
    check_matches(graph, ds)
    user, item = int(ds.user_index(user_id)[0]), int(ds.item_index(item_id)[0])
    ex = Explainer(graph, ds.item_labels(), ds.user_ids.astype(str).tolist())
    return ex.paths(user, item, k), ex.text(user, item)
