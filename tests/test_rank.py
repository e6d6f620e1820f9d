"""The hybrid ranker and `recommend`: EASE closed form, exclusions, candidates, cold items, persistence."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from rec_helpers import fit_ranker, served_workspace
from typer.testing import CliRunner

from graphrec.core.errors import InputError
from graphrec.core.io import read_json, read_tensors, write_tensors
from graphrec.data.dataset import GIVEN, Dataset
from graphrec.model.closed_form import (
    ease_factors,
    fit_content_maps,
    ideal_lowpass,
    interaction_svd,
)
from graphrec.stages.rank import (
    LOWPASS_GAMMAS,
    RankSettings,
    load_ranker,
    save_ranker,
    select_filter,
    serving_ranker,
)
from graphrec.stages.recommend import recommend, write_recommendations


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    ws = served_workspace(tmp_path_factory.mktemp("rank"))
    return ws, load_ranker(ws)


def test_low_rank_ease_is_ease_at_full_rank():
    rng = np.random.default_rng(1)
    xd = (rng.random((30, 12)) < 0.3).astype(np.float64)
    xd[:, 4] = 0  # an item without interactions gets zero vectors
    x = sp.csr_matrix(xd)
    ub, item = ease_factors(*interaction_svd(x, 12), 5.0)
    p = np.linalg.inv(xd.T @ xd + 5.0 * np.eye(12))
    ref = -p / np.diag(p)[None, :]
    np.fill_diagonal(ref, 0.0)
    # B off its diagonal (the diagonal only scores the user's own items, always excluded)
    lr = ub @ item.T
    off = ~np.eye(12, dtype=bool)
    np.testing.assert_allclose(lr[off], ref[off], rtol=1e-3, atol=1e-5)
    assert not ub[4].any() and not item[4].any()
    # truncated: the best rank-k picture of B, still close to it
    ub3, item3 = ease_factors(*interaction_svd(x, 6), 5.0)
    assert (
        ub3.shape == (12, 6)
        and np.abs((ub3 @ item3.T - ref)[off]).max() < np.abs(ref[off]).max()
    )


def test_fit_saves_state_and_beats_popularity(fitted):
    ws, r = fitted
    info = read_json(ws.stage_dir("model") / "ranker.json")
    closed_form = {"ease", "pop", "content"}
    assert set(info["weights_warm"]) == (
        closed_form | {"gnn"} if info["gnn_kept"] else closed_form
    )
    # the GNN is served only when the blend with it beats the closed-form blend on validation
    mean = lambda fit: np.mean(list(fit.values()))  # noqa: E731
    if info["gnn_kept"]:
        assert mean(info["with_gnn_validation_ndcg"]) > mean(
            info["closed_form_validation_ndcg"]
        )
    assert ("gnn" in r.blocks()) == info["gnn_kept"]
    assert info["fitted_on"]["warm"] > 0 and info["fitted_on"]["cold"] > 0
    t = read_tensors(ws.stage_dir("model") / "ranker.safetensors")
    assert t["ease_item"].dtype == np.float32 and t["ease_item"].shape == (
        90,
        info["ease_dim"],
    )
    # at most the number of users: the rank of the interaction matrix
    assert info["ease_dim"] <= 60
    # planted structure: fitted blend on validation is far better than chance
    assert info["validation_ndcg"]["warm_ndcg"] > 0.3
    again = load_ranker(ws)
    assert again.weights_warm == r.weights_warm and again.cold_offset == r.cold_offset
    np.testing.assert_array_equal(again.item_vectors(), r.item_vectors())


def test_recommend_excludes_given_and_respects_candidates(fitted):
    ws, r = fitted
    ds = Dataset.load(ws)
    recs = recommend(ws, "all", k=10, ranker=r)
    assert list(recs.columns) == ["user_id", "item_id", "rank", "score"]
    assert len(recs) == ds.n_users * 10
    given = ds.part(*GIVEN)
    known = set(zip(ds.user_ids[given["user"]], ds.item_ids[given["item"]]))
    assert not known & set(zip(recs["user_id"], recs["item_id"]))
    assert (
        recs.groupby("user_id")["score"].apply(lambda s: s.is_monotonic_decreasing)
    ).all()
    assert (
        recs.groupby("user_id")["rank"].apply(
            lambda s: s.tolist() == list(range(1, 11))
        )
    ).all()
    cold_ids = ds.item_ids[ds.cold_items()]
    only_cold = recommend(ws, ["u0", "u3"], k=50, candidates=list(cold_ids), ranker=r)
    assert set(only_cold["item_id"]) <= set(cold_ids)
    # fewer allowed candidates than k: lists are shorter, never padded with excluded items
    per_user = only_cold.groupby("user_id").size()
    for u, n in per_user.items():
        seen = set(ds.item_ids[given["item"][ds.user_ids[given["user"]] == u]])
        assert n == len(set(cold_ids) - seen)


def _first_pass_in(monkeypatch, dim: int) -> None:
    """Ranker.topk(approximate=True) with a first pass in `dim` dimensions (the default keeps more than these
    small vectors have, which would make it exact)."""
    import graphrec.model.ann as ann
    import graphrec.stages.rank as rank_mod

    monkeypatch.setattr(
        rank_mod, "ApproximateTopK", functools.partial(ann.ApproximateTopK, dim=dim)
    )


def test_a_first_pass_keeping_every_dimension_gives_the_exact_topk():
    """Vectors shorter than the first pass's dimensions: it keeps every direction, so the lists (exclusions, ties,
    scores) equal the exact ones."""
    from graphrec.stages.rank import Ranker

    rng = np.random.default_rng(0)
    n_users, n_items, d = 300, 2000, 12
    user = rng.normal(size=(n_users, d)).astype(np.float32)
    item = (
        rng.normal(size=(n_items, d)) * rng.uniform(0.2, 3, size=(n_items, 1))
    ).astype(np.float32)
    item[1000:1010] = item[0]  # ties, broken by item index in both passes
    history = sp.random(
        n_users, n_items, density=0.02, format="csr", random_state=1, dtype=np.float32
    )
    history.data[:] = 1
    r = Ranker(
        user,
        item,
        np.ones(n_items, bool),
        np.zeros(n_items, np.float32),
        np.zeros((n_items, 0), np.float32),
        np.zeros((n_items, 0), np.float32),
        None,
    )
    exact_items, exact_scores = r.topk(np.arange(n_users), 20, history, batch=64)
    got_items, got_scores = r.topk(
        np.arange(n_users), 20, history, batch=64, approximate=True
    )
    assert np.array_equal(got_items, exact_items)
    np.testing.assert_allclose(got_scores, exact_scores, rtol=1e-5)
    assert not history[np.arange(n_users)[:, None], got_items].toarray().any()
    # fewer than 5 x 20
    few = r.topk(np.arange(5), 20, history, candidates=np.arange(12), approximate=True)[
        0
    ]
    assert np.array_equal(
        few, r.topk(np.arange(5), 20, history, candidates=np.arange(12))[0]
    )


def test_approximate_topk_finds_most_of_the_exact_lists(monkeypatch):
    from graphrec.stages.rank import Ranker

    _first_pass_in(monkeypatch, 10)  # of 16
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(40, 16))
    item = (
        centres[rng.integers(40, size=5000)] + 0.3 * rng.normal(size=(5000, 16))
    ).astype(np.float32)
    user = (
        centres[rng.integers(40, size=500)] + 0.3 * rng.normal(size=(500, 16))
    ).astype(np.float32)
    history = sp.csr_matrix((500, 5000), dtype=np.float32)
    r = Ranker(
        user,
        item,
        np.ones(5000, bool),
        np.zeros(5000, np.float32),
        np.zeros((5000, 0), np.float32),
        np.zeros((5000, 0), np.float32),
        None,
    )
    exact = r.topk(np.arange(500), 20, history)[0]
    approx = r.topk(np.arange(500), 20, history, approximate=True)[0]
    recall = np.mean([len(np.intersect1d(a, e)) / 20 for a, e in zip(approx, exact)])
    assert recall > 0.9


def test_the_first_pass_is_whitened_by_the_users(monkeypatch):
    """Long vectors whose scores live in a few directions the items barely vary in (as the served blocks: one
    heavily weighted narrow block next to wide ones): the users' whitening finds them, the items' own principal
    directions would not. The first pass keeps the exact dot products when it keeps every direction."""
    import graphrec.model.ann as ann
    from graphrec.stages.rank import Ranker

    _first_pass_in(monkeypatch, 16)
    rng = np.random.default_rng(2)
    n_users, n_items, d = 600, 4000, 160
    item = rng.normal(size=(n_items, d)).astype(np.float32)
    centres = rng.normal(size=(40, 8))
    item[:, :8] = 0.05 * (
        centres[rng.integers(40, size=n_items)] + 0.3 * rng.normal(size=(n_items, 8))
    )
    # the directions that decide the scores vary little across items (0.05)...
    user = (rng.normal(size=(n_users, d)) * 0.02).astype(np.float32)
    user[:, :8] = rng.normal(size=(n_users, 8)) * 60  # ...and a lot across users
    history = sp.csr_matrix((n_users, n_items), dtype=np.float32)
    r = Ranker(
        user,
        item,
        np.ones(n_items, bool),
        np.zeros(n_items, np.float32),
        np.zeros((n_items, 0), np.float32),
        np.zeros((n_items, 0), np.float32),
        None,
    )
    exact = r.topk(np.arange(n_users), 20, history)[0]
    approx = r.topk(np.arange(n_users), 20, history, approximate=True)[0]
    assert (
        np.mean([len(np.intersect1d(a, e)) / 20 for a, e in zip(approx, exact)]) > 0.95
    )
    # every direction: the same dot products
    user_map, reduced = ann._whitened_projection(item, user, d, 0)
    np.testing.assert_allclose(
        user[:5] @ user_map @ reduced.T, user[:5] @ item.T, rtol=1e-3, atol=1e-3
    )


def test_cold_items_not_punished_for_missing_collaborative_signal(fitted):
    ws, r = fitted
    ds = Dataset.load(ws)
    cand = np.arange(ds.n_items)
    comps = r.component_scores(np.arange(5), cand, ds.matrix(GIVEN))
    cold = ~r.warm
    heavy = {"gnn": 1.0, "ease": 100.0, "pop": 100.0, "content": 0.0}
    s = r.blend(comps, cand, heavy, {"gnn": 1.0, "content": 0.0}, 0.0).numpy()
    np.testing.assert_allclose(
        s[:, cold], comps["gnn"].numpy()[:, cold] / r.scale["gnn"], rtol=1e-5
    )
    # the cold offset fitted on mixed validation puts cold items in the all-item lists
    recs = recommend(ws, "all", k=20, ranker=r)
    assert recs["item_id"].isin(ds.item_ids[cold]).any()


def test_readers_refuse_a_ranker_fitted_for_other_embeddings(tmp_path):
    """A reader never fits (nor writes) a ranker: a model/ whose ranker does not match is refused in one line."""
    ws = served_workspace(tmp_path, features=False, ranker=False)
    r = fit_ranker(ws)
    assert r.content is None and "content" not in r.components
    # fitting writes nothing
    assert not (ws.stage_dir("model") / "ranker.json").exists()
    save_ranker(ws, r)
    assert serving_ranker(ws) is not None
    t = read_tensors(ws.stage_dir("model") / "embeddings.safetensors")
    write_tensors(
        ws.stage_dir("model") / "embeddings.safetensors",
        {"user": t["user"] * 2, "item": t["item"]},
    )
    before = sorted(p.name for p in ws.stage_dir("model").iterdir())
    with pytest.raises(
        InputError,
        match="model/ has no ranker fitted for its embeddings.*re-run `graphrec train`",
    ):
        serving_ranker(ws)
    with pytest.raises(InputError, match="no ranker fitted"):
        recommend(ws, "all", k=3)
    assert sorted(p.name for p in ws.stage_dir("model").iterdir()) == before


def test_bad_inputs(fitted, tmp_path):
    ws, r = fitted
    users = tmp_path / "users.txt"
    users.write_text("user_id\nu1\nnobody\n")
    with pytest.raises(
        InputError, match=r"users.txt: line 3: unknown user id 'nobody'"
    ):
        recommend(ws, str(users), ranker=r)
    with pytest.raises(InputError, match="k must be at least 1"):
        recommend(ws, "all", k=0, ranker=r)
    with pytest.raises(InputError, match=".csv or .parquet"):
        write_recommendations(pd.DataFrame({"a": [1]}), tmp_path / "x.json")
    bad = served_workspace(tmp_path / "b", embeddings=False)
    write_tensors(
        bad.stage_dir("model") / "embeddings.safetensors",
        {"user": np.zeros((3, 4), np.float32), "item": np.zeros((90, 4), np.float32)},
    )
    (bad.stage_dir("model") / "model.json").write_text('{"scoring": "dot", "dim": 4}')
    with pytest.raises(InputError, match=r"tensor 'user' should be \[60, dim\]"):
        fit_ranker(bad)


def test_cli_recommend_writes_contract_columns(fitted, tmp_path):
    import graphrec.app.cli as cli

    ws, _ = fitted
    cands = tmp_path / "cands.txt"
    cands.write_text("\n".join(f"m{i}" for i in range(40)) + "\n")
    out = tmp_path / "recs.parquet"
    res = CliRunner().invoke(
        cli.app,
        [
            "recommend",
            str(ws.path),
            "--users",
            "u1,u2",
            "--k",
            "5",
            "--candidates",
            str(cands),
            "--explain",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["user_id", "item_id", "rank", "score", "explanation"]
    assert set(frame["user_id"]) == {"u1", "u2"} and len(frame) == 10
    assert frame["item_id"].isin([f"m{i}" for i in range(40)]).all()
    assert frame["explanation"].str.startswith("like Film ").all()


def test_topk_stable_breaks_ties_by_column():
    import torch

    from graphrec.stages.rank import topk_stable

    s = torch.tensor(
        [[1.0, 3.0, 3.0, 2.0, 3.0, float("-inf")], [0.0, 0.0, 0.0, 0.0, 5.0, 0.0]]
    )
    val, idx = topk_stable(s, 2)
    assert idx.tolist() == [[1, 2], [4, 0]]
    assert val.tolist() == [[3.0, 3.0], [5.0, 0.0]]
    assert topk_stable(s, 6)[1][0].tolist() == [1, 2, 4, 3, 0, 5]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 80),
    st.integers(1, 30),
    st.integers(1, 4),
    st.integers(0, 10_000),
)
def test_topk_stable_is_a_stable_sort_of_the_scores(rows, cols, k, levels, seed):
    """Against the definition: order by score descending, equal scores by column; long ties included."""
    import torch

    from graphrec.stages.rank import topk_stable

    rng = np.random.default_rng(seed)
    # few levels: many long ties
    s = rng.integers(0, levels, size=(rows, cols)).astype(np.float32)
    s[rng.random(s.shape) < 0.2] = -np.inf
    k = min(k, cols)
    val, idx = topk_stable(torch.from_numpy(s), k)
    want = np.argsort(-s, axis=1, kind="stable")[:, :k]
    assert idx.tolist() == want.tolist()
    assert np.array_equal(val.numpy(), np.take_along_axis(s, want, 1))


def test_explanations_use_the_knowledge_graph_when_built(tmp_path):
    from graphrec.kg.build import run_build

    ws = served_workspace(tmp_path, ranker=False)
    run_build(ws)
    # fitted after the build, as `graphrec train` would be
    save_ranker(ws, fit_ranker(ws))
    recs = recommend(ws, ["u1"], k=3, explain=True)
    assert len(recs) == 3
    assert (
        recs["explanation"]
        .str.startswith(("because you liked", "connected through"))
        .all()
    )


# the Gram path (d <= n) and the kernel path
@pytest.mark.parametrize("shape", [(40, 6), (8, 30)])
def test_content_map_is_the_closed_form_ridge_with_intercept(shape):
    rng = np.random.default_rng(2)
    f = rng.normal(size=shape) * (rng.random(shape) < 0.5)
    y = rng.normal(size=(shape[0], 3))
    m = fit_content_maps(sp.csr_matrix(f), y, [2.0])[0]
    fc, yc = f - f.mean(axis=0), y - y.mean(axis=0)
    w = np.linalg.solve(fc.T @ fc + 2.0 * np.eye(shape[1]), fc.T @ yc)
    g = rng.normal(size=(2, shape[1]))
    np.testing.assert_allclose(
        m(sp.csr_matrix(g)),
        (g - f.mean(axis=0)) @ w + y.mean(axis=0),
        rtol=1e-4,
        atol=1e-4,
    )


def test_content_map_randomized_path_fits_in_its_rank(monkeypatch):
    import graphrec.model.closed_form as linear

    rng = np.random.default_rng(3)
    f = sp.random(300, 500, density=0.02, random_state=4, format="csr")
    y = rng.normal(size=(300, 4))
    exact = fit_content_maps(f, y, [1.0])[0]
    # neither the Gram nor the kernel matrix "fits"
    monkeypatch.setattr(linear, "RIDGE_DENSE_BYTES", 1000)
    # >= rank(F): the randomized basis is exact
    monkeypatch.setattr(linear, "RIDGE_RANK", 300)
    approx = fit_content_maps(f, y, [1.0])[0]
    np.testing.assert_allclose(approx(f), exact(f), rtol=1e-3, atol=1e-3)


def test_ridge_component_is_cold_only_and_persisted(fitted):
    ws, r = fitted
    info = read_json(ws.stage_dir("model") / "ranker.json")
    assert (
        "ridge" in info["components"]
        and str(info["ridge_lambda"]) in info["ridge_validation_ndcg"]
    )
    assert r.weights_warm.get("ridge", 0.0) == 0.0
    ds = Dataset.load(ws)
    comps = r.component_scores(np.arange(5), np.arange(ds.n_items), ds.matrix(GIVEN))
    assert (comps["ridge"].numpy()[:, r.warm] == 0).all() and comps["ridge"].numpy()[
        :, ~r.warm
    ].std() > 0
    # cold items' vectors rebuilt from their content through the saved map
    again = load_ranker(ws)
    np.testing.assert_allclose(again.ease_item, r.ease_item, rtol=1e-5, atol=1e-6)


def test_cold_popularity_is_cold_only_persisted_and_folded_into_the_offset(fitted):
    """The cpop component: content -> log popularity for cold items only, rebuilt from content on loading, and
    scored through the cold items' offset dimension (one scoring space), whatever weight the blend gives it."""
    ws, r = fitted
    info = read_json(ws.stage_dir("model") / "ranker.json")
    assert (
        "cpop" in info["components"]
        and str(info["cold_pop_lambda"]) in info["cold_pop_validation_ndcg"]
    )
    assert (r.cold_pop[r.warm] == 0).all() and r.cold_pop[~r.warm].std() > 0
    np.testing.assert_allclose(
        load_ranker(ws).cold_pop, r.cold_pop, rtol=1e-5, atol=1e-6
    )
    ds = Dataset.load(ws)
    users, cand, history = (
        np.arange(ds.n_users),
        np.arange(ds.n_items),
        ds.matrix(GIVEN),
    )
    forced = dataclasses.replace(r, weights_cold={**r.weights_cold, "cpop": 2.0})
    blend = forced.blend(forced.component_scores(users, cand, history), cand).numpy()
    np.testing.assert_allclose(
        forced.user_vectors(users, history) @ forced.item_vectors().T,
        blend,
        rtol=1e-4,
        atol=1e-4,
    )
    lift = blend - r.blend(r.component_scores(users, cand, history), cand).numpy()
    np.testing.assert_allclose(lift[:, r.warm], 0.0, atol=1e-6)
    assert np.corrcoef(lift[0, ~r.warm], r.cold_pop[~r.warm])[0, 1] > 0.999


