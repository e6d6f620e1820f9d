"""graphrec.Recommender: the docs/api.md example runs as written, and its lists are the CLI's lists.

One small fit (the docs example's) is shared by every test; the tests that change a model work on a copy.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import graphrec
from graphrec.core.errors import InputError
from graphrec.data.dataset import GIVEN, Dataset
from graphrec.pipeline.api import Recommender
from graphrec.stages.recommend import recommend

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> dict:
    """The namespace the docs/api.md example leaves, run verbatim in a fresh folder."""
    code = re.search(
        r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S
    ).group(1)
    threads, cwd = torch.get_num_threads(), os.getcwd()
    # tiny graphs: one thread is fastest and immune to a busy machine
    torch.set_num_threads(1)
    os.chdir(tmp_path_factory.mktemp("api"))
    try:
        ns: dict = {"__name__": "docs_api_example"}
        exec(compile(code, str(DOC), "exec"), ns)
        ns["cwd"] = Path.cwd()
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)
    return ns


def _given(rec: Recommender) -> set[tuple[str, str]]:
    ds = Dataset.load(rec.workspace)
    m = ds.matrix(GIVEN).tocoo()
    return set(zip(ds.user_ids[m.row], ds.item_ids[m.col]))


def test_docs_example_runs_and_gives_what_it_says(example):
    top, newcomer, alike, metrics = (
        example["top"],
        example["newcomer"],
        example["alike"],
        example["metrics"],
    )
    assert list(top.columns) == ["user_id", "item_id", "rank", "score"]
    # implicit's pair, the same lists as the table
    ids, scores = (
        example["ids"],
        example["scores"],
    )
    assert (
        ids.shape == scores.shape == (2, 5)
        and ids.ravel().tolist() == top["item_id"].tolist()
    )
    assert top.groupby("user_id").size().to_dict() == {"u01": 5, "u02": 5}
    assert len(newcomer) == 5 and not set(newcomer["item_id"]) & {"i03", "i07"}
    assert len(alike) == 5 and "i03" not in set(alike["similar_item_id"])
    assert alike["score"].is_monotonic_decreasing
    assert {"warm", "cold_item", "overall"} <= set(metrics["task"])
    assert {"recall@10", "ndcg@20", "coverage@20"} <= set(metrics.columns)
    assert (example["cwd"] / "my-model" / "model").is_dir()
    assert example["served"].last_update.items_added == 1
    assert isinstance(example["rec"], graphrec.Recommender)


def test_lists_exclude_what_was_given_and_equal_graphrec_recommend(
    example, monkeypatch
):
    rec = example["rec"]
    users = [str(u) for u in Dataset.load(rec.workspace).user_ids]
    mine = rec.recommend(users, k=10).to_frame()
    given = _given(rec)
    assert not [p for p in zip(mine["user_id"], mine["item_id"]) if p in given]
    cli = recommend(rec.workspace, users, 10)
    pd.testing.assert_frame_equal(
        mine[["user_id", "item_id", "rank"]],
        cli[["user_id", "item_id", "rank"]],
        check_dtype=False,
    )
    np.testing.assert_allclose(mine["score"], cli["score"], rtol=1e-5)
    # Served from memory: a thousand users without touching the workspace again.
    monkeypatch.setattr(
        Dataset, "load", lambda *a, **k: pytest.fail("the dataset was read again")
    )
    many = rec.recommend((users * 13)[:1000], k=10).to_frame()
    assert many["user_id"].nunique() == len(users) and len(many) == 10_000
    kept = rec.recommend(users[:5], k=100, filter_already_liked=False).to_frame()
    assert [p for p in zip(kept["user_id"], kept["item_id"]) if p in given]


def test_user_items_for_a_new_user_and_a_known_one(example):
    rec = example["rec"]
    has = ["i03", "i07", "i11"]
    lists = rec.recommend(
        ["visitor", "u01"], user_items={"visitor": has}, k=20
    ).to_frame()
    visitor = lists[lists["user_id"] == "visitor"]
    assert len(visitor) == 20 and not set(visitor["item_id"]) & set(has)
    # A known user given exactly what the workspace holds for them gets their own list.
    own = [i for u, i in _given(rec) if u == "u01"]
    again, _ = rec.recommend("u01", user_items={"u01": own}, N=20)
    assert again.tolist() == lists.loc[lists["user_id"] == "u01", "item_id"].tolist()
    with pytest.raises(InputError, match="unknown user id 'nobody'"):
        rec.recommend("nobody")
    with pytest.raises(InputError, match="unknown item id 'nothing'"):
        rec.recommend("visitor", user_items={"visitor": ["nothing"]})


def test_save_and_load_give_the_same_lists(example, tmp_path):
    rec = example["rec"]
    users = ["u01", "u05", "u40"]
    path = rec.save(tmp_path / "copy")
    loaded = Recommender.load(path)
    pd.testing.assert_frame_equal(
        loaded.recommend(users, N=10).to_frame(), rec.recommend(users, N=10).to_frame()
    )
    assert rec.save(rec.workspace) == rec.workspace  # the workspace is always saved
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a graphrec workspace"):
        rec.save(tmp_path / "mine")


def test_partial_fit_makes_a_new_item_recommendable(example, tmp_path):
    model = Recommender.load(example["rec"].save(tmp_path / "copy"))
    users = ["u01", "u02", "u03"]
    assert "fresh" not in set(model.recommend(users, k=1000).to_frame()["item_id"])
    new = example["shop"].items.iloc[[10]].assign(item_id="fresh")
    model.partial_fit(
        items=new, interactions=pd.DataFrame({"user_id": ["u09"], "item_id": ["fresh"]})
    )
    assert (model.last_update.items_added, model.last_update.interactions_added) == (
        1,
        1,
    )
    lists = model.recommend(users + ["u09"], k=1000).to_frame()
    assert {
        u for u, i in zip(lists["user_id"], lists["item_id"]) if i == "fresh"
    } == set(users)  # u09 has it
    only = model.recommend(users, k=5, candidates=["fresh"]).to_frame()
    assert (
        only["item_id"].tolist() == ["fresh"] * 3 and np.isfinite(only["score"]).all()
    )
    # all or nothing: an id already there is refused
    with pytest.raises(InputError, match="fresh"):
        model.partial_fit(items=new)
    assert [p.name for p in (model.workspace / "inputs").glob("update-*")] == [
        "update-0001"
    ]


def test_import_graphrec_stays_light_until_the_recommender_is_asked_for():
    code = (
        "import sys, graphrec\nassert 'torch' not in sys.modules\n"
        "assert graphrec.Recommender.__module__ == 'graphrec.pipeline.api'"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]
