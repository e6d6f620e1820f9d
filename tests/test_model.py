"""The model's building blocks: sparse operators, neighbour sampling, cold-item embeddings, live updates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from train_fixtures import genre_workspace

from graphrec.core.io import read_tensors
from graphrec.model.gnn import GraphRec, LossWeights, triple_loss_grad
from graphrec.model.propagation import (
    SparseOp,
    normalized_bipartite,
    sample_neighbourhood,
)
from graphrec.stages.train import load_model, run_train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bipartite_operator_is_symmetric_normalised():
    # (1, 1) twice: one edge
    users, items = (
        np.array([0, 0, 1, 1, 1]),
        np.array([0, 1, 1, 2, 1]),
    )
    op = normalized_bipartite(users, items, 2, 3)
    a = op.a.to_dense().numpy()
    assert np.allclose(a, a.T)
    # user 1 has degree 2 (items 1, 2), item 1 has degree 2 (users 0, 1)
    assert a[1, 2 + 1] == pytest.approx(1 / np.sqrt(2 * 2))
    assert a[0, 2 + 0] == pytest.approx(1 / np.sqrt(2 * 1))


def test_sparse_op_gradient_matches_dense():
    g = torch.Generator().manual_seed(0)
    dense = (torch.rand(5, 7, generator=g) > 0.6).float() * torch.rand(
        5, 7, generator=g
    )
    op = SparseOp(dense.to_sparse_csr(), dense.T.contiguous().to_sparse_csr())
    x = torch.randn(7, 3, generator=g, requires_grad=True)
    w = torch.randn(5, 3, generator=g)
    ((op @ x) * w).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    ((dense @ x2) * w).sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-6)


def test_neighbour_sampling_is_unbiased():
    rng = np.random.default_rng(1)
    op = normalized_bipartite(
        rng.integers(20, size=300), rng.integers(30, size=300), 20, 30
    )
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 4, generator=g)  # not the global generator: other tests move it
    seeds = torch.tensor([0, 3, 25])
    exact = (op @ x)[seeds]
    est = torch.zeros_like(exact)
    for _ in range(400):
        nodes, sub = sample_neighbourhood(op, seeds, [4], g)
        assert torch.equal(nodes[:3], seeds)
        est += (sub @ x[nodes])[:3] / 400
    assert torch.allclose(est, exact, atol=0.08)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    ws = genre_workspace(tmp_path_factory.mktemp("ws"))
    run_train(ws, epochs=4, dim=16, layers=2, batch_size=64, lr=0.02, progress=False)
    return ws


def test_cold_items_get_finite_distinct_embeddings(trained):
    from graphrec.data.dataset import Dataset

    ds = Dataset.load(trained)
    emb = read_tensors(trained.stage_dir("model") / "embeddings.safetensors")
    item, user = emb["item"], emb["user"]
    assert item.shape == (ds.n_items, 17) and user.shape == (ds.n_users, 17)
    warm = np.unique(ds.part("train", "valid")["item"].to_numpy())
    cold = np.setdiff1d(np.arange(ds.n_items), warm)
    assert len(cold) > 5
    assert np.isfinite(item).all() and np.isfinite(user).all()
    assert (np.linalg.norm(item[cold, :-1], axis=1) > 1e-3).all()
    # not one collapsed vector
    assert len(np.unique(item[cold].round(5), axis=0)) == len(cold)
    # cold-item scores spread out per user (a ranking, not a tie)
    assert (np.std(user @ item[cold].T, axis=1) > 1e-4).all()
    cold_users = np.unique(ds.part("cold_user_valid")["user"].to_numpy())
    assert (np.linalg.norm(user[cold_users, :-1], axis=1) > 1e-4).all()


def test_live_item_embedding_matches_export(trained):
    """A cold item embedded later from its content alone lands where training's export put it."""
    from graphrec.core.feature_store import load_features
    from graphrec.data.dataset import Dataset
    from graphrec.kg.graph import KnowledgeGraph

    ds = Dataset.load(trained)
    m = load_model(trained)
    emb = read_tensors(trained.stage_dir("model") / "embeddings.safetensors")["item"]
    warm = np.unique(ds.part("train", "valid")["item"].to_numpy())
    cold = np.setdiff1d(np.arange(ds.n_items), warm)
    feats = load_features(trained)["text"]
    e = KnowledgeGraph.load(trained).edges[("item", "has_genre", "genre")]
    sel = np.isin(e.src, cold)
    row_of = {int(c): k for k, c in enumerate(cold)}
    rows = np.array([row_of[int(s)] for s in e.src[sel]])
    new = m.item_embeddings_from_content(
        {"text": feats.values[cold]}, {"genre": (rows, e.dst[sel])}, n_new=len(cold)
    )
    assert np.allclose(new, emb[cold], atol=1e-5)
    u = m.user_embedding_from_items(warm[:3])
    # [mean of its items, 1]
    assert np.allclose(u[:-1], emb[warm[:3], :-1].mean(0)) and u[-1] == 1.0


def test_forward_and_recommend_agree():
    from graphrec.model.propagation import build_inputs

    inp = build_inputs(4, 6, np.array([0, 1, 2, 3, 0]), np.array([0, 1, 2, 3, 4]))
    model = GraphRec(4, 6, dim=8, layers=2, generator=torch.Generator().manual_seed(0))
    top = model.recommend(inp, torch.arange(4), k=6)
    scores = model(
        inp, torch.arange(4).repeat_interleave(6), torch.arange(6).repeat(4)
    ).reshape(4, 6)
    assert torch.equal(top, scores.argsort(dim=1, descending=True))


@pytest.mark.parametrize("weights", [(0.5, 1.0), (0.0, 0.0), (2.0, 0.3)])
def test_the_hand_written_loss_gradient_is_autograd_s(weights):
    """triple_loss_grad against autograd through GraphRec.batch_loss (no L2 term), value and gradients."""
    cold_w, align_w = weights
    g = torch.Generator().manual_seed(3)
    m, d = 50, 6
    user_rows = torch.randn(m, d, generator=g, dtype=torch.float64, requires_grad=True)
    item_rows = torch.randn(
        2 * m, 2 * d + 1, generator=g, dtype=torch.float64, requires_grad=True
    )
    h, c, b = item_rows[:, :d], item_rows[:, d : 2 * d], item_rows[:, 2 * d]
    want, parts = GraphRec(1, 1, d, 1).batch_loss(
        user_rows,
        (h[:m], h[m:]),
        (c[:m], c[m:]),
        (b[:m], b[m:]),
        torch.zeros(()),
        LossWeights(cold_w, align_w, 0.0),
    )
    want.backward()
    got, got_parts, grad_user, grad_item = triple_loss_grad(
        user_rows.detach(), item_rows.detach(), cold_w, align_w
    )
    assert got == pytest.approx(want.item(), rel=1e-9)
    assert got_parts == pytest.approx(parts, rel=1e-9)
    torch.testing.assert_close(grad_user, user_rows.grad)
    torch.testing.assert_close(grad_item, item_rows.grad)
