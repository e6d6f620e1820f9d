"""Embedding export: bit-exact round trip, manifest checks, pseudonyms, no personal data, faiss index."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from rec_helpers import served_workspace
from train_fixtures import genre_workspace

import graphrec
from graphrec.core.errors import InputError
from graphrec.data.dataset import GIVEN, Dataset
from graphrec.model.export_format import load_export, pseudonymize_id
from graphrec.pipeline.api import Recommender
from graphrec.stages.export import export
from graphrec.stages.rank import RankSettings, load_ranker
from graphrec.stages.recommend import recommend
from graphrec.stages.train import run_train


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return served_workspace(tmp_path_factory.mktemp("export"))


@pytest.mark.parametrize("formats", [("npy",), ("parquet",), ("parquet", "npy")])
def test_round_trip_is_bit_exact(ws, tmp_path, formats):
    d = export(ws, tmp_path / "exp", formats)
    e = graphrec.load_export(d)
    # the export fitted the ranker: its vectors are what ships
    r, ds = (
        load_ranker(ws),
        Dataset.load(ws),
    )
    user, item = (
        r.user_vectors(np.arange(ds.n_users), ds.matrix(GIVEN)),
        r.item_vectors(),
    )
    assert e.user_embeddings.dtype == np.float32
    assert np.array_equal(e.user_embeddings.view(np.uint32), user.view(np.uint32))
    assert np.array_equal(e.item_embeddings.view(np.uint32), item.view(np.uint32))
    ids = json.loads((ws.stage_dir("dataset") / "ids.json").read_text())
    assert e.user_ids == ids["users"] and e.item_ids == ids["items"]
    m = e.manifest
    assert m.scoring == "dot" and m.dim == sum(m.blocks.values()) == item.shape[1]
    assert m.cold_items == 15 and m.user_ids == "external"
    assert int((~e.item_warm).sum()) == 15


def test_serving_the_export_reproduces_graphrec_lists(ws, tmp_path):
    """One scoring space: the export's dot product, given items excluded, is `graphrec recommend`."""
    e = load_export(export(ws, tmp_path / "exp", ["npy"]))
    recs = recommend(ws, "all", k=10)
    ds = Dataset.load(ws)
    given = ds.part(*GIVEN)
    for u in range(ds.n_users):
        seen = ds.item_ids[given["item"][given["user"] == u]]
        ids, scores = e.recommend(
            ds.user_ids[u], user_items={ds.user_ids[u]: seen}, N=10
        )
        mine = recs[recs["user_id"] == ds.user_ids[u]]
        assert ids.tolist() == mine["item_id"].tolist()
        np.testing.assert_allclose(scores, mine["score"], rtol=1e-5, atol=1e-5)
    # cold items in the same lists
    assert recs["item_id"].isin(ds.item_ids[~np.asarray(e.item_warm)]).any()


def test_recommend_and_similar_items_use_exported_data(ws, tmp_path):
    e = load_export(export(ws, tmp_path / "exp", ["npy"]))
    u = e.user_ids.index("u4")
    scores = e.item_embeddings @ e.user_embeddings[u]
    ids, best = e.recommend("u4", N=5, filter_already_liked_items=False)
    assert ids.tolist() == [
        e.item_ids[j] for j in np.argsort(-scores, kind="stable")[:5]
    ]
    assert best[0] == pytest.approx(float(scores.max()))
    skip = ids[:2].tolist()
    # the former names
    assert e.recommend("u4", k=3, exclude=skip).ids[0].tolist() == ids[2:5].tolist()
    # three candidates: three items
    assert e.recommend(
        "u4", user_items={"u4": []}, N=10, items=["m1", "m2", "m3"]
    ).to_frame()["item_id"].tolist() == sorted(
        ["m1", "m2", "m3"], key=lambda i: -scores[e.item_ids.index(i)]
    )
    assert e.recommend("u4", {"u4": []}, N=3, filter_items=ids[:2]).ids.tolist() == [
        ids[2:5].tolist()
    ]
    # what the user has must be said, even if nothing
    with pytest.raises(InputError, match="holds no interactions"):
        e.recommend("u4", N=3)
    # by taste: the list of a user whose only item is m7, collaborative blocks
    sim = e.similar_items("m7", k=4)
    assert e.item_warm[e.item_ids.index("m7")]
    columns = np.concatenate(
        [
            np.full(w, name in ("ease", "lowpass"))
            for name, w in e.manifest.blocks.items()
        ]
    )
    assert columns.any() and not columns.all()
    one_item_user = e.item_embeddings @ np.where(columns, e.user_vector(["m7"]), 0.0)
    one_item_user[e.item_ids.index("m7")] = -np.inf
    assert [i for i, _ in sim] == [
        e.item_ids[j] for j in np.argsort(-one_item_user, kind="stable")[:4]
    ]
    assert sim[0][1] == pytest.approx(float(one_item_user.max()), rel=1e-5)
    with pytest.raises(InputError, match="unknown item id 'nope'"):
        e.similar_items("nope")