def test_the_vectors_score_exactly_the_fitted_blend(fitted):
    """One scoring space: user_vectors . item_vectors is the blend of the components, weights and cold offset
    included, for warm and cold items alike."""
    ws, r = fitted
    ds = Dataset.load(ws)
    users, cand, history = (
        np.arange(ds.n_users),
        np.arange(ds.n_items),
        ds.matrix(GIVEN),
    )
    blend = r.blend(r.component_scores(users, cand, history), cand).numpy()
    user_vec, item_vec = r.user_vectors(users, history), r.item_vectors()
    np.testing.assert_allclose(user_vec @ item_vec.T, blend, rtol=1e-4, atol=1e-4)
    assert sum(r.blocks().values()) == user_vec.shape[1] == item_vec.shape[1]
    assert (~r.warm).any() and np.abs(blend[:, ~r.warm]).max() > 0


@pytest.fixture(scope="module")
def with_new_users(tmp_path_factory):
    """Synthetic shop whose tastes lean on age band and region; 15% of users held out with no history."""
    from graphrec.data.importer import save_dataset
    from graphrec.data.splits import split_dataset
    from graphrec.data.synth import generate
    from graphrec.kg.build import run_build
    from graphrec.stages.train import run_train

    ds = split_dataset(
        generate(400, 150, 12000, seed=3, progress=False),
        cold_items=0.1,
        cold_users=0.15,
        seed=0,
    )
    ws = save_dataset(
        tmp_path_factory.mktemp("newusers") / "ws", ds, {"source": "test"}
    )
    run_build(ws, progress=False)
    run_train(ws, epochs=3, seed=0, progress=False)
    return ws, load_ranker(ws)


