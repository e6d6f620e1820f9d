"""`graphrec evaluate`: full-ranking metrics of the hybrid ranker on the held-out test parts, and the report.

Tasks (truth / candidates; every interaction the system was given is excluded from the lists):
    warm       test            / items with training interactions
    cold_item  cold_test       / the cold items (items of cold_valid and cold_test)
    cold_user  cold_user_test  / every item
    overall    all three       / every item
Only test parts are scored; the ranker was fitted on validation parts (nothing is selected on test).

Writes eval/metrics.json, eval/report.md, eval/report.html (plots inlined, also in eval/plots/*.png).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from graphrec.artifacts import read_ranker_info
from graphrec.data.dataset import GIVEN, Dataset
from graphrec.errors import InputError
from graphrec.features import load_features
from graphrec.io import atomic_dir
from graphrec.metrics import (
    activity_buckets,
    coverage,
    hit_matrix,
    intra_list_diversity,
    item_popularity,
    mean_metrics,
    novelty,
    per_user_accuracy,
    popularity_bias,
)
from graphrec.rank import Ranker, ensure_ranker
from graphrec.report import write_report
from graphrec.workspace import Workspace, writes

TASKS = {"warm": (("test",), "warm"), "cold_item": (("cold_test",), "cold"),
         "cold_user": (("cold_user_test",), "all"), "overall": (("test", "cold_test", "cold_user_test"), "all")}


def _content(ws: Workspace) -> tuple[np.ndarray, np.ndarray] | None:
    """Content vectors for intra-list diversity: the first modality in name order with its mask."""
    if not ws.stage_dir("features").is_dir():
        return None

    feats = load_features(ws)
    if not feats:
        return None
    f = feats[sorted(feats)[0]]
    return f.values, f.mask


def evaluate(workspace: Workspace | str | Path, ks: Sequence[int] = (10, 20, 50), ranker: Ranker | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Metrics of every task with held-out interactions: accuracy at each K, beyond-accuracy, activity buckets."""
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise InputError(f"K values must be positive integers, got {ks}")
    ws = Workspace.of(workspace)
    ds = Dataset.load(ws)
    r = ranker if ranker is not None else ensure_ranker(ws, ds, progress=progress)
    history = ds.matrix(GIVEN)
    given = np.asarray(history.sum(axis=1)).ravel().astype(np.int64)
    pop = item_popularity(ds.part("train")["item"].to_numpy(), ds.n_items)
    n_train_users = int(ds.part("train")["user"].nunique())
    content = _content(ws)
    bucket_of, labels = activity_buckets(given)
    cand_sets = {"warm": np.flatnonzero(r.warm), "cold": ds.cold_items(), "all": np.arange(ds.n_items)}
    plot_k = ks[1] if len(ks) > 1 else ks[0]
    out: dict[str, Any] = {"ks": ks, "histogram_k": plot_k, "tasks": {}, "skipped": {}}
    for task, (parts, which) in TASKS.items():
        truth = ds.part(*parts)
        cand = cand_sets[which]
        if len(truth) == 0 or len(cand) == 0:
            out["skipped"][task] = f"no interactions in {'/'.join(parts)}" if len(truth) == 0 else "no candidates"
            continue
        users = np.unique(truth["user"].to_numpy())
        row = np.full(ds.n_users, -1, np.int64)
        row[users] = np.arange(len(users))
        topk, _ = r.topk(users, max(ks), history, cand, progress=progress)
        tu = row[truth["user"].to_numpy()]
        hits = hit_matrix(topk, tu, truth["item"].to_numpy(), ds.n_items)
        per_user = per_user_accuracy(hits, np.bincount(tu, minlength=len(users)), ks)
        res: dict[str, Any] = {"users": int(len(users)), "held_out": int(len(truth)), "candidates": int(len(cand)),
                               "accuracy": mean_metrics(per_user), "beyond": {}, "buckets": {}}
        for k in ks:
            top = topk[:, :k]
            res["beyond"][f"@{k}"] = {
                "coverage": coverage(top, len(cand)), "novelty": novelty(top, pop, n_train_users),
                "diversity": intra_list_diversity(top, *content) if content is not None else None,
                **popularity_bias(top, pop, cand)}
        b = bucket_of[users]
        for i, label in enumerate(labels):
            sel = b == i
            if sel.any():
                res["buckets"][label] = {"users": int(sel.sum()), **mean_metrics(per_user, sel)}
        res["popularity_histogram"] = _popularity_histogram(topk[:, :plot_k], pop, cand)
        out["tasks"][task] = res
    out["bucket_rule"] = "users bucketed by the number of interactions the system was given (train, valid, context)"
    out["ranker"] = {k: v for k, v in read_ranker_info(ws).items()
                     if k in ("weights_warm", "weights_cold", "cold_offset", "validation_ndcg", "fitted_with")}
    return out


def _popularity_histogram(topk: np.ndarray, pop: np.ndarray, cand: np.ndarray) -> dict[str, list]:
    """Shares of recommended items and of candidate items per training-popularity bin (0, 1, 2-3, 4-7, ...)."""
    edges = [0, 1] + [2 ** i for i in range(1, max(2, int(np.ceil(np.log2(pop.max() + 1))) + 1))]
    rec = pop[topk[topk >= 0]]
    share = (lambda x: (np.histogram(x, bins=edges + [np.inf])[0] / max(len(x), 1)).round(6).tolist())
    return {"edges": edges, "recommended": share(rec), "catalogue": share(pop[cand])}


@writes
def run_evaluate(workspace: Workspace | str | Path, ks: Sequence[int] = (10, 20, 50), examples: int = 3,
                 progress: bool = True) -> Path:
    """Evaluate, then write eval/ (metrics.json, report.md, report.html, plots/) atomically and record it."""
    ws = Workspace.of(workspace)
    ds = Dataset.load(ws)
    r = ensure_ranker(ws, ds, progress=progress)
    metrics = evaluate(ws, ks, r, progress)

    with atomic_dir(ws.stage_dir("eval")) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        write_report(tmp, ws, ds, r, metrics, examples)
    ws.record("eval", {"ks": list(metrics["ks"]), "examples": examples},
              inputs={"tasks": sorted(metrics["tasks"]), "ranker": metrics["ranker"]})
    return ws.stage_dir("eval")