def test_pseudonyms_and_no_personal_data(ws, tmp_path):
    d = export(ws, tmp_path / "exp", ["parquet", "npy"], pseudonymize="s3cret")
    e = load_export(d)
    assert e.manifest.user_ids == "hmac-sha256"
    ds = Dataset.load(ws)
    assert set(e.user_ids) == {pseudonymize_id(u, "s3cret") for u in ds.user_ids}
    assert pseudonymize_id("u0", "s3cret") != pseudonymize_id("u0", "other")
    # rows in pseudonym order, not dataset order: row i is not the i-th user of the input files
    assert e.user_ids == sorted(e.user_ids)
    plain = load_export(export(ws, tmp_path / "plain", ["npy"]))
    assert [
        e.user_ids.index(pseudonymize_id(u, "s3cret")) for u in plain.user_ids
    ] != list(range(len(plain.user_ids)))
    for u in ("u0", "u7"):
        np.testing.assert_array_equal(
            e.user_embeddings[e.user_ids.index(pseudonymize_id(u, "s3cret"))],
            plain.user_embeddings[plain.user_ids.index(u)],
        )
    blob = b"".join(p.read_bytes() for p in d.iterdir())
    for raw in (b'"u0"', b'"u12"', b"age_band", b"gender", b"18-24", b"25-34"):
        assert raw not in blob
    assert (
        len(e.recommend(pseudonymize_id("u0", "s3cret"), k=3, exclude=[]).to_frame())
        == 3
    )
    with pytest.raises(InputError, match="pseudonymize_id"):
        e.recommend("u0", exclude=[])


def test_manifest_guards_against_damage(ws, tmp_path):
    d = export(ws, tmp_path / "exp", ["npy"])
    arr = np.load(d / "item_embeddings.npy")
    arr[0, 0] += 1
    np.save(d / "item_embeddings.npy", arr)
    with pytest.raises(
        InputError, match="item_embeddings.npy: file does not match its sha256"
    ):
        load_export(d)
    with pytest.raises(InputError, match="unknown export format 'csv'"):
        export(ws, tmp_path / "x", ["csv"])
    with pytest.raises(InputError, match="non-empty secret salt"):
        export(ws, tmp_path / "x", ["npy"], pseudonymize="")
    assert not (tmp_path / "x").exists()


def test_manifest_cannot_drop_a_checksum_or_point_outside(ws, tmp_path):
    d = export(ws, tmp_path / "exp", ["npy"])
    manifest = json.loads((d / "manifest.json").read_text())
    dropped = {
        **manifest,
        "sha256": {
            k: v for k, v in manifest["sha256"].items() if k != "item_embeddings.npy"
        },
    }
    (d / "manifest.json").write_text(json.dumps(dropped))
    with pytest.raises(
        InputError, match="manifest has no sha256 for 'item_embeddings.npy'"
    ):
        load_export(d)
    outside = {**manifest, "files": {**manifest["files"], "ids": "../ids.json"}}
    (d / "manifest.json").write_text(json.dumps(outside))
    with pytest.raises(
        InputError,
        match="manifest names a file outside the export folder: '../ids.json'",
    ):
        load_export(d)


def test_faiss_index_agrees_with_dot_scores(ws, tmp_path):
    faiss = pytest.importorskip("faiss")
    d = export(ws, tmp_path / "exp", ["npy", "faiss"])
    e = load_export(d)
    index = faiss.read_index(str(d / "items.faiss"))
    assert index.ntotal == len(e.item_ids)
    q = e.user_embeddings[:3]
    _, idx = index.search(q, 5)
    ref = np.argsort(-(q @ e.item_embeddings.T), axis=1, kind="stable")[:, :5]
    assert (idx == ref).mean() > 0.95  # ties aside, the same top items


def test_cli_export(ws, tmp_path):
    from typer.testing import CliRunner

    import graphrec.app.cli as cli

    res = CliRunner().invoke(
        cli.app,
        ["export", str(ws.path), "--out", str(tmp_path / "e"), "--format", "parquet"],
    )
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == [
        "ids.json",
        "items.parquet",
        "manifest.json",
        "user_fold_in.npy",
        "user_fold_in_terms.npy",
        "users.parquet",
    ]