def test_users_without_history_get_the_attribute_group_block(with_new_users):
    ws, r = with_new_users
    ds = Dataset.load(ws)
    history = ds.matrix(GIVEN)
    info = read_json(ws.stage_dir("model") / "ranker.json")
    fit = info["new_user_validation_ndcg"]
    assert (
        info["fitted_on_new_users"] > 0 and fit["fitted"] >= fit["without_group_block"]
    )
    new = np.flatnonzero(np.diff(history.indptr) == 0)
    old = np.flatnonzero(np.diff(history.indptr) > 0)
    assert len(new) > 0 and r.groups is not None
    blocks = r.blocks()
    # chosen on cold_user_valid: only users without history carry it
    if "group" in blocks:
        at = sum(
            w
            for b, w in blocks.items()
            if list(blocks).index(b) < list(blocks).index("group")
        )
        vec = r.user_vectors(np.arange(ds.n_users), history)[
            :, at : at + blocks["group"]
        ]
        assert not vec[old].any()
        np.testing.assert_array_equal(
            vec[new], r.groups[new].toarray() * r.new_user_weights["group"]
        )
    # the users' values rebuilt from graph/ give the same vectors
    again = load_ranker(ws)
    np.testing.assert_array_equal(
        again.user_vectors(new, history), r.user_vectors(new, history)
    )
    np.testing.assert_array_equal(again.item_vectors(), r.item_vectors())


