"""`evaluate` and its report; agreement with the outside benchmark protocol on real MovieLens data."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import shared_path
from rec_helpers import make_workspace

from graphrec.data.dataset import Dataset
from graphrec.data.importer import import_files
from graphrec.evaluate import evaluate, run_evaluate
from graphrec.io import read_json, write_json, write_tensors
from graphrec.rank import fit_ranker
from graphrec.recommend import recommend, write_recommendations


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("eval"))


def test_metrics_match_an_independent_count_from_recommend(ws):
    m = evaluate(ws, ks=(5, 10), progress=False)
    assert set(m["tasks"]) == {"warm", "cold_item", "overall"} and "cold_user" in m["skipped"]
    ds = Dataset.load(ws)
    warm = np.unique(ds.part("train")["item"].to_numpy())  # warm candidates: items with training interactions
    for task, parts, cand in (("warm", ("test",), warm), ("cold_item", ("cold_test",), ds.cold_items())):
        truth = ds.part(*parts)
        recs = recommend(ws, sorted(set(ds.user_ids[truth["user"]])), k=10, candidates=list(ds.item_ids[cand]))
        t = truth.assign(u=ds.user_ids[truth["user"]], i=ds.item_ids[truth["item"]]).groupby("u")["i"].apply(set)
        lists = recs.sort_values(["user_id", "rank"]).groupby("user_id")["item_id"].apply(list)
        recall = np.mean([len(set(lists.get(u, [])[:10]) & s) / min(len(s), 10) for u, s in t.items()])
        assert m["tasks"][task]["accuracy"]["recall@10"] == pytest.approx(recall)
        assert m["tasks"][task]["users"] == len(t)
    b = m["tasks"]["overall"]["buckets"]
    assert sum(v["users"] for v in b.values()) == m["tasks"]["overall"]["users"]
    assert 0 < m["tasks"]["overall"]["beyond"]["@10"]["coverage"] <= 1


def test_report_files(ws):
    features = ws.stage_dir("features") / "text.json"
    meta = read_json(features)
    write_json(features, {**meta, "random_weights": True})
    write_json(ws.stage_dir("model") / "history.json",
               [{"phase": "select", "epoch": e, "loss": 1 / e, "valid_ndcg@20": 0.1 * e} for e in range(1, 4)])
    try:
        d = run_evaluate(ws, ks=(5, 10), progress=False)
    finally:
        write_json(features, meta)
    m = json.loads((d / "metrics.json").read_text())
    assert m["ks"] == [5, 10]
    html = (d / "report.html").read_text()
    md = (d / "report.md").read_text()
    assert html.count("data:image/png;base64,") == 4  # metric vs K, buckets, popularity, training curves
    assert "RANDOM weights" in html and "WARNING" in md
    for section in ("Dataset", "Metrics", "Example recommendations", "Reproduce", "cold_item"):
        assert section in md
    assert ws.stage_record("dataset")["command"] in md.split("## Reproduce")[1]
    assert ws.stage_record("eval")["settings"]["ks"] == [5, 10]
    assert sorted(p.name for p in (d / "plots").iterdir()) == ["metric_vs_k.png", "popularity.png",
                                                               "recall_by_activity.png", "training.png"]


def test_agrees_with_benchmark_protocol_on_movielens(tmp_path):
    data = shared_path("ml-latest-small")
    protocol = shared_path("..", "contract", "protocol.py")
    split = tmp_path / "split"
    subprocess.run([sys.executable, str(protocol), "split", str(data), str(split), "--seed", "3"], check=True,
                   capture_output=True)
    ws_path = tmp_path / "ws"
    import_files(ws_path, **{p: str(split / f"{p}.csv") for p in ("train", "valid", "test", "cold_valid", "cold_test")},
                 items=str(split / "items.csv"), text_columns=["title"], attribute_columns=["genres"])
    ds = Dataset.load(ws_path)
    tr = ds.part("train")
    x = sp.csr_matrix((np.ones(len(tr)), (tr["user"], tr["item"])), shape=(ds.n_users, ds.n_items))
    from scipy.sparse.linalg import svds

    u, s, vt = svds(x, k=16, random_state=0)
    item = (vt.T * np.sqrt(s)).astype(np.float32)
    item[np.asarray(x.sum(0)).ravel() == 0] = np.random.default_rng(0).normal(0, 0.01, (1, 16))  # cold: random
    write_tensors(ws_path / "model" / "embeddings.safetensors", {"user": (u * np.sqrt(s)).astype(np.float32), "item": item})
    write_json(ws_path / "model" / "model.json", {"scoring": "dot", "dim": 16})
    r = fit_ranker(ws_path, max_fit_users=150, progress=False)
    ours = evaluate(ws_path, ks=(20,), ranker=r, progress=False)
    for task, name in (("warm", "warm"), ("cold", "cold_item")):
        recs = recommend(ws_path, "all", k=20, candidates=str(split / f"{task}.txt"), ranker=r)
        write_recommendations(recs, tmp_path / f"{task}.csv")
        res = subprocess.run([sys.executable, str(protocol), "score", str(split), task, str(tmp_path / f"{task}.csv")],
                             check=True, capture_output=True, text=True)
        theirs = json.loads(res.stdout.strip().splitlines()[-1])
        assert theirs["ignored_rows"] == 0
        assert theirs["users"] == ours["tasks"][name]["users"]
        for metric in ("recall@20", "ndcg@20"):
            assert ours["tasks"][name]["accuracy"][metric] == pytest.approx(theirs[metric], abs=1e-4)
