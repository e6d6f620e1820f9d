"""The quickstart runs every stage on the synthetic default and leaves a usable workspace."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from graphrec import load_export


def test_quickstart_end_to_end(tmp_path):
    ws = tmp_path / "qs"
    r = subprocess.run([sys.executable, "-m", "cli", "quickstart", "--out", str(ws), "--users", "120", "--items",
                        "300", "--interactions", "4000", "--epochs", "8"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "report:" in r.stdout and "Traceback" not in r.stderr
    for stage in ("dataset", "features", "graph", "model", "eval", "export"):
        assert (ws / stage).is_dir(), stage
    html = (ws / "eval" / "report.html").read_text()
    assert "<img" in html or "data:image/png" in html
    metrics = json.loads((ws / "eval" / "metrics.json").read_text())
    assert {"warm", "cold_item", "cold_user"} <= set(metrics["tasks"])
    # taste-driven synthetic data: content must beat random ranking of cold items by a wide margin
    cold = metrics["tasks"]["cold_item"]
    assert cold["accuracy"]["recall@10"] > 2 * 10 / cold["candidates"]
    exp = load_export(ws / "export")
    ids = json.loads((ws / "dataset" / "ids.json").read_text())
    recs = exp.recommend(ids["users"][0], k=5)
    assert len(recs) == 5
    stages = json.loads((ws / "config.json").read_text())["stages"]
    assert all("quickstart" in rec["command"] for rec in stages.values())
    assert np.isfinite(np.load(ws / "export" / "item_embeddings.npy")).all()