def test_svd_shrinks_its_rank_to_fit_the_memory_budget(monkeypatch, caplog):
    import graphrec.model.closed_form as linear

    x = sp.random(200, 100, density=0.1, random_state=5, format="csr")
    # room for a sketch 30 wide
    monkeypatch.setattr(linear, "SVD_BYTES", 4 * 8 * 300 * 30)
    with caplog.at_level("WARNING", logger="graphrec.model.closed_form"):
        s, v = interaction_svd(x, 64)
    assert len(s) == 20 and v.shape == (100, 20) and "using rank 20" in caplog.text
    monkeypatch.setattr(linear, "SVD_BYTES", 4 * 8 * 300 * 5)
    with pytest.raises(InputError, match="does not fit"):
        interaction_svd(x, 64)


def test_cli_recommend_takes_an_id_list_longer_than_a_file_name(fitted, tmp_path):
    import graphrec.app.cli as cli

    ws, _ = fitted
    # > 255 characters
    users = ",".join(f"u{i}" for i in range(60)) + "," + ",".join(["u1"] * 60)
    assert len(users) > 255
    out = tmp_path / "recs.csv"
    res = CliRunner().invoke(
        cli.app,
        ["recommend", str(ws.path), "--users", users, "--k", "2", "--out", str(out)],
    )
    assert res.exit_code == 0, res.output
    assert pd.read_csv(out)["user_id"].nunique() == 60