def test_cli_export_reads_the_salt_from_a_file_or_the_environment(ws, tmp_path):
    from typer.testing import CliRunner

    import graphrec.app.cli as cli

    (tmp_path / "salt").write_text("s3cret\n")
    res = CliRunner().invoke(
        cli.app,
        [
            "export",
            str(ws.path),
            "--out",
            str(tmp_path / "e"),
            "--format",
            "npy",
            "--salt-file",
            str(tmp_path / "salt"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert pseudonymize_id("u0", "s3cret") in load_export(tmp_path / "e").user_ids
    res = CliRunner().invoke(
        cli.app,
        ["export", str(ws.path), "--out", str(tmp_path / "f"), "--format", "npy"],
        env={"GRAPHREC_SALT": "fr0m-env"},
    )
    assert res.exit_code == 0, res.output
    assert pseudonymize_id("u0", "fr0m-env") in load_export(tmp_path / "f").user_ids


def test_the_readme_export_snippet_runs_as_written(tmp_path, monkeypatch):
    """The README's "read it without the workspace" block, verbatim, on an export with the ids it names."""
    import re
    from pathlib import Path

    from graphrec.model.export_format import Export, UserFoldIn, write_export

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(
        encoding="utf-8"
    )
    snippet = next(
        b
        for b in re.findall(r"```python\n(.*?)```", readme, re.S)
        if "load_export" in b
    )
    rng = np.random.default_rng(0)
    items = [
        "318",
        "296",
        "2571",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "7",
        "8",
        "9",
        "10",
        "11",
        "12",
    ]
    monkeypatch.chdir(tmp_path)
    fold_in = UserFoldIn(
        rng.normal(size=(len(items), 4)).astype(np.float32),
        np.ones((5, 4), np.float32),
        0,
    )
    write_export(
        "export",
        ["npy"],
        ["42", "7"],
        items,
        np.ones(len(items), bool),
        rng.normal(size=(2, 4)).astype(np.float32),
        rng.normal(size=(len(items), 4)).astype(np.float32),
        False,
        {},
        fold_in,
        {"gnn": 4},
    )
    served = []
    real = Export.recommend
    monkeypatch.setattr(
        Export,
        "recommend",
        lambda self, *a, **kw: served.append(real(self, *a, **kw)) or served[-1],
    )
    scope = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    ids, _ = served[0]
    assert (
        len(served) == 1
        and len(ids) == 10
        and not {"318", "296"} & set(ids)
        and np.array_equal(scope["ids"], ids)
    )
    # terms: mean, scale 1, +1
    np.testing.assert_allclose(scope["v"], fold_in.rows[:3].mean(axis=0) + 1, rtol=1e-6)


def test_export_replaces_only_an_export(ws, tmp_path):
    """--out never replaces what export did not make: the workspace, a stage folder, a file, a folder of other
    things, the root; an empty folder and an earlier export are fine."""
    before = sorted(p.name for p in ws.path.iterdir())
    for target, why in (
        (ws.path, "inside the workspace"),
        (ws.stage_dir("model"), "inside the workspace"),
        (ws.stage_dir("dataset"), "inside the workspace"),
        (ws.path / "exports" / "x", "inside"),
        (Path("/"), "root of the file system"),
    ):
        with pytest.raises(InputError, match=why):
            export(ws, target, ["npy"])
    assert sorted(p.name for p in ws.path.iterdir()) == before
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="exists and is not a folder"):
        export(ws, tmp_path / "notes.txt", ["npy"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="is not a graphrec export"):
        export(ws, tmp_path / "other", ["npy"])
    (tmp_path / "link").symlink_to(tmp_path / "other")
    with pytest.raises(InputError, match="symbolic link"):
        export(ws, tmp_path / "link", ["npy"])
    assert (tmp_path / "notes.txt").read_text() == "mine" and (
        tmp_path / "other" / "keep.txt"
    ).read_text() == "mine"
    (tmp_path / "empty").mkdir()
    export(ws, tmp_path / "empty", ["npy"])
    # an earlier export is replaced whole
    again = export(ws, tmp_path / "empty", ["parquet"])
    assert sorted(p.name for p in again.iterdir()) == [
        "ids.json",
        "items.parquet",
        "manifest.json",
        "user_fold_in.npy",
        "user_fold_in_terms.npy",
        "users.parquet",
    ]


def test_a_killed_exports_temp_folder_goes_with_the_next_export(ws, tmp_path):
    # what atomic_dir leaves when the process is killed mid-write
    left = tmp_path / ".exp.abcd1234.tmp"
    left.mkdir()
    (left / "user_embeddings.npy").write_bytes(b"half")
    export(ws, tmp_path / "exp", ["npy"])
    assert not left.exists() and (tmp_path / "exp" / "manifest.json").is_file()


def documented_user_vector(rows, terms, short_history, items):
    """The formula of docs/export.md ("Users the export does not hold"), as a downstream system writes it."""
    items = np.unique(items)
    h = rows[items].sum(axis=0)
    h = np.where(terms[0] > 0, h / max(len(items), 1), h)
    scale, const = (
        (terms[1], terms[2]) if len(items) > short_history else (terms[3], terms[4])
    )
    return scale * h + const


def test_the_fold_in_gives_every_user_s_vector_when_the_gnn_block_is_not_served(ws):
    r, ds = load_ranker(ws), Dataset.load(ws)
    closed = dataclasses.replace(
        r,
        weights_warm={**r.weights_warm, "gnn": 0.0},
        weights_cold={**r.weights_cold, "gnn": 0.0},
    )
    assert "gnn" not in closed.blocks() and "ease" in closed.blocks()
    history, fold = ds.matrix(GIVEN), closed.fold_in()
    want = closed.user_vectors(np.arange(ds.n_users), history)
    got = np.stack(
        [
            documented_user_vector(
                fold.rows, fold.terms, fold.short_history, history[u].indices
            )
            for u in range(ds.n_users)
        ]
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A trained split workspace whose ranker serves the GNN block (cold users with 2 context items)."""
    ws = genre_workspace(tmp_path_factory.mktemp("fold-in"))
    run_train(
        ws,
        epochs=3,
        dim=8,
        layers=2,
        batch_size=64,
        lr=0.02,
        progress=False,
        ranker=RankSettings(keep_gnn=True),
    )
    return ws


def test_the_export_computes_a_new_user_s_vector_as_graphrec_does(trained, tmp_path):
    """100 users graphrec has never seen, each known by 1-11 items: the export's fold-in (docs/export.md) gives the
    scores and lists `Recommender.recommend(user_items=...)` gives, gnn block included."""
    e = load_export(export(trained, tmp_path / "exp", ("parquet",)))
    assert "gnn" in e.manifest.blocks and e.manifest.fold_in.short_history >= 1
    rng = np.random.default_rng(0)
    histories = {
        f"new{i}": list(rng.choice(e.item_ids, rng.integers(1, 12), replace=False))
        for i in range(100)
    }
    lists = (
        Recommender.load(trained.path)
        .recommend(list(histories), user_items=histories, N=10)
        .to_frame()
    )
    assert lists["user_id"].nunique() == 100
    for uid, got in lists.groupby("user_id"):
        v = e.user_vector(histories[uid])
        at = [e.item_ids.index(i) for i in histories[uid]]
        np.testing.assert_allclose(
            v,
            documented_user_vector(
                e.fold_in.rows,
                e.fold_in.terms,
                e.manifest.fold_in.short_history,
                at,
            ),
            rtol=1e-6,
        )
        scores = e.item_embeddings @ v
        scores[at] = -np.inf  # the user's items are excluded, as graphrec excludes them
        np.testing.assert_allclose(
            np.sort(scores)[::-1][:10], got["score"].to_numpy(), rtol=1e-4, atol=1e-5
        )
        idx = [e.item_ids.index(i) for i in got["item_id"]]
        np.testing.assert_allclose(
            scores[idx], got["score"].to_numpy(), rtol=1e-4, atol=1e-5
        )


def test_similar_items_are_the_same_through_the_api_and_the_export(trained, tmp_path):
    """Similar items by taste (the list of a user whose only item it is): Recommender and the export agree, warm
    and cold query items alike."""
    e = load_export(export(trained, tmp_path / "exp", ("npy",)))
    queries = [e.item_ids[j] for j in np.flatnonzero(e.item_warm)[:3]] + [
        e.item_ids[j] for j in np.flatnonzero(~np.asarray(e.item_warm))[:2]
    ]
    got = Recommender.load(trained.path).similar_items(queries, k=5)
    for q in queries:
        mine = got[got["item_id"] == q]
        exported = e.similar_items(q, k=5)
        assert (
            mine["similar_item_id"].tolist() == [i for i, _ in exported]
            and q not in mine["similar_item_id"].values
        )
        np.testing.assert_allclose(
            mine["score"], [v for _, v in exported], rtol=1e-4, atol=1e-5
        )


def test_an_export_without_a_fold_in_says_so(trained, tmp_path):
    e = load_export(export(trained, tmp_path / "exp", ("npy",)))
    old = dataclasses.replace(e, fold_in=None)
    with pytest.raises(InputError, match="no user fold-in"):
        old.user_vector([e.item_ids[0]])
    with pytest.raises(InputError, match="unknown item id"):
        e.user_vector(["no-such-item"])
