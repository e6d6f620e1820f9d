"""One recommend contract (graphrec.model.lists): the same cases through the three faces that give lists, the
command line, `Recommender.recommend` and the export reader `Export.recommend`, including implicit-style calls
(arrays of user ids, scipy CSR rows, `N`, `filter_already_liked_items`, `filter_items`, `items`)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from train_fixtures import genre_workspace
from typer.testing import CliRunner

from graphrec.app.cli import app
from graphrec.core.errors import InputError
from graphrec.data.dataset import GIVEN, Dataset
from graphrec.model.export_format import load_export
from graphrec.model.lists import DEFAULT_N
from graphrec.pipeline.api import Recommender
from graphrec.stages.export import export
from graphrec.stages.train import run_train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """A trained workspace (the closed-form blend: no GNN block, so a new user's vector is the same in every face),
    its Recommender, its export, and every user's given items."""
    d = tmp_path_factory.mktemp("contract")
    ws = genre_workspace(d / "ws")
    run_train(ws, epochs=1, dim=8, layers=2, batch_size=64, gnn=False, progress=False)
    ds = Dataset.load(ws)
    given = ds.part(*GIVEN)
    has = {
        str(ds.user_ids[u]): [
            str(ds.item_ids[i]) for i in sorted(set(given["item"][given["user"] == u]))
        ]
        for u in range(ds.n_users)
    }
    return {
        "ws": ws,
        "rec": Recommender.load(ws.path),
        "export": load_export(export(ws, d / "exp")),
        "has": has,
        "items": [str(i) for i in ds.item_ids],
    }


def _cli(faces, tmp_path, users: list[str], *options: str) -> pd.DataFrame:
    res = CliRunner().invoke(
        app,
        [
            "recommend",
            str(faces["ws"].path),
            "--users",
            ",".join(users),
            *options,
            "--out",
            "-",
        ],
    )
    assert res.exit_code == 0, res.output
    return pd.read_csv(io.StringIO(res.stdout), dtype={"user_id": str, "item_id": str})


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        a[["user_id", "item_id", "rank"]].reset_index(drop=True),
        b[["user_id", "item_id", "rank"]].reset_index(drop=True),
        check_dtype=False,
    )
    np.testing.assert_allclose(
        a["score"].to_numpy(float), b["score"].to_numpy(float), rtol=1e-4, atol=1e-5
    )


def test_one_user_with_the_defaults_is_the_same_list_everywhere(faces, tmp_path):
    user = "u3"
    ids, scores = faces["rec"].recommend(user)
    assert ids.shape == scores.shape == (DEFAULT_N,) and scores.dtype == np.float32
    assert not set(ids) & set(faces["has"][user])
    from_export = faces["export"].recommend(user, {user: faces["has"][user]})
    _same(faces["rec"].recommend(user).to_frame(), from_export.to_frame())
    _same(faces["rec"].recommend(user).to_frame(), _cli(faces, tmp_path, [user]))


def test_a_batch_with_candidates_and_filtered_items(faces, tmp_path):
    users, items = ["u0", "u5", "u9"], faces["items"][::2]
    left_out = items[:4]
    args = {"N": 5, "items": items, "filter_items": left_out}
    api = faces["rec"].recommend(users, **args)
    assert api.ids.shape == (3, 5) and not set(api.ids.ravel()) & (
        set(left_out) | set(faces["items"][1::2])
    )
    _same(
        api.to_frame(),
        faces["export"]
        .recommend(users, {u: faces["has"][u] for u in users}, **args)
        .to_frame(),
    )
    (tmp_path / "cand.txt").write_text("\n".join(items))
    _same(
        api.to_frame(),
        _cli(
            faces,
            tmp_path,
            users,
            "--k",
            "5",
            "--candidates",
            str(tmp_path / "cand.txt"),
            "--filter-items",
            ",".join(left_out),
        ),
    )


def test_implicit_style_arrays_and_csr_rows(faces):
    """`ids, scores = model.recommend(userids, user_items[userids], N=...)` as implicit users write it: the CSR's
    columns are the face's `item_ids`."""
    rec, exp = faces["rec"], faces["export"]
    assert rec.item_ids == exp.item_ids == faces["items"]
    users = np.array(["u1", "u2", "u7", "u20"])
    col = {item: j for j, item in enumerate(rec.item_ids)}
    rows = [[col[i] for i in faces["has"][u]] for u in users]
    user_items = sp.csr_matrix(
        (
            np.ones(sum(map(len, rows)), np.float32),
            (
                np.repeat(np.arange(len(users)), [len(r) for r in rows]),
                np.concatenate(rows),
            ),
        ),
        shape=(len(users), len(rec.item_ids)),
    )
    ids, scores = rec.recommend(users, user_items, N=7, filter_already_liked_items=True)
    assert ids.shape == scores.shape == (4, 7) and np.all(
        np.diff(scores, axis=1) <= 1e-6
    )
    again, again_scores = exp.recommend(users, user_items, N=7)
    np.testing.assert_array_equal(ids, again)
    np.testing.assert_allclose(scores, again_scores, rtol=1e-4, atol=1e-5)
    # the stored history: the same lists
    np.testing.assert_array_equal(ids, rec.recommend(list(users), N=7).ids)
    with pytest.raises(InputError, match="one row per user"):
        rec.recommend(users, user_items[:2], N=7)


def test_a_new_user_known_by_items_and_a_recalculated_one(faces):
    rec, exp = faces["rec"], faces["export"]
    given = {"visitor": faces["items"][:3], "u4": faces["items"][3:6]}
    api = rec.recommend(["visitor", "u4"], given, N=6, recalculate_user=True)
    # the workspace scores u4 from its stored history plus the given items; the export holds no history, so it
    # is told the union
    told = {
        "visitor": given["visitor"],
        "u4": sorted(set(faces["has"]["u4"]) | set(given["u4"])),
    }
    _same(
        api.to_frame(),
        exp.recommend(["visitor", "u4"], told, N=6, recalculate_user=True).to_frame(),
    )
    assert not set(api.ids[1]) & set(told["u4"])


def test_lists_cut_to_the_candidates_and_the_former_names(faces):
    rec, exp = faces["rec"], faces["export"]
    three = faces["items"][10:13]
    ids, scores = rec.recommend(
        "u6", N=50, items=three, filter_already_liked_items=False
    )
    # N cut to the candidates, as implicit cuts N
    assert sorted(ids) == sorted(three) and len(scores) == 3
    np.testing.assert_array_equal(
        exp.recommend("u6", N=50, items=three, filter_already_liked_items=False).ids,
        ids[None],
    )
    former = rec.recommend("u6", k=50, candidates=three, filter_already_liked=False)
    np.testing.assert_array_equal(former.ids, ids[None])
    with pytest.raises(InputError, match="not both"):
        rec.recommend("u6", N=5, k=6)
    with pytest.raises(TypeError, match="unexpected keyword argument 'topk'"):
        rec.recommend("u6", topk=5)
    with pytest.raises(InputError, match="N .* at least 1"):
        exp.recommend("u6", N=0, filter_already_liked_items=False)