def test_cli_recommend_to_stdout(fitted):
    import io

    import graphrec.app.cli as cli

    ws, _ = fitted
    res = CliRunner().invoke(
        cli.app,
        ["recommend", str(ws.path), "--users", "u1,u2", "--k", "3", "--out", "-"],
    )
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(io.StringIO(res.stdout))
    assert (
        list(frame.columns) == ["user_id", "item_id", "rank", "score"]
        and len(frame) == 6
    )
    res = CliRunner().invoke(
        cli.app,
        [
            "recommend",
            str(ws.path),
            "--users",
            "u1,u2",
            "--k",
            "3",
            "--out",
            "-",
            "--approximate",
        ],
    )  # no faiss needed: the first pass is a dense product
    assert res.exit_code == 0, res.output
    approx = pd.read_csv(io.StringIO(res.stdout))
    assert len(approx) == 6 and set(approx["user_id"]) == set(frame["user_id"])


def test_content_map_keeps_only_the_columns_items_use():
    """A KG with millions of entity columns, few used: weights only for used columns (no d x n basis)."""
    rng = np.random.default_rng(6)
    rows, cols = rng.integers(60, size=400), rng.integers(3_000_000, size=400)
    f = sp.csr_matrix((rng.random(400), (rows, cols)), shape=(60, 3_000_000))
    y = rng.normal(size=(60, 4))
    m = fit_content_maps(f, y, [1.0])[0]
    used = np.flatnonzero(np.diff(f.tocsc().indptr))
    np.testing.assert_array_equal(m.columns, used)
    assert m.weights.shape == (len(used), 4)
    dense = f[:, used].toarray()
    fc, yc = dense - dense.mean(axis=0), y - y.mean(axis=0)
    w = np.linalg.solve(fc.T @ fc + np.eye(len(used)), fc.T @ yc)
    np.testing.assert_allclose(
        m(f), (dense - dense.mean(axis=0)) @ w + y.mean(axis=0), rtol=1e-4, atol=1e-4
    )


