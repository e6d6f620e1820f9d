"""The quickstart runs every stage on the synthetic default and leaves a usable workspace."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from graphrec import load_export
from graphrec.data.dataset import GIVEN, Dataset


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path):
    ws, exported = tmp_path / "qs" / "workspace", tmp_path / "qs" / "export"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "graphrec",
            "quickstart",
            "--out",
            str(tmp_path / "qs"),
            "--users",
            "120",
            "--items",
            "300",
            "--interactions",
            "4000",
            "--epochs",
            "8",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "report:" in r.stdout and "Traceback" not in r.stderr
    for stage in ("dataset", "features", "graph", "model", "eval"):
        assert (ws / stage).is_dir(), stage
    assert exported.is_dir() and not (ws / "export").exists()
    html = (ws / "eval" / "report.html").read_text()
    assert "<img" in html or "data:image/png" in html
    metrics = json.loads((ws / "eval" / "metrics.json").read_text())
    assert {"warm", "cold_item", "cold_user"} <= set(metrics["tasks"])
    # taste-driven synthetic data: content must beat random ranking of cold items by a wide margin
    cold = metrics["tasks"]["cold_item"]
    assert cold["accuracy"]["recall@10"] > 2 * 10 / cold["candidates"]
    exp = load_export(exported)
    ids = json.loads((ws / "dataset" / "ids.json").read_text())
    recs, best = exp.recommend(ids["users"][0], N=5, filter_already_liked_items=False)
    # the export serves exactly the dot product of the vectors it ships, best first
    user_vecs, item_vecs = exp.user_embeddings, exp.item_embeddings
    assert sorted(exp.manifest.files) == [
        "ids",
        "items",
        "user_fold_in",
        "user_fold_in_terms",
        "users",
    ]
    scores = item_vecs @ user_vecs[0]
    assert recs.tolist() == [
        ids["items"][j] for j in np.argsort(-scores, kind="stable")[:5]
    ]
    assert np.allclose(best, np.sort(scores)[::-1][:5], rtol=1e-5)
    stages = json.loads((ws / "config.json").read_text())["stages"]
    assert all("quickstart" in rec["command"] for rec in stages.values())
    trained = load_file(str(ws / "model" / "embeddings.safetensors"))
    # the scoring space's first block is the trained GNN (user side as trained, times the new-user gnn weight for
    # users with at most `short_history` given items; the item side carries the blend)
    gnn = exp.manifest.blocks["gnn"]
    ranker = json.loads((ws / "model" / "ranker.json").read_text())
    given = Dataset.load(ws).matrix(GIVEN)
    short = np.diff(given.indptr) <= ranker.get("short_history", 0)
    scale = np.where(
        short, ranker["new_user_weights"].get("gnn", 1.0) if short.any() else 1.0, 1.0
    )
    assert list(exp.manifest.blocks)[0] == "gnn"
    np.testing.assert_allclose(
        user_vecs[:, :gnn],
        trained["user"] * scale[:, None].astype(np.float32),
        rtol=1e-6,
    )
    assert user_vecs.shape[1] == item_vecs.shape[1] == exp.manifest.dim > gnn
