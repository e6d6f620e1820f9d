"""Graph building: training-only interactions, the leak check, attributes, kNN, conversions, persistence, CLI."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import shared_path
from typer.testing import CliRunner

import graphrec.kg.build as kb
from graphrec.core.errors import InputError
from graphrec.core.feature_store import Features, save_features
from graphrec.core.workspace import Workspace
from graphrec.data.build import build_dataset
from graphrec.data.dataset import Dataset
from graphrec.data.readers import read_table
from graphrec.kg.build import build_graph, knn_edges, run_build
from graphrec.kg.graph import EdgeSet, KnowledgeGraph
from graphrec.kg.stats import graph_stats, leak_check

# (user, item) -> split part; item i4 is a cold item, i6 (no attributes) too
PARTS = {
    ("u1", "i1"): "train",
    ("u1", "i2"): "train",
    ("u1", "i5"): "valid",
    ("u2", "i2"): "train",
    ("u2", "i3"): "train",
    ("u2", "i4"): "cold_valid",
    ("u3", "i1"): "train",
    ("u3", "i4"): "cold_test",
    ("u3", "i5"): "train",
    ("u4", "i3"): "test",
    ("u4", "i6"): "cold_test",
    ("u4", "i2"): "train",
}


@pytest.fixture
def ds(tiny_files) -> Dataset:
    inter = read_table(tiny_files["interactions"])
    part = inter[["user_id", "item_id"]].apply(tuple, axis=1).map(PARTS)
    frames = {
        p: inter[(part == p).to_numpy()].reset_index(drop=True)
        for p in sorted(set(PARTS.values()))
    }
    for f in frames.values():
        f.attrs = dict(inter.attrs)
    return build_dataset(
        frames,
        read_table(tiny_files["items"]),
        read_table(tiny_files["users"]),
        images_dir=tiny_files["images"],
        user_attribute_columns=["age_band", "gender"],
    )


@pytest.fixture
def ws(ds, tmp_path) -> Workspace:
    w = Workspace(tmp_path / "ws")
    ds.save(w)
    return w


def _text_features(ds: Dataset, seed: int = 0) -> Features:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(ds.n_items, 8)).astype(np.float32)
    values[5] = values[2] + 0.01  # i6 (no attributes) looks like i3
    mask = np.ones(ds.n_items, bool)
    mask[0] = False
    values[0] = 0
    return Features("text", values, mask, {"item_ids": ds.item_ids.tolist()})


def _pairs(graph: KnowledgeGraph, ds: Dataset) -> set[tuple[str, str]]:
    e = graph.edges[("user", "interacts", "item")]
    return {(ds.user_ids[u], ds.item_ids[i]) for u, i in zip(e.src, e.dst)}


def test_training_interactions_only_and_leak_check(ds):
    g = build_graph(ds)
    assert _pairs(g, ds) == {p for p, part in PARTS.items() if part == "train"}
    leak = leak_check(g, ds)
    assert leak["ok"] and leak["leaked"] == 0 and leak["held_out"] == 5
    # an edge for a held-out pair must be caught
    e = g.edges[("user", "interacts", "item")]
    u, i = ds.user_index("u4")[0], ds.item_index("i3")[0]
    g.edges[("user", "interacts", "item")] = EdgeSet(
        np.append(e.src, u), np.append(e.dst, i), np.append(e.weight, 1)
    )
    leak = leak_check(g, ds)
    assert (
        not leak["ok"]
        and leak["leaked"] == 1
        and leak["examples"] == ["user u4 item i3 (test)"]
    )


def test_a_dataset_that_is_not_split_is_built_with_every_interaction(tiny_files):
    """Serve mode: a dataset imported whole is all training data, so its graph holds every interaction."""
    ds = build_dataset(
        read_table(tiny_files["interactions"]), read_table(tiny_files["items"])
    )
    g = build_graph(ds)
    assert len(g.edges[("user", "interacts", "item")]) == 12 and g.meta["unsplit"]
    assert leak_check(g, ds)["ok"] is False


def test_attribute_nodes_and_cold_items_keep_content_edges(ds):
    g = build_graph(ds)
    assert g.node_names["genres"] == ["Action", "Comedy", "Drama"]
    assert g.node_names["decade"] == ["1990s", "2000s"]
    # PII dropped
    assert (
        set(g.node_names) >= {"year", "age_band", "gender"} and "zip" not in g.num_nodes
    )
    has = g.to_scipy(("item", "has_genres", "genres")).toarray()
    i4 = ds.item_index("i4")[0]
    assert has[i4].tolist() == [1, 1, 0]  # cold item i4: Action|Comedy
    assert has[ds.item_index("i6")[0]].sum() == 0
    assert i4 not in g.edges[("user", "interacts", "item")].dst
    for key, e in g.edges.items():  # stored sorted by (src, dst), no repeats
        k = e.src * g.num_nodes[key[2]] + e.dst
        assert (np.diff(k) > 0).all(), key


def test_cold_reachability_and_stats(ds):
    st = graph_stats(build_graph(ds), ds)
    cold = st["cold_items"]
    # i4 shares genres with warm items
    assert cold["count"] == 2 and cold["via_attributes"]["count"] == 1
    assert cold["dead_ends"] == 1 and cold["dead_end_examples"] == ["i6"]
    assert st["nodes"]["user"] == 4 and st["edges"]["user|interacts|item"] == 7
    assert st["isolated"]["item"] == 1 and st["components"]["count"] == 2
    with_knn = graph_stats(
        build_graph(ds, {"text": _text_features(ds)}, item_knn=2), ds
    )["cold_items"]
    assert with_knn["via_similarity"]["count"] >= 1 and with_knn["dead_ends"] == 0


def test_knn_edges_match_brute_force(monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    mask = rng.random(40) > 0.2
    monkeypatch.setattr(kb, "KNN_BLOCK_CELLS", 64)  # several blocks
    src, dst, sim = knn_edges(x, mask, 3, progress=False)
    idx = np.flatnonzero(mask)
    xn = x[idx] / np.linalg.norm(x[idx], axis=1, keepdims=True)
    s = xn @ xn.T
    np.fill_diagonal(s, -np.inf)
    for r, i in enumerate(idx):
        want = {int(idx[j]) for j in np.argsort(-s[r])[:3] if s[r, j] > 0}
        assert set(dst[src == i].tolist()) == want
    assert (
        mask[src].all() and mask[dst].all() and (sim > 0).all() and (src != dst).all()
    )


def test_hetero_data_is_csr_ready_with_reverse_relations(ds):
    g = build_graph(ds, {"text": _text_features(ds)}, item_knn=2)
    data = g.to_hetero_data()
    assert set(data.edge_types) == set(g.edges) | {
        (d, f"rev_{r}", s) for s, r, d in g.edges
    }
    for key in data.edge_types:
        ei = data[key].edge_index
        k = ei[0] * data[key[2]].num_nodes + ei[1]
        assert ei.dtype == torch.int64 and bool((k[1:] >= k[:-1]).all()), key
        assert data[key].edge_weight.shape == (ei.shape[1],)
    fwd, rev = data["user", "interacts", "item"], data["item", "rev_interacts", "user"]
    assert torch.equal(
        torch.sort(fwd.edge_weight).values, torch.sort(rev.edge_weight).values
    )
    assert len(g.to_hetero_data(reverse=False).edge_types) == len(g.edges)


@pytest.mark.parametrize(
    ("module", "view"),
    [("torch_geometric.data", "to_hetero_data"), ("networkx", "to_networkx")],
)
def test_the_views_without_the_pyg_extra_say_how_to_install_it(
    ds, monkeypatch, module, view
):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(
        InputError,
        match=rf"KnowledgeGraph.{view} needs .*pip install 'graphrec\[pyg\]'",
    ):
        getattr(build_graph(ds), view)()


def test_networkx_view(ds):
    g = build_graph(ds)
    nx_g = g.to_networkx()
    assert nx_g.number_of_nodes() == sum(g.num_nodes.values())
    assert nx_g.number_of_edges() == sum(len(e) for e in g.edges.values())
    assert nx_g.nodes[("genres", 2)]["name"] == "Drama"
    u1, i1 = (
        ("user", int(ds.user_index("u1")[0])),
        ("item", int(ds.item_index("i1")[0])),
    )
    assert nx_g.edges[u1, i1, "interacts"]["weight"] == 4.0


def test_persistence_round_trip_and_rebuild_on_change(ws, ds):
    save_features(ws.stage_dir("features"), _text_features(ds))
    first = run_build(ws, progress=False)
    assert first.rebuilt and first.graph.meta["settings"]["item_knn"] == 10
    loaded = KnowledgeGraph.load(ws)
    assert (
        loaded.num_nodes == first.graph.num_nodes
        and loaded.node_names == first.graph.node_names
    )
    assert loaded.edges.keys() == first.graph.edges.keys()
    for k, e in first.graph.edges.items():
        for a in ("src", "dst", "weight"):
            np.testing.assert_array_equal(getattr(loaded.edges[k], a), getattr(e, a))
    assert loaded.meta["relation_kinds"] == first.graph.meta["relation_kinds"]
    assert not run_build(ws, progress=False).rebuilt  # nothing changed
    assert run_build(ws, item_knn=1, progress=False).rebuilt  # settings changed
    assert not run_build(ws, item_knn=1, progress=False).rebuilt
    ds.interactions.loc[0, "weight"] = 1.0  # dataset changed
    ds.save(ws)
    assert run_build(ws, item_knn=1, progress=False).rebuilt
    rec = ws.stage_record("graph")
    assert (
        "dataset/interactions.parquet" in rec.inputs
        and "features/text.safetensors" in rec.inputs
    )


def test_run_build_errors(ws):
    with pytest.raises(InputError, match="graphrec encode"):
        run_build(ws, item_knn=5, progress=False)
    with pytest.raises(InputError, match="--entity-map needs --triples"):
        run_build(ws, entity_map="map.txt", progress=False)
    with pytest.raises(InputError, match="not found"):
        run_build(ws, triples=ws.path / "missing.txt", progress=False)


def test_triples_become_entity_edges(ws, ds, tmp_path):
    (tmp_path / "kg.txt").write_text(
        "100 directed_by 900\n101 directed_by 900\n900 born_in 901\n"
        "100 directed_by 900\n555 directed_by 900\n102 sequel_of 100\n"
    )
    (tmp_path / "map.txt").write_text("i1\t100\ni2\t101\ni3\t102\n")
    res = run_build(
        ws, triples=tmp_path / "kg.txt", entity_map=tmp_path / "map.txt", progress=False
    )
    g = res.graph
    assert g.node_names["entity"] == ["900", "901"]
    assert len(g.edges[("item", "directed_by", "entity")]) == 2
    assert len(g.edges[("entity", "born_in", "entity")]) == 1
    seq = g.edges[("item", "sequel_of", "item")]
    assert (int(seq.src[0]), int(seq.dst[0])) == (2, 0)
    rep = g.meta["triples"][0]
    assert (
        rep["duplicates_dropped"] == 1
        and rep["unknown_heads"] == 1
        and rep["unknown_head_examples"] == ["555"]
    )
    assert any("1 unknown heads" in n for n in res.notes)


def test_dataset_triples_are_included(ds):
    ds.triples = pd.DataFrame(
        {
            "item": np.array([0, 1], np.int32),
            "relation": ["starring", "starring"],
            "tail": ["Ann Actor", "Ann Actor"],
        }
    )
    g = build_graph(ds)
    e = g.edges[("item", "starring", "entity")]
    assert g.node_names["entity"] == ["Ann Actor"] and e.src.tolist() == [0, 1]


def test_cli_build_stats_explain(ws):
    import graphrec.app.cli as cli

    runner = CliRunner()
    r = runner.invoke(cli.app, ["build", str(ws.path)])
    assert r.exit_code == 0, r.output
    assert "built" in r.output and "no features/ yet" in r.output
    r = runner.invoke(cli.app, ["build", str(ws.path)])
    assert "up to date" in r.output
    r = runner.invoke(cli.app, ["kg", "stats", str(ws.path)])
    assert r.exit_code == 0, r.output
    assert "leak check: ok" in r.output and "dead ends 1" in r.output
    r = runner.invoke(
        cli.app, ["kg", "explain", str(ws.path), "--user", "u1", "--item", "i4"]
    )
    assert r.exit_code == 0, r.output
    assert "because you liked Red Circle (shared genres: Comedy)" in r.output


def test_movielens_100k_user_attributes():
    from graphrec.data.movielens import load_movielens
    from graphrec.data.splits import split_dataset

    ds, _ = load_movielens(shared_path("ml-100k"), "100k")
    ds = split_dataset(ds, cold_items=0.2, seed=0)
    g = build_graph(ds, progress=False)
    st = graph_stats(g, ds)
    assert st["leak_check"]["ok"] and st["edges"]["user|interacts|item"] == len(
        ds.part("train")
    )
    assert st["nodes"]["occupation"] == 21 and st["nodes"]["gender"] == 2
    assert st["edges"]["user|has_occupation|occupation"] == 943
    assert st["cold_items"]["via_attributes"]["share"] > 0.95