def test_users_known_by_a_few_items_take_the_weights_fitted_for_them(tmp_path):
    """Cold users given 3 context items: their gnn / pop / offset weights are fitted on cold_user_valid and apply
    to every user with at most 3 given items, not the cold offset fitted for warm users."""
    from graphrec.data.importer import save_dataset
    from graphrec.data.splits import split_dataset
    from graphrec.data.synth import generate
    from graphrec.kg.build import run_build
    from graphrec.stages.train import run_train

    ds = split_dataset(
        generate(300, 120, 9000, seed=4, progress=False),
        cold_items=0.2,
        cold_users=0.15,
        cold_user_context=3,
        seed=0,
    )
    ws = save_dataset(tmp_path / "ws", ds, {"source": "test"})
    run_build(ws, progress=False)
    run_train(ws, epochs=2, dim=8, seed=0, progress=False)
    r = load_ranker(ws)
    info = read_json(ws.stage_dir("model") / "ranker.json")
    assert info["short_history"] == 3 and info["fitted_on_new_users"] > 0
    fit = info["new_user_validation_ndcg"]
    assert fit["fitted"] >= fit["without_group_block"]
    history = Dataset.load(ws).matrix(GIVEN)
    counts = np.diff(history.indptr)
    short, long_ = (
        np.flatnonzero((counts > 0) & (counts <= 3))[:1],
        np.flatnonzero(counts > 3)[:1],
    )
    # the offset block's column
    at = sum(w for b, w in r.blocks().items() if b in ("gnn", "ease", "pop"))
    assert "offset" in r.blocks()
    assert r.user_vectors(short, history)[0, at] == pytest.approx(
        r.new_user_weights["offset"]
    )
    assert r.user_vectors(long_, history)[0, at] == 1.0
    loaded = load_ranker(ws)
    assert loaded.short_history == 3
    np.testing.assert_array_equal(
        loaded.user_vectors(short, history), r.user_vectors(short, history)
    )


