"""Issue 21 study: how should a cold item enter graphrec's closed-form scoring space?

    OMP_NUM_THREADS=2 python -m benchmarks.cold_candidates [--dataset ml-latest-small|ml-latest-small-kg] [--seeds 1]

Every candidate gives a cold item a vector in the low-rank EASE space of the contract split (k = 610 = rank(X) on
latest-small, so exact EASE; lambda 100), scored by the user's EASE vector x_u V diag(f) — the user side graphrec
serves — among the cold items only, the user's given items excluded. Selected on cold_valid NDCG@20 with the fit on
train, refit on train+valid and scored on cold_test (Recall@20 = hits / min(|truth|, 20), as benchmarks.run).
Content: MiniLM text + the attribute multi-hot (latest-small) or the KG's entity multi-hot alone (latest-small-kg).

  ridge      ridge map from content to the warm items' EASE vectors (graphrec's content map; alpha on cold_valid)
  knn        one propagation step over the content item-item kNN graph: a cold item's vector is the
             similarity^p-weighted mean of its k most similar warm items' vectors (FREEDOM-style frozen graph)
  ridge+pop  the ridge score plus beta times a content-predicted log popularity (both divided by their spread)
Rows (candidate, seed, the selected setting, validation NDCG@20, test Recall/NDCG@20, seconds for the grid) go to
benchmarks/results/cold_candidates.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.candidates import Content, Stage, cold_ridge, cold_vectors, fit_lrease
from benchmarks.run import score
from benchmarks.split import prepare

OUT = Path(__file__).resolve().parent / "results" / "cold_candidates.jsonl"
ALPHAS = (1.0, 3.0, 10.0, 30.0, 100.0)
KNN = [(k, p) for k in (10, 50, 200) for p in (1, 4)]
BETAS = (0.1, 0.25, 0.5, 1.0)


def evaluate(
    stage: Stage,
    user: np.ndarray,
    item: np.ndarray,
    extra: np.ndarray | None = None,
    beta: float = 0.0,
) -> dict[str, float]:
    """Cold-task metrics of user . item (+ beta * extra, each over its spread among the cold candidates)."""
    cand, truth = stage.cold_cand, stage.cold_truth
    users = np.unique(truth[0])
    s = user[users] @ item.T
    s /= max(float(s[:, cand].std()), 1e-12)
    if extra is not None and beta:
        s += beta * extra[None, :] / max(float(extra[cand].std()), 1e-12)
    s[:, ~cand] = -np.inf
    ex = stage.exclude[users].tocoo()
    s[ex.row, ex.col] = -np.inf
    top = np.argsort(-s, axis=1, kind="stable")[:, :20]
    return score(top, users, truth, stage.data.n_users, stage.data.n_items)


def knn_vectors(
    dense: np.ndarray, item: np.ndarray, stage: Stage, k: int, p: float
) -> np.ndarray:
    warm, cold = np.flatnonzero(stage.warm_known), np.flatnonzero(stage.cold_cand)
    sim = np.maximum(dense[cold] @ dense[warm].T, 0.0)
    idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    w = np.take_along_axis(sim, idx, axis=1) ** p
    w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    out = item.copy()
    out[cold] = np.einsum("ck,ckd->cd", w, item[warm][idx])
    return out


def candidates(content: Content, dense: np.ndarray, stage: Stage, item: np.ndarray):
    """(name, setting, item vectors, extra score or None, beta) for every grid point of every candidate."""
    warm, cold = np.flatnonzero(stage.warm_known), np.flatnonzero(stage.cold_cand)
    ridge = {
        a: cold_vectors(content, item, w, mu, cold)
        for a, w, mu in cold_ridge(content, warm, item[warm].astype(np.float64), ALPHAS)
    }
    for a, v in ridge.items():
        yield "ridge", {"alpha": a}, v, None, 0.0
    for k, p in KNN:
        yield "knn", {"k": k, "p": p}, knn_vectors(dense, item, stage, k, p), None, 0.0
    pop = np.log1p(np.asarray(stage.X.sum(axis=0)).ravel())
    for pa, w, mu in cold_ridge(content, warm, pop[warm, None], (1.0, 10.0, 100.0)):
        extra = np.asarray(content.F @ w).ravel() + mu
        for a, v in ridge.items():
            for beta in BETAS:
                yield (
                    "ridge+pop",
                    {"alpha": a, "pop_alpha": pa, "beta": beta},
                    v,
                    extra,
                    beta,
                )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--dataset",
        default="ml-latest-small",
        choices=("ml-latest-small", "ml-latest-small-kg"),
    )
    ap.add_argument("--seeds", default="1")
    a = ap.parse_args(argv)
    for seed in (int(s) for s in a.seeds.split(",")):
        data = prepare(a.dataset, seed)
        content = Content(data, 1.0)
        # without the intercept column
        dense = content.F[:, :-1].toarray().astype(np.float32)
        dense /= np.maximum(np.linalg.norm(dense, axis=1, keepdims=True), 1e-12)
        sel, fin = Stage(data, False), Stage(data, True)
        fits = {}
        for st in (sel, fin):
            *_, (_, user, item) = fit_lrease(st.X, [{"k": 610, "lambda": 100.0}], seed)
            fits[st.final] = (user, item)
        best: dict[str, tuple] = {}
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        for name, setting, item, extra, beta in candidates(
            content, dense, sel, fits[False][1]
        ):
            v = evaluate(sel, fits[False][0], item, extra, beta)["ndcg@20"]
            if v > best.get(name, (-1.0,))[0]:
                best[name] = (v, setting)
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0
            t0 = time.perf_counter()
        for name, (valid, setting) in best.items():
            got = next(
                (item, extra, beta)
                for n, s, item, extra, beta in candidates(
                    content, dense, fin, fits[True][1]
                )
                if n == name and s == setting
            )
            m = evaluate(fin, fits[True][0], *got)
            row = {
                "candidate": name,
                "dataset": a.dataset,
                "seed": seed,
                "selected": setting,
                "valid_ndcg@20": round(valid, 4),
                "recall@20": round(m["recall@20"], 4),
                "ndcg@20": round(m["ndcg@20"], 4),
                "grid_s": round(seconds[name], 1),
                "command": "python -m benchmarks.cold_candidates "
                + " ".join(sys.argv[1:]),
            }
            print(json.dumps(row), flush=True)
            with OUT.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
