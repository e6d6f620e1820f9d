"""Training: exact negative sampling, determinism, resume after interruption, DDP equivalence, CLI."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from train_fixtures import genre_workspace

import graphrec.core.settings as settings_mod
import graphrec.model.gnn as model_mod
import graphrec.stages.train as train_mod
from graphrec.core.errors import InputError
from graphrec.core.io import read_json, read_tensors
from graphrec.data.dataset import Dataset
from graphrec.model.gnn import LossWeights
from graphrec.model.metrics import embedding_accuracy
from graphrec.model.propagation import SparseOp
from graphrec.stages.rank import RankSettings, load_ranker
from graphrec.stages.train import epoch_triples, run_train, sample_negatives

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {
    "epochs": 3,
    "dim": 8,
    "layers": 2,
    "batch_size": 64,
    "lr": 0.02,
    "patience": 10,
    "progress": False,
}
# the GNN block served whatever validation says, so the GNN is always refit
KEEP = RankSettings(keep_gnn=True)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 30),
    st.integers(3, 40),
    st.floats(0.05, 0.95),
    st.integers(0, 10_000),
)
def test_no_training_positive_is_ever_sampled_as_negative(
    n_users, n_items, density, seed
):
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    mask[:, rng.integers(n_items)] = (
        False  # every user has at least one possible negative
    )
    pairs = np.flatnonzero(mask.ravel()).astype(np.int64)  # u * n_items + i, sorted
    if len(pairs) == 0:
        return
    users, pos, neg = epoch_triples(pairs, n_items, np.arange(n_items), seed, 0, 1)
    assert len(users) == len(pairs)  # nobody dropped: each user has a non-positive item
    assert not mask[users, neg].any()
    assert mask[users, pos].all()


def test_sampler_drops_users_without_any_negative():
    pairs = np.array([0, 1, 2], np.int64)  # user 0 has every item of the pool
    keep, neg = sample_negatives(
        np.array([0, 0, 1]), pairs, np.arange(3), 3, np.random.default_rng(0)
    )
    assert keep.tolist() == [False, False, True] and neg[2] in (0, 1, 2)


def test_ndcg_matches_a_direct_computation():
    rng = np.random.default_rng(3)
    nu, ni, k = 12, 25, 5
    U, V = torch.randn(nu, 4), torch.randn(ni, 4)
    truth = sp.csr_matrix(rng.random((nu, ni)) < 0.15)
    excl = sp.csr_matrix((rng.random((nu, ni)) < 0.2) & ~truth.toarray())
    cand = np.sort(rng.choice(ni, 18, replace=False))
    ndcg, recall, n = embedding_accuracy(U, V, truth, excl, cand, k, chunk=5)
    s = (U @ V.T).numpy()
    nd, rc = [], []
    for u in range(nu):
        t = set(np.flatnonzero(truth[u].toarray()[0])) & set(cand)
        if not t:
            continue
        allowed = [i for i in cand if not excl[u, i]]
        top = sorted(allowed, key=lambda i: -s[u, i])[:k]
        hits = [1.0 if i in t else 0.0 for i in top]
        nd.append(
            sum(h / np.log2(j + 2) for j, h in enumerate(hits))
            / sum(1 / np.log2(j + 2) for j in range(min(len(t), k)))
        )
        rc.append(sum(hits) / min(len(t), k))
    assert (
        n == len(nd)
        and ndcg == pytest.approx(np.mean(nd))
        and recall == pytest.approx(np.mean(rc))
    )


def _emb(ws):
    return read_tensors(ws.stage_dir("model") / "embeddings.safetensors")


def test_deterministic_on_cpu_and_outputs_complete(tmp_path):
    a = genre_workspace(tmp_path / "a")
    b = genre_workspace(tmp_path / "b")
    ra = run_train(a, ranker=KEEP, **FAST)
    run_train(b, ranker=KEEP, **FAST)
    for key in ("user", "item"):
        assert np.array_equal(_emb(a)[key], _emb(b)[key])
    d = a.stage_dir("model")
    meta = read_json(d / "model.json")
    assert (
        meta["scoring"] == "dot"
        and meta["refit"]
        and meta["selected_epoch"] == ra.selected_epoch
    )
    assert {"valid_ndcg@20", "cold_valid_ndcg@20", "cold_user_valid_ndcg@20"} <= set(
        meta["validation"]
    )
    hist = read_json(d / "history.json")
    assert [h["phase"] for h in hist].count("refit") == ra.selected_epoch
    assert (d / "best.safetensors").exists() and (
        d / f"epoch-{len(hist) - ra.selected_epoch}.safetensors"
    ).exists()
    assert a.stage_record("model").settings["dim"] == 8


@pytest.mark.parametrize("interrupt", [("select", 2), ("refit", 1)])
def test_resume_after_interruption_equals_uninterrupted(
    tmp_path, monkeypatch, interrupt
):
    full = genre_workspace(tmp_path / "full")
    run_train(full, ranker=KEEP, **FAST)
    ws = genre_workspace(tmp_path / "cut")
    real = train_mod.save_checkpoint

    def killing(path, model, opt, state):
        real(path, model, opt, state)
        if (state.get("phase"), state.get("epoch")) == interrupt:
            raise KeyboardInterrupt  # as a kill right after the epoch's checkpoint

    monkeypatch.setattr(train_mod, "save_checkpoint", killing)
    with pytest.raises(KeyboardInterrupt):
        run_train(ws, ranker=KEEP, **FAST)
    assert not (ws.stage_dir("model") / "embeddings.safetensors").exists()
    monkeypatch.setattr(train_mod, "save_checkpoint", real)
    run_train(ws, resume=True, ranker=KEEP, **FAST)
    for key in ("user", "item"):
        np.testing.assert_allclose(_emb(ws)[key], _emb(full)[key], rtol=1e-5, atol=1e-6)
    got, want = (read_json(w.stage_dir("model") / "history.json") for w in (ws, full))
    assert [(h["phase"], h["epoch"]) for h in got] == [
        (h["phase"], h["epoch"]) for h in want
    ]
    for g, w in zip(got, want):
        assert {
            k: g[k] for k in w if k not in ("phase", "epoch", "seconds")
        } == pytest.approx(
            {k: w[k] for k in w if k not in ("phase", "epoch", "seconds")}, rel=1e-4
        )


def test_a_gnn_that_does_not_add_is_neither_served_nor_refit(tmp_path):
    """An untrained GNN (lr 1e-7) cannot beat the closed-form blend: the ranker drops its block and train skips the
    GNN's refit (its cost buys nothing); the closed-form parts are still refit on train+valid."""
    ws = genre_workspace(tmp_path)
    r = run_train(ws, **{**FAST, "lr": 1e-7})
    d = ws.stage_dir("model")
    ranker, meta = read_json(d / "ranker.json"), read_json(d / "model.json")
    assert not ranker["gnn_kept"] and not r.gnn_served and "gnn" not in ranker["blocks"]
    assert not r.refit and not meta["refit"] and r.select is None
    assert [h["phase"] for h in read_json(d / "history.json")] == ["select"] * len(
        r.history
    )
    assert (
        not (d / "embeddings_select.safetensors").exists()
        and ranker["fitted_with"] == "embeddings.safetensors"
    )
    # the graph filter and popularity are refit on train+valid all the same
    ds = Dataset.load(ws)
    assert np.array_equal(load_ranker(ws, ds).warm, ds.warm_items(("train", "valid")))