def test_ideal_lowpass_is_gf_cf_s_filter():
    """history @ user_basis . item = x_u D^-1/2 V V' D^1/2 (GF-CF's ideal low-pass), exact when k covers the
    rank; an item without interactions scores 0."""
    rng = np.random.default_rng(2)
    xd = (rng.random((40, 5)) @ rng.random((5, 14)) > 1.2).astype(np.float64)
    xd[:, 3] = 0
    xd = xd[xd.sum(axis=1) > 0]
    x = sp.csr_matrix(xd)
    du, di = xd.sum(axis=1), xd.sum(axis=0)
    inv = np.where(di > 0, 1 / np.sqrt(np.maximum(di, 1e-12)), 0.0)
    _, _, vt = np.linalg.svd(
        xd / np.sqrt(du)[:, None] * inv[None, :], full_matrices=False
    )
    r = np.linalg.matrix_rank(xd)
    v = vt[:r].T
    reference = xd @ (inv[:, None] * v) @ (v * np.sqrt(di)[:, None]).T
    user_basis, item = ideal_lowpass(x, r)
    np.testing.assert_allclose(
        (x @ user_basis) @ item.T, reference, rtol=1e-4, atol=1e-5
    )
    assert not user_basis[3].any() and not item[3].any()


def test_graph_filter_chooses_gamma_on_validation_and_folds_it_into_the_items(fitted):
    ws, r = fitted
    ds = Dataset.load(ws)
    train, warm = ds.matrix(("train",)), ds.warm_items(("train",))
    gf = select_filter(train, warm, ds, 10, 64, 16, (100.0,), LOWPASS_GAMMAS)
    trials = gf.trials["lowpass_validation_ndcg"]
    assert trials[str(gf.gamma)] == max(trials.values())
    fixed = select_filter(train, warm, ds, 10, 64, 16, (100.0,), (0.3,))
    np.testing.assert_allclose(
        fixed.lowpass_item, 0.3 * ideal_lowpass(train, 16)[1], rtol=1e-5, atol=1e-6
    )
    assert (
        select_filter(train, warm, ds, 10, 64, 16, (100.0,), (0.0,)).lowpass_item
        is None
    )
    assert (
        select_filter(train, warm, ds, 10, 64, 0, (100.0,), (0.3,)).lowpass_item is None
    )
    info = read_json(ws.stage_dir("model") / "ranker.json")
    assert ("lowpass" in r.blocks()) == (
        info["lowpass_gamma"] > 0 and r.weights_warm.get("ease", 0) > 0
    )


