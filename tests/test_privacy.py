"""The private export: a linear probe reads users' attributes from the normal export's user vectors, and from the
private export's no better than from a model trained without user attributes (docs/export.md; the MovieLens
numbers: benchmarks/privacy_probe.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import graphrec.app.cli as cli
from graphrec.data.dataset import GIVEN, Dataset
from graphrec.data.splits import split_dataset
from graphrec.data.synth import generate
from graphrec.kg.build import run_build
from graphrec.model.export_format import Export, load_export
from graphrec.model.metrics import embedding_accuracy
from graphrec.stages.export import export
from graphrec.stages.rank import RankSettings
from graphrec.stages.train import run_train

pytestmark = pytest.mark.usefixtures("one_thread")

# the synthetic users' attributes; both nudge their tastes
ATTRIBUTES = (
    "age_band",
    "region",
)
FOLDS = 5


def _pipeline(ws, ds: Dataset) -> None:
    ds.save(ws)
    run_build(ws, item_knn=0, progress=False)
    run_train(
        ws, epochs=4, dim=16, layers=2, progress=False, ranker=RankSettings(ease_dim=64)
    )


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """(normal export, private export, the no-attribute model's export, labels, the folder of both workspaces)
    on one synthetic split."""
    root = tmp_path_factory.mktemp("privacy")
    ds = split_dataset(
        generate(400, 200, 8000, seed=2, progress=False),
        cold_users=0.1,
        cold_user_context=3,
        seed=0,
    )
    _pipeline(root / "attr", ds)
    bare = Dataset.load(root / "attr")
    bare.users = bare.users[["user_id"]]
    bare.schema.user_attribute_columns = []
    _pipeline(root / "plain", bare)
    normal = load_export(export(root / "attr", root / "normal", ["npy"]))
    private = load_export(
        export(root / "attr", root / "private", ["npy"], private=True)
    )
    plain = load_export(export(root / "plain", root / "plain-export", ["npy"]))
    labels = {
        c: np.unique(ds.users[c].astype(str).to_numpy(), return_inverse=True)[1]
        for c in ATTRIBUTES
    }
    return normal, private, plain, labels, root


def _softmax_regression(x: torch.Tensor, y: torch.Tensor, n_class: int) -> torch.Tensor:
    """Weights [d + 1, n_class] minimising cross-entropy + 1e-2 ||W||^2 (bias unpenalised), by L-BFGS."""
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    w = torch.zeros(x.shape[1] + 1, n_class, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        opt.zero_grad()
        value = (
            torch.nn.functional.cross_entropy(design @ w, y)
            + 1e-2 * w[:-1].pow(2).sum()
        )
        value.backward()
        return value

    opt.step(loss)
    return w.detach()


def _probe(x: np.ndarray, y: np.ndarray) -> float:
    """Held-out accuracy of a multinomial logistic regression on standardised inputs, fitted on 80% of the
    users, 5 times, so every user is held out once."""
    x, y = torch.from_numpy(x.astype(np.float64)), torch.from_numpy(y)
    right = 0
    for test in np.array_split(np.random.default_rng(0).permutation(len(y)), FOLDS):
        train = torch.from_numpy(np.setdiff1d(np.arange(len(y)), test))
        mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-9)
        w = _softmax_regression((x[train] - mean) / std, y[train], int(y.max()) + 1)
        logits = (x[test] - mean) / std @ w[:-1] + w[-1]
        right += int((logits.argmax(1) == y[test]).sum())
    return right / len(y)


def _strongest(e: Export, y: np.ndarray) -> float:
    """The best probe over the whole user vector and each block alone (the manifest tells the layout)."""
    parts, at = [e.user_embeddings], 0
    for width in e.manifest.blocks.values():
        parts.append(e.user_embeddings[:, at : at + width])
        at += width
    return max(
        _probe(p, y) for p in parts if p.shape[1] > 1 and p.std(axis=0).max() > 0
    )


def test_private_vectors_reveal_no_more_than_a_model_without_attributes(exports):
    normal, private, plain, labels, _ = exports
    for attribute, y in labels.items():
        base = np.bincount(y).max() / len(y)
        leaked, kept, behaviour = (_strongest(e, y) for e in (normal, private, plain))
        assert kept <= behaviour + 0.05, (attribute, kept, behaviour)
        assert leaked >= max(kept, behaviour, base) + 0.2, (
            attribute,
            leaked,
            kept,
            behaviour,
            base,
        )


def test_private_manifest_and_layout(exports):
    normal, private, _, _, _ = exports
    assert (
        private.manifest.about["private"] is True
        and "interactions alone" in private.manifest.about["privacy"]
    )
    assert (
        normal.manifest.about["private"] is False
        and "privacy" not in normal.manifest.about
    )
    assert "gnn" in normal.manifest.blocks
    assert not {"gnn", "group"} & set(private.manifest.blocks)
    assert (
        private.user_embeddings.shape[1]
        == private.item_embeddings.shape[1]
        == private.manifest.dim
    )
    assert private.user_ids == normal.user_ids and private.item_ids == normal.item_ids


def test_private_export_still_ranks(exports):
    _, private, _, _, root = exports
    ds = Dataset.load(root / "attr")
    scores = private.user_embeddings @ private.item_embeddings.T
    assert np.isfinite(scores).all()
    user, item = (
        torch.from_numpy(private.user_embeddings),
        torch.from_numpy(private.item_embeddings),
    )
    warm = np.flatnonzero(private.item_warm)
    seen, truth = ds.matrix(GIVEN).astype(bool), ds.matrix(("test",)).astype(bool)
    ndcg = embedding_accuracy(user, item, truth, seen, warm, 20)[0]
    shuffled = torch.from_numpy(
        np.random.default_rng(0).permutation(private.user_embeddings)
    )
    assert ndcg > 2 * embedding_accuracy(shuffled, item, truth, seen, warm, 20)[0]
    top, _ = private.recommend(
        private.user_ids[0], N=5, filter_already_liked_items=False
    )
    assert top.tolist() == [
        private.item_ids[j] for j in np.argsort(-scores[0], kind="stable")[:5]
    ]


def test_cli_private_flag(exports, tmp_path):
    *_, root = exports
    res = CliRunner().invoke(
        cli.app,
        [
            "export",
            str(root / "attr"),
            "--out",
            str(tmp_path / "exp"),
            "--private",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    assert m["private"] is True and "gnn" not in m["blocks"]


def test_without_user_attributes_private_is_the_full_export(exports, tmp_path):
    """A dataset without demographics: the model never saw any, so --private keeps every block."""
    *_, root = exports
    normal = load_export(export(root / "plain", tmp_path / "n", ["npy"]))
    private = load_export(export(root / "plain", tmp_path / "p", ["npy"], private=True))
    assert (
        private.manifest.about["private"] is True
        and "no user attributes" in private.manifest.about["privacy"]
    )
    assert (
        private.manifest.blocks == normal.manifest.blocks
        and "gnn" in private.manifest.blocks
    )
    assert np.array_equal(private.user_embeddings, normal.user_embeddings)
