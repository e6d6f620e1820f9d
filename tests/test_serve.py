"""Serve mode: a dataset that is not split is fitted on every interaction, and no list gives back what a user has
(through the CLI, the Python API and the export with its documented exclusion)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path
from typer.testing import CliRunner

from graphrec.app.cli import app
from graphrec.core.errors import InputError
from graphrec.core.io import read_json
from graphrec.data.dataset import Dataset
from graphrec.data.movielens import import_movielens
from graphrec.data.synth import run_synth
from graphrec.kg.build import run_build
from graphrec.model.export_format import load_export
from graphrec.pipeline.api import Recommender
from graphrec.stages.encode import run_encode
from graphrec.stages.export import export
from graphrec.stages.rank import RankSettings, serving_ranker
from graphrec.stages.recommend import recommend
from graphrec.stages.train import run_train


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    ws = tmp_path_factory.mktemp("serve") / "ws"
    run_synth(ws, n_users=80, n_items=120, n_interactions=2500, seed=0, images=False)
    run_encode(ws, ["lexical"], progress=False)
    run_build(ws, progress=False)
    result = run_train(
        ws,
        epochs=3,
        dim=8,
        layers=2,
        batch_size=256,
        lr=0.02,
        progress=False,
        ranker=RankSettings(keep_gnn=True),
    )  # the GNN block served, so the GNN is refit too
    return ws, result


def _has(ds: Dataset) -> set[tuple[str, str]]:
    inter = ds.interactions
    return set(zip(ds.user_ids[inter["user"]], ds.item_ids[inter["item"]]))


def test_a_dataset_that_is_not_split_is_fitted_on_every_interaction(served):
    ws, result = served
    ds = Dataset.load(ws)
    assert not ds.is_split and result.mode == "serve" and result.refit
    meta = read_json(ws / "model" / "model.json")
    # every distinct pair
    assert meta["mode"] == "serve" and meta["fitted_interactions"] == len(_has(ds))
    r = serving_ranker(ws, ds)
    with_interactions = np.bincount(ds.interactions["item"], minlength=ds.n_items) > 0
    # every item with an interaction is warm
    np.testing.assert_array_equal(r.warm, with_interactions)
    # settings were chosen on the internal validation split
    assert r.record.selection["fitted_on"]["warm"] > 0


def test_no_list_gives_back_what_the_user_has(served, tmp_path):
    ws, _ = served
    ds = Dataset.load(ws)
    has = _has(ds)
    run = CliRunner().invoke(
        app,
        [
            "recommend",
            str(ws),
            "--users",
            "all",
            "--k",
            "40",
            "--out",
            str(tmp_path / "recs.csv"),
        ],
    )
    assert run.exit_code == 0, run.output
    assert "serve mode" in run.output
    cli = pd.read_csv(tmp_path / "recs.csv", dtype=str)
    assert (
        cli["user_id"].nunique() == ds.n_users
        and not set(zip(cli["user_id"], cli["item_id"])) & has
    )
    api = Recommender.load(ws).recommend(list(ds.user_ids), N=40).to_frame()
    assert len(api) == len(cli) and not set(zip(api["user_id"], api["item_id"])) & has
    e = load_export(export(ws, tmp_path / "exp", ["npy"]))
    mine = (
        pd.DataFrame(sorted(has), columns=["user_id", "item_id"])
        .groupby("user_id")["item_id"]
        .apply(list)
    )
    # the export's documented exclusion: everything the user has
    for uid in ds.user_ids[:20]:
        ids, _ = e.recommend(uid, {uid: mine.get(uid, [])}, N=40)
        assert not set(ids) & set(mine.get(uid, []))


def test_the_api_serves_by_default_and_evaluates_on_request(tmp_path):
    shop = run_synth(
        tmp_path / "shop",
        n_users=40,
        n_items=60,
        n_interactions=900,
        seed=1,
        images=False,
    )
    inter = pd.DataFrame(
        {
            "user_id": shop.user_ids[shop.interactions["user"]],
            "item_id": shop.item_ids[shop.interactions["item"]],
        }
    )
    rec = Recommender(tmp_path / "serve", modalities=(), epochs=2, dim=8, layers=2).fit(
        inter
    )
    ds = Dataset.load(rec.workspace)
    assert (
        not ds.is_split
        and read_json(rec.workspace / "model" / "model.json")["mode"] == "serve"
    )
    evaluated = Recommender(
        tmp_path / "eval", modalities=(), epochs=2, dim=8, layers=2
    ).fit(inter, split={})
    assert Dataset.load(evaluated.workspace).part("test").shape[0] > 0
    assert read_json(evaluated.workspace / "model" / "model.json")["mode"] == "evaluate"


@pytest.mark.slow
def test_latest_small_imported_whole_gives_similar_items_by_taste(tmp_path):
    """MovieLens latest-small imported whole (serve mode): through the export, Toy Story 2 is among Toy Story's 10
    most similar items and The Empire Strikes Back among Star Wars IV's (by title words it would be Palm Beach
    Story, Tokyo Story; Star Trek)."""
    ws = tmp_path / "ws"
    import_movielens(ws, shared_path("ml-latest-small"), variant="latest-small")
    run_encode(ws, ["lexical"], progress=False)
    run_build(ws, progress=False)
    run_train(ws, epochs=3, progress=False)
    e = load_export(export(ws, tmp_path / "exp", ["npy"]))
    # Toy Story -> Toy Story 2
    assert "3114" in [i for i, _ in e.similar_items("1", k=10)]
    # Star Wars IV -> The Empire Strikes Back
    assert "1196" in [i for i, _ in e.similar_items("260", k=10)]


def test_evaluate_says_a_served_workspace_holds_nothing_out(served):
    ws, _ = served
    run = subprocess.run(
        [sys.executable, "-m", "graphrec", "evaluate", str(ws)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (
        run.returncode == 2
        and "nothing is held out" in run.stderr
        and "Traceback" not in run.stderr
    )


def test_a_rebuild_under_a_trained_model_says_the_model_must_be_retrained(
    served, tmp_path
):
    ws = tmp_path / "ws"
    shutil.copytree(served[0], ws)
    # another graph under the trained model
    notes = run_build(ws, item_knn=3, progress=False).notes
    assert any("run `graphrec train` before serving again" in n for n in notes)
    # and serving says so too, in one line
    with pytest.raises(InputError, match="graphrec train"):
        recommend(ws, "all", 5)
