"""`evaluate` and its report; agreement with the outside benchmark protocol on real MovieLens data."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import shared_path
from rec_helpers import fit_ranker, served_workspace

import graphrec
from graphrec.core.io import read_json, write_json, write_tensors
from graphrec.core.workspace import Workspace
from graphrec.data.dataset import GIVEN, TRAINED, Dataset
from graphrec.data.importer import import_files
from graphrec.model.metrics import hit_matrix, per_user_accuracy
from graphrec.stages.evaluate import (
    evaluate,
    evaluate_baselines,
    reproduce_commands,
    run_evaluate,
)
from graphrec.stages.rank import RankSettings, save_ranker
from graphrec.stages.recommend import recommend, write_recommendations


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return served_workspace(tmp_path_factory.mktemp("eval"))


def test_metrics_match_an_independent_count_from_recommend(ws):
    m = evaluate(ws, ks=(5, 10), progress=False)
    assert (
        set(m["tasks"]) == {"warm", "cold_item", "overall"}
        and "cold_user" in m["skipped"]
    )
    ds = Dataset.load(ws)
    # warm candidates: items with training interactions
    warm = np.unique(ds.part("train")["item"].to_numpy())
    for task, parts, cand in (
        ("warm", ("test",), warm),
        ("cold_item", ("cold_test",), ds.cold_items()),
    ):
        truth = ds.part(*parts)
        recs = recommend(
            ws,
            sorted(set(ds.user_ids[truth["user"]])),
            k=10,
            candidates=list(ds.item_ids[cand]),
        )
        t = (
            truth.assign(u=ds.user_ids[truth["user"]], i=ds.item_ids[truth["item"]])
            .groupby("u")["i"]
            .apply(set)
        )
        lists = (
            recs.sort_values(["user_id", "rank"])
            .groupby("user_id")["item_id"]
            .apply(list)
        )
        recall = np.mean(
            [
                len(set(lists.get(u, [])[:10]) & s) / min(len(s), 10)
                for u, s in t.items()
            ]
        )
        assert m["tasks"][task]["accuracy"]["recall@10"] == pytest.approx(recall)
        assert m["tasks"][task]["users"] == len(t)
    b = m["tasks"]["overall"]["buckets"]
    assert sum(v["users"] for v in b.values()) == m["tasks"]["overall"]["users"]
    assert 0 < m["tasks"]["overall"]["beyond"]["@10"]["coverage"] <= 1


def test_report_files(ws):
    features = ws.stage_dir("features") / "text.json"
    meta = read_json(features)
    write_json(features, {**meta, "random_weights": True})
    write_json(
        ws.stage_dir("model") / "history.json",
        [
            {"phase": "select", "epoch": e, "loss": 1 / e, "valid_ndcg@20": 0.1 * e}
            for e in range(1, 4)
        ],
    )
    try:
        d = run_evaluate(ws, ks=(5, 10), progress=False)
    finally:
        write_json(features, meta)
    m = json.loads((d / "metrics.json").read_text())
    assert m["ks"] == [5, 10]
    html = (d / "report.html").read_text()
    md = (d / "report.md").read_text()
    # metric vs K, buckets, popularity, training curves
    assert html.count("data:image/png;base64,") == 4
    assert "RANDOM weights" in html and "WARNING" in md
    for section in (
        "Dataset",
        "Metrics",
        "Example recommendations",
        "Reproduce",
        "cold_item",
    ):
        assert section in md
    assert ws.stage_record("dataset").command in md.split("## Reproduce")[1]
    assert ws.stage_record("eval").settings["ks"] == [5, 10]
    assert sorted(p.name for p in (d / "plots").iterdir()) == [
        "metric_vs_k.png",
        "popularity.png",
        "recall_by_activity.png",
        "training.png",
    ]


def _reject(constant):
    raise ValueError(f"not strict JSON: {constant}")


def test_report_headline_baselines_setup_and_no_nan(ws):
    d = run_evaluate(ws, ks=(10, 20), progress=False)
    # NaN / Infinity refused
    m = json.loads((d / "metrics.json").read_text(), parse_constant=_reject)
    assert m["headline_k"] == 20 and [h["task"] for h in m["headline"]] == list(
        m["tasks"]
    )
    for h in m["headline"]:
        acc = m["tasks"][h["task"]]["accuracy"]
        assert h["graphrec"] == {
            "ndcg": acc["ndcg@20"],
            "recall_full": acc["recall_full@20"],
            "recall": acc["recall@20"],
        }
        # a 95% bootstrap interval over the task's users
        low, high = h["intervals"]["ndcg"]["ours"]
        assert low <= acc["ndcg@20"] <= high and low < high
        if h["best_baseline"] is None:
            assert h["ratio"] == {"ndcg": None, "recall_full": None, "recall": None}
            assert h["intervals"]["ndcg"]["ratio"] is None
            continue
        # paired: the same resampled users for both systems
        low, high = h["intervals"]["ndcg"]["ratio"]
        assert low <= h["ratio"]["ndcg"] <= high
        theirs = m["baselines"][h["best_baseline"]]["tasks"][h["task"]]["accuracy"]
        assert (
            h["baseline"]["ndcg"]
            == theirs["ndcg@20"]
            == max(
                b["tasks"][h["task"]]["accuracy"]["ndcg@20"]
                for b in m["baselines"].values()
                if b["tasks"][h["task"]]["accuracy"] is not None
            )
        )
        assert h["ratio"]["ndcg"] == pytest.approx(acc["ndcg@20"] / theirs["ndcg@20"])
    cold = next(h for h in m["headline"] if h["task"] == "cold_item")
    # the one baseline that ranks items without interactions
    assert cold["best_baseline"] == "content"
    # new items in the lists vs in what they are scored against
    share = m["tasks"]["overall"]["cold_share"]
    assert (
        0 <= share["lists"] <= 1
        and 0 < share["truth"] < 1
        and "warm" not in {t for t in m["tasks"] if "cold_share" in m["tasks"][t]}
    )
    assert m["setup"]["graphrec_version"] == graphrec.__version__
    assert (
        m["setup"]["split"] == Dataset.load(ws).schema.split
        and m["setup"]["evaluated_at"]
    )
    assert m["definitions"]["recall_full"].startswith("hits in the top K / |truth|")
    html = (d / "report.html").read_text()
    md = (d / "report.md").read_text()
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    assert "Headline: NDCG@20 and Recall@20" in text and text.index(
        "Headline"
    ) < text.index("Dataset")
    assert not re.search(r"\bnan\b", text, re.IGNORECASE) and not re.search(
        r"\bnan\b", md, re.IGNORECASE
    )
    # undefined cells say why
    assert "—" in md and "cold items have no interactions" in md
    assert "of the top-20 lists and" in md
    assert '{"' not in md and "{'" not in md  # no JSON or dict dumped into the page
    for section in (
        "Setup",
        "graphrec version",
        "recall_full@20",
        "popularity",
        "EASE",
    ):
        assert section in md
    reproduce = md.split("## Reproduce")[1]
    assert reproduce.count(ws.stage_record("dataset").command) == 1


def test_baselines_rank_the_same_candidates_as_graphrec(ws):
    """Popularity and EASE, recomputed here from their definitions, on warm test users: warm candidates
    (train+valid items), every given interaction excluded, ties to the lower item index."""
    ds = Dataset.load(ws)
    b = evaluate_baselines(ds, ds.warm_items(), ks=(5, 10))
    given, trained = ds.matrix(GIVEN).toarray() > 0, ds.matrix(TRAINED).toarray()
    warm = trained.sum(axis=0) > 0
    test = ds.part("test")
    truth = test.groupby("user")["item"].apply(set)
    lam = b["ease"]["lambda"]
    g = trained.T @ trained + lam * np.eye(ds.n_items)
    p = np.linalg.inv(g)
    ease = np.eye(ds.n_items) - p / np.diag(p)
    scores = {
        "popularity": lambda u: trained.sum(axis=0),
        "ease": lambda u: given[u].astype(float) @ ease,
    }
    for name, score in scores.items():
        ndcg = []
        for u, items in truth.items():
            s = np.where(warm & ~given[u], score(u), -np.inf)
            order = [
                i for i in np.lexsort((np.arange(ds.n_items), -s)) if np.isfinite(s[i])
            ][:10]
            dcg = sum(1 / math.log2(j + 2) for j, i in enumerate(order) if i in items)
            ndcg.append(
                dcg / sum(1 / math.log2(j + 2) for j in range(min(len(items), 10)))
            )
        assert b[name]["tasks"]["warm"]["accuracy"]["ndcg@10"] == pytest.approx(
            np.mean(ndcg)
        ), name
        assert b[name]["tasks"]["cold_item"]["accuracy"] is None
        assert (
            "cold items have no interactions" in b[name]["tasks"]["cold_item"]["note"]
        )
    assert set(b["ease"]["lambda_validation_ndcg"]) and b["ease"][
        "lambda_validation_ndcg"
    ][f"{lam:g}"] == max(b["ease"]["lambda_validation_ndcg"].values())


def test_recall_full_is_hits_over_all_held_out_items():
    # user 0: truth {1, 4, 7}, list [1, 2, 4, 5]; user 1: truth {0, 2, 3, 5, 6}, list [0, 2, 8, 9]
    hits = hit_matrix(
        np.array([[1, 2, 4, 5], [0, 2, 8, 9]]),
        np.array([0, 0, 0, 1, 1, 1, 1, 1]),
        np.array([1, 4, 7, 0, 2, 3, 5, 6]),
        10,
    )
    m = per_user_accuracy(hits, np.array([3, 5]), [2, 4])
    # hits / min(|truth|, K)
    assert m["recall@2"].tolist() == pytest.approx([1 / 2, 2 / 2])
    # hits / |truth|
    assert m["recall_full@2"].tolist() == pytest.approx([1 / 3, 2 / 5])
    assert m["recall@4"].tolist() == pytest.approx([2 / 3, 2 / 4])
    assert m["recall_full@4"].tolist() == pytest.approx([2 / 3, 2 / 5])


def test_reproduce_lists_each_command_once_in_pipeline_order(tmp_path):
    ws = graphrec.Workspace(tmp_path / "ws")
    ws.record(
        "dataset",
        {},
        inputs={"made_by": "graphrec data synth --out ws"},
        command="graphrec data split ws",
    )
    ws.record("features", {}, command="graphrec encode ws")
    ws.record("model", {}, command="graphrec train ws")
    ws.record("graph", {}, command="graphrec build ws")
    # an earlier evaluation: not this one
    ws.record("eval", {}, command="graphrec evaluate ws --ks 5")
    cmds = reproduce_commands(ws)
    assert cmds[:4] == [
        "graphrec data synth --out ws",
        "graphrec data split ws",
        "graphrec encode ws",
        "graphrec build ws",
    ]
    assert cmds[4] == "graphrec train ws" and len(cmds) == 6 and "--ks 5" not in cmds[5]
    quick = "graphrec quickstart --out ws"
    for stage in ("dataset", "features", "graph", "model"):
        ws.record(
            stage,
            {},
            inputs={"made_by": quick} if stage == "dataset" else None,
            command=quick,
        )
    assert (
        reproduce_commands(ws).count(quick) == 1 and reproduce_commands(ws)[0] == quick
    )


def test_activity_plot_groups_bars_by_bucket_with_the_legend_outside():
    import matplotlib

    matplotlib.use("Agg")
    from graphrec.stages.report import _activity_plot

    row = lambda r: {"users": 1, "recall@20": r}
    m = {
        "histogram_k": 20,
        "bucket_labels": ["0", "1-5", "6-20", "21-50", "51-200", "201+"],
        "tasks": {
            "warm": {"buckets": {"6-20": row(0.5), "21-50": row(0.4)}},
            "cold_user": {"buckets": {"1-5": row(0.2)}},
            "overall": {
                "buckets": {"1-5": row(0.1), "6-20": row(0.3), "21-50": row(0.2)}
            },
        },
    }
    fig = _activity_plot(m)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1-5", "6-20", "21-50"]
    groups = {
        c.get_label(): [round(p.get_x() + p.get_width() / 2) for p in c.patches]
        for c in ax.containers
    }
    # x = the bucket's position
    assert groups == {
        "warm": [1, 2],
        "cold_user": [0],
        "overall": [0, 1, 2],
    }
    fig.canvas.draw()
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1


@pytest.mark.slow
def test_agrees_with_benchmark_protocol_on_movielens(tmp_path):
    data = shared_path("ml-latest-small")
    protocol = shared_path("..", "contract", "protocol.py")
    split = tmp_path / "split"
    subprocess.run(
        [sys.executable, str(protocol), "split", str(data), str(split), "--seed", "3"],
        check=True,
        capture_output=True,
    )
    ws_path = tmp_path / "ws"
    import_files(
        ws_path,
        **{
            p: str(split / f"{p}.csv")
            for p in ("train", "valid", "test", "cold_valid", "cold_test")
        },
        items=str(split / "items.csv"),
        text_columns=["title"],
        attribute_columns=["genres"],
    )
    ds = Dataset.load(ws_path)
    tr = ds.part("train")
    x = sp.csr_matrix(
        (np.ones(len(tr)), (tr["user"], tr["item"])), shape=(ds.n_users, ds.n_items)
    )
    from scipy.sparse.linalg import svds

    u, s, vt = svds(x, k=16, random_state=0)
    item = (vt.T * np.sqrt(s)).astype(np.float32)
    # cold: random
    item[np.asarray(x.sum(0)).ravel() == 0] = np.random.default_rng(0).normal(
        0, 0.01, (1, 16)
    )
    write_tensors(
        ws_path / "model" / "embeddings.safetensors",
        {"user": (u * np.sqrt(s)).astype(np.float32), "item": item},
    )
    write_json(ws_path / "model" / "model.json", {"scoring": "dot", "dim": 16})
    r = fit_ranker(ws_path, RankSettings(max_fit_users=150))
    # embeddings made here, not by a writer that stages model/
    save_ranker(Workspace(ws_path), r)
    ours = evaluate(ws_path, ks=(20,), ranker=r, progress=False)
    for task, name in (("warm", "warm"), ("cold", "cold_item")):
        recs = recommend(
            ws_path, "all", k=20, candidates=str(split / f"{task}.txt"), ranker=r
        )
        write_recommendations(recs, tmp_path / f"{task}.csv")
        res = subprocess.run(
            [
                sys.executable,
                str(protocol),
                "score",
                str(split),
                task,
                str(tmp_path / f"{task}.csv"),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        theirs = json.loads(res.stdout.strip().splitlines()[-1])
        assert theirs["ignored_rows"] == 0
        assert theirs["users"] == ours["tasks"][name]["users"]
        for metric in ("recall@20", "ndcg@20"):
            assert ours["tasks"][name]["accuracy"][metric] == pytest.approx(
                theirs[metric], abs=1e-4
            )