def test_without_the_gnn_the_closed_form_blend_is_served_as_when_the_gnn_does_not_add(
    tmp_path,
):
    """--no-gnn trains no epoch and serves what a run whose GNN does not add serves: the closed-form blend's search
    does not see the GNN, so both serve the same vectors."""
    untrained = genre_workspace(tmp_path / "untrained")
    run_train(untrained, **{**FAST, "lr": 1e-7})
    closed = genre_workspace(tmp_path / "closed")
    r = run_train(closed, **{**FAST, "gnn": False})
    assert (
        r.history == [] and r.selected_epoch == 0 and not r.gnn_served and not r.refit
    )
    assert r.validation and all(
        name.endswith("_blend_ndcg@20") for name in r.validation
    )
    ds = Dataset.load(closed)
    served, reference = load_ranker(closed, ds), load_ranker(untrained, ds)
    assert "gnn" not in served.blocks() and served.blocks() == reference.blocks()
    users, items = np.arange(ds.n_users), np.arange(ds.n_items)
    history = ds.matrix(("train", "valid"))
    np.testing.assert_allclose(
        served.item_vectors(items), reference.item_vectors(items), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        served.user_vectors(users, history),
        reference.user_vectors(users, history),
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(InputError, match="--keep-gnn and --no-gnn"):
        run_train(closed, ranker=RankSettings(keep_gnn=True), **{**FAST, "gnn": False})


def test_the_default_batch_bounds_an_epoch_and_the_lr_follows_it(tmp_path):
    assert (
        settings_mod.auto_batch(10_000) == 2048
        and settings_mod.auto_batch(66_418) == 2048
    )
    assert (
        settings_mod.auto_batch(590_733) == 16_384
        and settings_mod.auto_batch(20_000_000) == 524_288
    )
    for n in (
        1,
        65_535,
        65_536,
        131_071,
        131_072,
        590_733,
        10**9,
    ):  # 32 to 64 batches an epoch once above 2048
        b = settings_mod.auto_batch(n)
        assert b == 2048 or 32 <= -(-n // b) <= 64
    assert settings_mod.auto_lr(2048) == 0.005 and settings_mod.auto_lr(
        8192
    ) == pytest.approx(0.01)
    assert settings_mod.auto_lr(10**7) == 0.02
    ws = genre_workspace(tmp_path)
    r = run_train(ws, **{**FAST, "batch_size": None, "lr": None, "epochs": 1})
    recorded = ws.stage_record("model").settings
    assert (
        recorded["batch_size"] == 2048
        and recorded["lr"] == 0.005
        and len(r.history) >= 1
    )


def test_resume_with_other_settings_is_refused(tmp_path):
    ws = genre_workspace(tmp_path)
    run_train(ws, **{**FAST, "refit": False})
    with pytest.raises(InputError, match="other settings"):
        run_train(ws, resume=True, **{**FAST, "refit": False, "dim": 12})


def test_sampled_mode_trains(tmp_path):
    """Sampled neighbourhoods learn: over the selection epochs the loss falls and the embeddings' validation
    NDCG rises (each user of the workspace prefers one of four genres)."""
    ws = genre_workspace(tmp_path)
    settings = {
        **FAST,
        "epochs": 8,
        "patience": 8,
        "mode": "sampled",
        "fanouts": (5, 3),
    }
    r = run_train(ws, **settings, ranker=KEEP)
    select = [h for h in r.history if h["phase"] == "select"]
    assert len(select) == 8 and np.isfinite(_emb(ws)["item"]).all()
    assert select[-1]["loss"] < 0.75 * select[0]["loss"]
    assert select[-1]["valid_ndcg@20"] > select[0]["valid_ndcg@20"] + 0.05


def test_a_large_batch_chunked_loss_trains_as_one_piece(tmp_path, monkeypatch):
    """Full mode splits a large batch's loss into chunks recomputed in the backward: same gradients."""
    whole = genre_workspace(tmp_path / "whole")
    run_train(whole, **{**FAST, "batch_size": 512})
    chunked = genre_workspace(tmp_path / "chunked")
    monkeypatch.setattr(model_mod, "LOSS_CHUNK", 100)
    r = run_train(chunked, **{**FAST, "batch_size": 512})
    assert len(r.history) > 1
    for key in ("user", "item"):
        np.testing.assert_allclose(
            _emb(chunked)[key], _emb(whole)[key], rtol=1e-4, atol=1e-5
        )


@pytest.mark.parametrize("chunk", [7, 1 << 17])
def test_the_full_graph_loss_has_batch_loss_s_value_and_gradients(
    tmp_path, monkeypatch, chunk
):
    """The chunked, hand-differentiated batch loss against autograd through GraphRec.batch_loss."""
    ws = genre_workspace(tmp_path)
    run = train_mod._Run(
        ws, train_mod.TrainSettings(dim=8, layers=2), torch.device("cpu"), ws
    )
    inp = run.inputs(run.train)
    model = run.new_model(inp).double()
    inp = dataclasses.replace(
        inp,
        features={k: v.double() for k, v in inp.features.items()},
        item_attr={
            k: (t, SparseOp(op.a.double(), op.at.double()))
            for k, (t, op) in inp.item_attr.items()
        },
        user_attr={
            k: (t, SparseOp(op.a.double(), op.at.double()))
            for k, (t, op) in inp.user_attr.items()
        },
        ui=SparseOp(inp.ui.a.double()),
        item_sim=None
        if inp.item_sim is None
        else SparseOp(inp.item_sim.a.double(), inp.item_sim.at.double()),
    )
    s = run.s
    users, pos, neg = (
        torch.as_tensor(x[:40])
        for x in epoch_triples(run.train, run.ni, np.arange(run.ni), 0, 0, 1)
    )

    e = model.get_embedding(inp)
    ego = (
        e.user_ego[users].pow(2).sum()
        + e.item_ego[pos].pow(2).sum()
        + e.item_ego[neg].pow(2).sum()
    )
    want, want_parts = model.batch_loss(
        e.user[users],
        (e.item_cf[pos], e.item_cf[neg]),
        (e.item_content[pos], e.item_content[neg]),
        (e.bias[pos], e.bias[neg]),
        ego,
        LossWeights(s.cold_weight, s.align_weight, s.reg),
    )
    want.backward()
    reference = {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }
    model.zero_grad()
    monkeypatch.setattr(model_mod, "LOSS_CHUNK", chunk)
    got, parts = model.full_graph_loss(
        inp, users, pos, neg, LossWeights(s.cold_weight, s.align_weight, s.reg)
    )
    got.backward()
    assert got.item() == pytest.approx(
        want.item(), rel=1e-9
    ) and parts == pytest.approx(want_parts, rel=1e-9)
    assert reference
    for n, g in reference.items():
        torch.testing.assert_close(dict(model.named_parameters())[n].grad, g, msg=n)


def test_bad_settings_are_input_errors(tmp_path):
    ws = genre_workspace(tmp_path)
    with pytest.raises(InputError, match="fanouts"):
        run_train(ws, **{**FAST, "mode": "sampled", "fanouts": (5,)})
    with pytest.raises(InputError, match="epochs"):
        run_train(ws, **{**FAST, "epochs": 0})


def test_ddp_two_gloo_processes_match_one(tmp_path):
    from graphrec.app.distributed import spawn_train

    one = genre_workspace(tmp_path / "one")
    two = genre_workspace(tmp_path / "two")
    settings = {**FAST, "epochs": 2, "refit": False}
    run_train(one, **settings)
    spawn_train(two, world_size=2, **settings)
    for key in ("user", "item"):
        np.testing.assert_allclose(_emb(two)[key], _emb(one)[key], rtol=1e-4, atol=1e-5)


def test_cli_train(tmp_path, monkeypatch, capsys):
    import sys

    import graphrec.app.cli as cli

    ws = genre_workspace(tmp_path)
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "graphrec",
            "train",
            str(ws.path),
            "--epochs",
            "2",
            "--dim",
            "8",
            "--batch-size",
            "64",
            "--no-refit",
        ],
    )
    cli.main()
    assert "selected" in capsys.readouterr().out
    assert (ws.stage_dir("model") / "embeddings.safetensors").exists()
    monkeypatch.setattr(
        sys, "argv", ["graphrec", "train", str(ws.path), "--mode", "magic"]
    )
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err
    assert (
        exc.value.code == 2 and "--mode" in err and len(err.strip().splitlines()) == 1
    )