def test_the_vectors_score_the_blend_with_the_low_pass_block(fitted, monkeypatch):
    """With the low-pass block in (gamma fixed), user . item is still exactly the fitted blend, and an export
    of the vectors serves graphrec's lists."""
    import graphrec.stages.rank as rank

    ws, _ = fitted
    monkeypatch.setattr(rank, "LOWPASS_GAMMAS", (0.3,))
    r = fit_ranker(ws, RankSettings(k=10, lowpass_dim=16))
    assert r.record.lowpass_gamma == 0.3 and r.lowpass_item.shape[1] == 16
    ds = Dataset.load(ws)
    users, cand, history = (
        np.arange(ds.n_users),
        np.arange(ds.n_items),
        ds.matrix(GIVEN),
    )
    blend = r.blend(r.component_scores(users, cand, history), cand).numpy()
    user_vec, item_vec = r.user_vectors(users, history), r.item_vectors()
    np.testing.assert_allclose(user_vec @ item_vec.T, blend, rtol=1e-4, atol=1e-4)
    if r.weights_warm.get("ease"):
        assert "lowpass" in r.blocks()
    # cold items: no low-pass row, their ease rows come from content
    assert not r.lowpass_item[~r.warm].any()


def test_no_refit_keeps_the_collaborative_parts_on_train(fitted):
    """RankSettings(refit=False) (what `train --no-refit` passes): the paper protocol, nothing fitted on valid."""
    ws, _ = fitted
    ds = Dataset.load(ws)
    r = fit_ranker(ws, RankSettings(k=10, refit=False))
    train = ds.matrix(("train",))
    np.testing.assert_array_equal(r.warm, ds.warm_items(("train",)))
    np.testing.assert_allclose(r.pop, np.log1p(np.asarray(train.sum(axis=0)).ravel()))
    refit = fit_ranker(ws, RankSettings(k=10))
    assert not np.allclose(refit.pop, r.pop)
