"""Explanation paths on a hand-made graph whose best paths and scores can be worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from graphrec.core.errors import InputError
from graphrec.kg.explain import CO_SMOOTHING, Explainer, render
from graphrec.kg.graph import EdgeSet, KnowledgeGraph


def _edges(src, dst, w=None):
    return EdgeSet(
        np.array(src, np.int64),
        np.array(dst, np.int64),
        np.ones(len(src), np.float32) if w is None else np.array(w, np.float32),
    )


@pytest.fixture
def graph() -> KnowledgeGraph:
    """Users 0-2, items 0-4 (item 4 isolated). u0 liked items 0 (weight 5) and 1 (weight 3)."""
    edges = {
        ("user", "interacts", "item"): _edges(
            [0, 0, 1, 1, 2], [0, 1, 0, 2, 3], [5, 3, 4, 4, 4]
        ),
        ("item", "has_genres", "genres"): _edges([0, 1, 2, 3], [0, 1, 0, 2]),
        ("user", "has_gender", "gender"): _edges([0, 2], [0, 0]),
        ("item", "similar_text", "item"): _edges([1], [2], [0.9]),
        ("item", "directed_by", "entity"): _edges([1, 2], [0, 0]),
    }
    kinds = {
        "user|interacts|item": "interaction",
        "item|has_genres|genres": "item_attribute",
        "user|has_gender|gender": "user_attribute",
        "item|similar_text|item": "similarity",
        "item|directed_by|entity": "triple",
    }
    return KnowledgeGraph(
        {"user": 3, "item": 5, "genres": 3, "gender": 1, "entity": 1},
        edges,
        {"genres": ["Drama", "Comedy", "Noir"], "gender": ["F"], "entity": ["Kubrick"]},
        {"relation_kinds": kinds},
    )


def _explainer(graph):
    return Explainer(
        graph,
        item_labels=[f"Movie{i}" for i in range(5)],
        user_labels=["ann", "bob", "cy"],
    )


def test_ranked_paths_with_scores(graph):
    paths = _explainer(graph).paths(0, 2, k=10)
    assert [p.kind for p in paths] == [
        "shared_node",
        "similar_item",
        "shared_node",
        "co_interaction",
    ]
    drama, sim, kubrick, co = paths
    assert [(s.node_type, s.index) for s in co.nodes] == [
        ("user", 0),
        ("item", 0),
        ("user", 1),
        ("item", 2),
    ]
    assert co.relations == [
        "interacts",
        "rev_interacts",
        "interacts",
    ] and co.score == pytest.approx(1 / (1 + CO_SMOOTHING))
    rarity = math.log1p(5 / 2) / math.log1p(5)  # Drama is on 2 of 5 items
    assert [s.name for s in drama.nodes] == ["ann", "Movie0", "Drama", "Movie2"]
    assert drama.relations == ["interacts", "has_genres", "rev_has_genres"]
    assert drama.score == pytest.approx(rarity)
    assert [s.name for s in sim.nodes] == [
        "ann",
        "Movie1",
        "Movie2",
    ] and sim.score == pytest.approx(0.6 * 0.9)
    assert kubrick.label == "directed_by" and kubrick.nodes[2].name == "Kubrick"
    assert kubrick.score == pytest.approx(0.6 * rarity)
    assert str(sim) == "user:ann -interacts-> item:Movie1 -similar_text-> item:Movie2"


def test_text_groups_reasons_by_liked_item(graph):
    text = _explainer(graph).text(0, 2)
    assert text == (
        "because you liked Movie0 (shared genres: Drama; also liked by 1 of this item's 1 users), "
        "Movie1 (similar text; shared directed_by: Kubrick)"
    )


def test_k_limits_paths(graph):
    assert len(_explainer(graph).paths(0, 2, k=2)) == 2


def test_already_interacted(graph):
    paths = _explainer(graph).paths(0, 1)
    assert [p.kind for p in paths] == ["interacted"]
    assert render(paths) == "you already interacted with Movie1"


def test_shortest_path_fallback_through_user_attribute(graph):
    # ann and cy share gender F; cy liked Movie3; no liked item of ann's relates to Movie3
    paths = _explainer(graph).paths(0, 3)
    assert len(paths) == 1 and paths[0].kind == "path"
    assert [s.name for s in paths[0].nodes] == ["ann", "F", "cy", "Movie3"]
    assert paths[0].relations == ["has_gender", "rev_has_gender", "interacts"]
    assert render(paths) == "connected through F > cy"


def test_unreachable_item_and_bad_index(graph):
    ex = _explainer(graph)
    assert ex.paths(0, 4) == [] and ex.text(0, 4) == "no connection in the graph"
    with pytest.raises(InputError):
        ex.paths(0, 99)
